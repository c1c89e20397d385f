/* The stock rules (docs/reservations.md): reserve all-or-nothing, release, commit, expiry, and
 * the original's read calls. Plain structs in and out; transports (gRPC, HTTP) and the
 * expiry thread call these. Each call is one database transaction.
 *
 * Times are passed in (now_ms, wall clock ms since the epoch) rather than read here,
 * so tests can move the clock without sleeping. */
#ifndef STOCK_SERVICE_H
#define STOCK_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "oms/status.h"

struct oms_db;

typedef struct stock_service stock_service;

/* A requested line as it arrives from a client: not yet validated. product_id is
 * borrowed for the call. */
typedef struct stock_req_item {
    const char *product_id;
    long long quantity;
} stock_req_item;

/* Seeds the products table from the catalog file at path when (and only when) the
 * table is empty, in one transaction. *loaded = number of products inserted (0 when
 * the table already had products; the file is not read then). A malformed catalog
 * is OMS_INVALID with the file and entry named in err. */
int stock_load_catalog(struct oms_db *db, const char *path, size_t *loaded, oms_error *err);

/* Creates the service over db (borrowed: must outlive the service). ttl_ms: how long
 * a reservation holds stock before the sweep releases it. Reads the current levels
 * for the gauges, so call it after stock_load_catalog. *out owned by the caller
 * (stock_service_free). */
int stock_service_new(stock_service **out, struct oms_db *db, int64_t ttl_ms, oms_error *err);
void stock_service_free(stock_service *svc);
/* Registers stock_reservations{state} and stock_available{product} as render-time
 * gauges reading atomics the service keeps current. Call once per process; svc must
 * then outlive every metrics render (stop the HTTP server before freeing it). */
void stock_service_register_metrics(stock_service *svc);

/* ReserveItems. Validates order_id and items (merging duplicate product ids), then:
 * if a reservation for order_id exists, returns its items unchanged (idempotent);
 * else takes every item from available into reserved, or nothing at all:
 * OMS_NOTFOUND "product 99 not found", OMS_CONFLICT "product 3 (Chips) is not on
 * sale", OMS_CONFLICT "not enough stock for product 2 (Chocolate): requested 8, 7
 * left" (first failing item), OMS_INVALID naming the field (also for items priced in
 * different currencies: an order is paid in one).
 * On OMS_OK, out (initialised and empty; owned by the caller) holds the reserved items
 * with name, price id, unit price and currency from the catalog. */
int stock_reserve(stock_service *svc, const char *order_id, const stock_req_item *items,
                  size_t nitems, int64_t now_ms, stock_items *out, oms_error *err);
/* ReleaseReservation: reserved -> released (stock back to available); released stays
 * released (OMS_OK); committed is OMS_CONFLICT; unknown order OMS_NOTFOUND. *state
 * gets the state after the call. */
int stock_release(stock_service *svc, const char *order_id, int64_t now_ms, stock_res_state *state,
                  oms_error *err);
/* CommitReservation: reserved -> committed (reserved -> sold); committed stays
 * committed (OMS_OK); released (cancelled or expired) is final: OMS_CONFLICT, nothing
 * taken (the caller refunds the payment); unknown OMS_NOTFOUND. Release and commit of
 * one order are serialised here, so exactly one of a racing cancel and payment wins. */
int stock_commit(stock_service *svc, const char *order_id, int64_t now_ms, stock_res_state *state,
                 oms_error *err);
/* Releases every reservation still reserved with expires_at <= now_ms (at most 500
 * per call, the rest next time), in one transaction, logging each order id; also
 * refreshes the stock_available gauges. *released (optional) gets the count. */
int stock_expire_due(stock_service *svc, int64_t now_ms, size_t *released, oms_error *err);

/* CheckIfItemsAreInStock (original semantics): *in_stock = 0 when a product is
 * unknown, off sale or has less available than requested; when 1, out (initialised and empty;
 * owned by the caller) holds the requested items (merged) with catalog data filled
 * and quantity = requested quantity. OMS_INVALID for malformed items. */
int stock_check(stock_service *svc, const stock_req_item *items, size_t nitems, int *in_stock,
                stock_items *out, oms_error *err);
