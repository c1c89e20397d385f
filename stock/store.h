/* Persistence for stock: the products, reservations and reservation_items tables.
 * All SQL lives here, written once in PostgreSQL's $n style (oms/db.h). Every function
 * runs inside a transaction the caller opened with oms_db_begin, so the rules in
 * service.c decide the transaction boundaries without seeing SQL. */
#ifndef STOCK_STORE_H
#define STOCK_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "oms/status.h"

struct oms_db;
struct oms_db_tx;

/* Opens the database at url and applies the stock migrations. On success *out is
 * owned by the caller (stock_store_close). */
int stock_store_open(struct oms_db **out, const char *url, oms_error *err);
void stock_store_close(struct oms_db *db);

/* ---- products ------------------------------------------------------------------ */

int stock_store_count_products(struct oms_db_tx *tx, long long *n, oms_error *err);
/* Inserts a product (available = it->available, reserved = sold = 0, on_sale =
 * it->on_sale). OMS_CONFLICT when the id exists. */
int stock_store_insert_product(struct oms_db_tx *tx, const stock_item *it, long long position,
                               oms_error *err);
/* *position = one past the last product's position (0 for an empty table): where a
 * new product goes so that it is listed last. */
int stock_store_next_position(struct oms_db_tx *tx, long long *position, oms_error *err);
/* Writes it's catalog data (name, price id, unit price, currency, on_sale; levels are
 * left alone). OMS_NOTFOUND (no message) when the product does not exist. */
int stock_store_update_product(struct oms_db_tx *tx, const stock_item *it, oms_error *err);
/* Fills *out (zeroed by the caller; strings owned by out afterwards) with the product's
 * catalog data and levels; quantity is left alone. OMS_NOTFOUND (no message) when the
 * product does not exist. */
int stock_store_get_product(struct oms_db_tx *tx, const char *id, stock_item *out, oms_error *err);
/* As stock_store_get_product, and on PostgreSQL locks the row until tx ends. */
int stock_store_lock_product(struct oms_db_tx *tx, const char *id, stock_item *out, oms_error *err);
/* Appends every product, in catalog order, to out (owned by the caller). */
int stock_store_list_products(struct oms_db_tx *tx, stock_items *out, oms_error *err);

/* How a quantity moves between a product's counters. Each move is guarded so that a
 * counter can never go below zero even without serialised transactions (PostgreSQL). */
typedef enum {
    STOCK_MOVE_RESERVE, /* available -> reserved */
    STOCK_MOVE_RELEASE, /* reserved -> available */
    STOCK_MOVE_COMMIT,  /* reserved -> sold */
    STOCK_MOVE__COUNT
} stock_move;

/* Moves quantity for product id. OMS_OK when exactly one row changed; OMS_CONFLICT
 * (no message) when the guard refused (not enough in the source counter, or no such
 * product); other codes with a message on database errors. */
int stock_store_move(struct oms_db_tx *tx, stock_move move, const char *id, long long quantity,
                     oms_error *err);

/* Staff changes to the count of a product. */
typedef enum {
    STOCK_LEVEL_ADD,         /* available += n (n may be negative) */
    STOCK_LEVEL_SET_ON_HAND, /* available = n - reserved */
    STOCK_LEVEL__COUNT
} stock_level_op;

/* Applies op with n to product id. OMS_OK when one row changed; OMS_CONFLICT (no
 * message) when available would go below zero or there is no such product. */
int stock_store_set_level(struct oms_db_tx *tx, stock_level_op op, const char *id, long long n,
                          oms_error *err);

/* ---- audit ------------------------------------------------------------------------- */

/* Inserts e (id ignored: the database numbers rows in increasing order). */
int stock_store_insert_audit(struct oms_db_tx *tx, const stock_audit_entry *e, oms_error *err);
/* Appends (to out, owned by the caller) at most limit entries with at_ms < before_ms,
 * newest first. */
int stock_store_list_audit(struct oms_db_tx *tx, int64_t before_ms, long long limit,
                           stock_audit_list *out, oms_error *err);

/* ---- reservations ---------------------------------------------------------------- */

/* Loads the reservation and its items (joined with the products: name, price id,
 * unit price, currency, levels; quantity = reserved quantity; catalog order) into
 * *out (initialised by the caller, owned by it afterwards). OMS_NOTFOUND (no message)
 * when there is none. */
int stock_store_get_reservation(struct oms_db_tx *tx, const char *order_id, stock_reservation *out,
                                oms_error *err);
/* Inserts the reservation row and one reservation_items row per item (product_id,
 * quantity). OMS_CONFLICT when a reservation for the order already exists. */
int stock_store_insert_reservation(struct oms_db_tx *tx, const stock_reservation *r,
                                   oms_error *err);
/* Moves the reservation from state `from` to `to`. OMS_AGAIN when it is no longer in
 * `from` (changed concurrently: only possible without serialised transactions). */
int stock_store_set_state(struct oms_db_tx *tx, const char *order_id, stock_res_state from,
                          stock_res_state to, int64_t now_ms, oms_error *err);

/* A list of order ids; owns the strings. */
typedef struct stock_ids {
    char **v;
    size_t n, cap;
} stock_ids;
void stock_ids_free(stock_ids *ids);

/* Appends (to *out, zero-initialised by the caller) the ids of at most `limit`
 * reserved reservations with expires_at <= now_ms, earliest first. */
int stock_store_due_reservations(struct oms_db_tx *tx, int64_t now_ms, long long limit,
                                 stock_ids *out, oms_error *err);
/* counts[state] = number of reservations in that state. */
int stock_store_count_states(struct oms_db_tx *tx, long long counts[STOCK_RES__COUNT],
                             oms_error *err);

#endif
