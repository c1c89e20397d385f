/* The stock service's plain data: products as seen by callers, reservations and
 * their states. No transport or storage headers, so rules, store and handlers can
 * all speak it. */
#ifndef STOCK_MODEL_H
#define STOCK_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "oms/order.h" /* OMS_ID_MAX */

#define STOCK_CURRENCY_MAX 7

/* One product line. Which counters are meaningful depends on the call: quantity is
 * the requested/reserved amount (ReserveItems, CheckIfItemsAreInStock) or the free
 * amount (GetItems, ListItems); available/reserved/sold are the product's levels. */
typedef struct stock_item {
    char product_id[OMS_ID_MAX + 1];
    char *name;     /* heap or NULL; owned by the item */
    char *price_id; /* heap or NULL; owned by the item */
    char currency[STOCK_CURRENCY_MAX + 1];
    long long unit_price; /* cents */
    long long quantity;
    long long available, reserved, sold;
    int on_sale; /* 0: sold out / off the menu (not listed, not reservable) */
} stock_item;

/* A growable array of items; owns them. */
typedef struct stock_items {
    stock_item *v;
    size_t n, cap;
} stock_items;

void stock_items_init(stock_items *l);
/* Frees every item's strings and the array, then re-initialises l. */
void stock_items_free(stock_items *l);
/* Appends a zeroed item and returns it. The pointer is owned by l and valid until the
 * next push or stock_items_free. Aborts on OOM (oms_xrealloc). */
stock_item *stock_items_push(stock_items *l);
/* Replaces the item's name/price id with copies of the arguments (NULL allowed) and
 * copies currency (truncated to STOCK_CURRENCY_MAX). */
void stock_item_set_info(stock_item *it, const char *name, const char *price_id,
                         const char *currency);
/* Bounded copy of a product id (ids are validated before they are stored). */
void stock_item_set_id(stock_item *it, const char *id);

/* XX(NAME, "wire string"): the reservation states and their strings from one list. */
#define STOCK_RES_STATE_MAP(XX)                                                                    \
    XX(RESERVED, "reserved")                                                                       \
    XX(COMMITTED, "committed")                                                                     \
    XX(RELEASED, "released")

typedef enum {
#define STOCK_RES_STATE_ENUM(name, str) STOCK_RES_##name,
    STOCK_RES_STATE_MAP(STOCK_RES_STATE_ENUM)
#undef STOCK_RES_STATE_ENUM
        STOCK_RES__COUNT
} stock_res_state;

const char *stock_res_state_str(stock_res_state s);
/* The state for a wire string, or -1 when unknown. */
int stock_res_state_parse(const char *s);

typedef struct stock_reservation {
    char order_id[OMS_ID_MAX + 1];
    stock_res_state state;
    int64_t created_ms, expires_ms, updated_ms; /* wall clock, ms since the epoch */
    stock_items items;                          /* owned */
} stock_reservation;

void stock_reservation_init(stock_reservation *r);
void stock_reservation_free(stock_reservation *r);

/* One staff change as recorded in stock_audit. before/after are compact JSON objects
 * (before "" for a created product). */
typedef struct stock_audit_entry {
    long long id;
    int64_t at_ms;
    char *staff, *action, *subject, *before, *after, *reason; /* heap; owned by the entry */
} stock_audit_entry;

/* A growable array of audit entries; owns them. */
typedef struct stock_audit_list {
    stock_audit_entry *v;
    size_t n, cap;
} stock_audit_list;

void stock_audit_list_init(stock_audit_list *l);
/* Frees every entry's strings and the array, then re-initialises l. */
void stock_audit_list_free(stock_audit_list *l);
/* Appends a zeroed entry and returns it (owned by l, valid until the next push or
 * free). Aborts on OOM. */
stock_audit_entry *stock_audit_list_push(stock_audit_list *l);

#endif