/* GetItems: for each known id (unknown and repeated ids skipped) an item with catalog
 * data, quantity = available and the levels (quantity and available 0 for a product
 * off sale: not in stock). At most STOCK_MAX_GET_IDS ids. out as
 * above. */
#define STOCK_MAX_GET_IDS 1000
int stock_get_items(stock_service *svc, const char *const *ids, size_t nids, stock_items *out,
                    oms_error *err);
/* ListItems (the storefront's menu): every product on sale, in catalog order,
 * quantity = available. */
int stock_list_items(stock_service *svc, stock_items *out, oms_error *err);

/* ---- back office (staff) ---------------------------------------------------------
 * Every change names the member of staff and writes one stock_audit row in the same
 * transaction as the change; a refused change writes nothing. */

/* Bounds of a staff change; the gateway checks the same numbers before narrowing
 * JSON numbers to the proto's int32. */
#define STOCK_PRICE_MIN 1LL
#define STOCK_PRICE_MAX 100000000LL
#define STOCK_NAME_MAX_CHARS 80
#define STOCK_REASON_MAX_CHARS 200
#define STOCK_ADJUST_MAX 1000000LL
/* The count on hand a product may reach by restocking (well inside int32). */
#define STOCK_ON_HAND_MAX 1000000000LL
#define STOCK_AUDIT_LIMIT_DEFAULT 50
#define STOCK_AUDIT_LIMIT_MAX 200

/* ListProducts and GET /stock: every product, on sale or not, in catalog order, with
 * its levels; quantity = available. out initialised and empty; owned by the caller. */
int stock_list_products(stock_service *svc, stock_items *out, oms_error *err);

/* PutProduct's input: the fields named in `fields` ("name", "unitPrice", "currency",
 * "priceID", "onSale") are taken from the struct, the others ignored. Strings
 * borrowed for the call. */
typedef struct stock_product_change {
    const char *product_id;
    const char *name;
    const char *price_id;
    const char *currency;
    long long unit_price;
    int on_sale;
    const char *const *fields;
    size_t nfields;
} stock_product_change;

/* PutProduct. A new product_id creates the product (name, unitPrice and currency
 * named; priceID defaults to "price_<id>", onSale to true; available 0; listed last)
 * and is audited as "product.create"; an existing one gets the named fields changed
 * ("product.update", audited only when something changed). A price change affects
 * new reservations only: reservations keep the price they were made at. OMS_INVALID
 * naming the field for bad input (unknown field name, name not 1..80 characters of
 * UTF-8 text, unitPrice outside 1..100000000, currency not a known ISO 4217 code,
 * priceID or productID not an id, staff empty), nothing changed. On OMS_OK, out
 * (initialised and empty; owned by the caller) holds the product as stored, and
 * *created (optional) says whether it was created. */
int stock_put_product(stock_service *svc, const char *staff, const stock_product_change *c,
                      int64_t now_ms, stock_items *out, int *created, oms_error *err);

/* AdjustStock's input (strings borrowed). is_set = 0: available += delta
 * (-1000000..1000000, not 0); is_set = 1: the count on hand (available + reserved)
 * becomes set (0..1000000). */
typedef struct stock_adjustment {
    const char *product_id;
    long long delta;
    long long set;
    int is_set;
    const char *reason; /* required: 1..200 characters, no control characters */
} stock_adjustment;

/* AdjustStock, audited as "stock.adjust". Never below what is reserved:
 * OMS_CONFLICT "cannot set Chocolate to 2: 3 are reserved" or "cannot take 5 of
 * Chocolate: 3 are free (2 reserved)"; unknown product OMS_NOTFOUND; bad input
 * OMS_INVALID naming the field. out as for stock_put_product. */
int stock_adjust(stock_service *svc, const char *staff, const stock_adjustment *a, int64_t now_ms,
                 stock_items *out, oms_error *err);

/* ListAudit: entries with at_ms < before_ms (0: no bound), newest first; limit
 * 1..200, 0 meaning 50. out initialised and empty; owned by the caller. */
int stock_list_audit(stock_service *svc, int64_t before_ms, long long limit, stock_audit_list *out,
                     oms_error *err);

#endif
