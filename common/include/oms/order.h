/* The order model shared by gateway, orders, payments and kitchen: statuses and
 * their transitions (one X-macro), the item rules of the HTTP API (limits, merging),
 * and the order's JSON shape (the original's field names plus ours). Plain structs,
 * no transport or storage headers. */
#ifndef OMS_ORDER_H
#define OMS_ORDER_H

#include <stddef.h>

#include "oms/json_out.h"
#include "oms/status.h"

typedef struct json_t json_t;

/* XX(NAME, "wire string", rank). Rank orders the main chain; the side exits
 * (cancelled, payment_failed, refunded) have rank -1. pending, waiting_payment, paid
 * and "ready for pick-up" are the original's exact strings. */
#define OMS_ORDER_STATUS_MAP(XX)                                                                   \
    XX(PENDING, "pending", 0)                                                                      \
    XX(WAITING_PAYMENT, "waiting_payment", 1)                                                      \
    XX(PAID, "paid", 2)                                                                            \
    XX(COOKING, "cooking", 3)                                                                      \
    XX(READY, "ready for pick-up", 4)                                                              \
    XX(COLLECTED, "collected", 5)                                                                  \
    XX(CANCELLED, "cancelled", -1)                                                                 \
    XX(PAYMENT_FAILED, "payment_failed", -1)                                                       \
    XX(REFUNDED, "refunded", -1)

typedef enum {
#define OMS_ORDER_STATUS_ENUM(name, str, rank) OMS_ORDER_##name,
    OMS_ORDER_STATUS_MAP(OMS_ORDER_STATUS_ENUM)
#undef OMS_ORDER_STATUS_ENUM
        OMS_ORDER__COUNT
} oms_order_status;

const char *oms_order_status_str(oms_order_status s);
/* Returns the status for a wire string, or -1 when unknown. */
int oms_order_status_parse(const char *s);
/* 1 when an order in `from` may move to `to`: forward along the main chain (skips
 * allowed: events travel on separate queues and may arrive out of order), or to a
 * side exit from pending/waiting_payment. Never backwards, never out of a terminal
 * status (collected, cancelled, payment_failed, refunded), never to itself; collected
 * only from ready. The one
 * exception is refunded: money can come back from any status but refunded itself (a
 * payment that arrived for a cancelled order, a staff refund of a ready one). */
int oms_order_can_move(oms_order_status from, oms_order_status to);
int oms_order_status_terminal(oms_order_status s);

/* The HTTP API's limits (README "HTTP API"). */
#define OMS_MAX_ITEMS 100
#define OMS_MIN_QUANTITY 1
#define OMS_MAX_QUANTITY 1000
#define OMS_MAX_BODY (64 * 1024)
#define OMS_ID_MAX 64
#define OMS_PICKUP_CODE_MAX 7

/* 1 when s looks like a pickup code: 1..OMS_PICKUP_CODE_MAX of A-Z and 0-9. */
int oms_pickup_code_valid(const char *s);

typedef struct oms_order_item {
    char product_id[OMS_ID_MAX + 1];
    char *product_name; /* heap or NULL */
    char *price_id;     /* heap or NULL */
    int quantity;
    long long unit_price; /* cents */
} oms_order_item;

typedef struct oms_order {
    char order_id[OMS_ID_MAX + 1];
    char customer_id[OMS_ID_MAX + 1];
    oms_order_status status;
    char *payment_link; /* heap or NULL ("none" in JSON when NULL, as the original) */
    char currency[8];   /* "usd" */
    long long total;    /* cents */
    long long created_ms, updated_ms;
    /* Why the order reached its status ("checkout expired", "amount_mismatch"); carried
     * by events only, as "reason", so the consumer can record it. "" when unset. */
    char reason[128];
    /* The short code shown at the counter once paid ("" before): assigned by payments,
     * carried by order.paid and kept by orders. */
    char pickup_code[OMS_PICKUP_CODE_MAX + 1];
    oms_order_item *items; /* heap array of nitems */
    size_t nitems;
} oms_order;

void oms_order_init(oms_order *o);
/* Frees what o owns (items, names, link) and re-initialises it. */
void oms_order_free(oms_order *o);
void oms_order_item_free(oms_order_item *it);
/* Appends a copy of it (strings duplicated). */
void oms_order_add_item(oms_order *o, const oms_order_item *it);
/* Sum of quantity * unit_price; OMS_INVALID on overflow. */
int oms_order_compute_total(const oms_order *o, long long *total, oms_error *err);

/* Parses a create-order body: {"items":[{"productID":"1","quantity":2},...]} or a bare
 * array of items. Validates types, ids, quantity 1..1000, at most 100 distinct items,
 * and merges duplicate productIDs (summing quantities; the sum must stay <= 1000).
 * On success out->items holds the merged items in first-seen order (only product_id
 * and quantity set). Errors are OMS_INVALID with a message naming the field, e.g.
 * "items[2].quantity: must be an integer from 1 to 1000". */
int oms_order_parse_request(const char *body, size_t len, oms_order *out, oms_error *err);
/* Same rules applied to an item list given in C (gRPC callers). Merges in place. */
int oms_order_normalize_items(oms_order *o, oms_error *err);

/* The HTTP/event JSON shape: orderID, customerID, items[{productID, productName,
 * quantity, priceID, unitPrice}], status, PaymentLink, total, currency, createdAt,
 * updatedAt, and reason and pickupCode when set; appended to b as compact JSON text. */
void oms_order_write_json(oms_jbuf *b, const oms_order *o);
/* Parses the JSON shape back (events). Unknown fields ignored; missing required fields
 * (orderID, customerID, status, items) -> OMS_INVALID naming the field. */
int oms_order_from_json(const json_t *j, oms_order *out, oms_error *err);
/* Convenience: to a heap string (caller frees; *len may be NULL) / from a string. */
char *oms_order_to_json_str(const oms_order *o);
char *oms_order_to_json_strn(const oms_order *o, size_t *len);
int oms_order_from_json_str(const char *s, size_t len, oms_order *out, oms_error *err);

#endif
