/* Persistence of orders and their items. Every function runs inside the caller's
 * transaction; SQL lives only here. */
#ifndef ORDERS_STORE_H
#define ORDERS_STORE_H

#include "oms/db.h"
#include "oms/order.h"
#include "service.h" /* the back office's plain structs */

/* Opens the orders database and applies its migrations (orders, outbox, inbox).
 * *db owned by the caller (oms_db_close). */
int orders_store_open(oms_db **db, const char *url, oms_error *err);

/* Inserts o and its items. idem_key may be NULL. OMS_CONFLICT when (customer,
 * idem_key) already exists. */
int orders_store_insert(oms_db_tx *tx, const oms_order *o, const char *idem_key, oms_error *err);
/* Loads an order with its items into out (initialised here; caller frees).
 * OMS_NOTFOUND when absent. */
int orders_store_get(oms_db_tx *tx, const char *order_id, oms_order *out, oms_error *err);
/* Locks the order's row until tx ends (PostgreSQL: concurrent status changes from
 * several consumers or instances then apply one after the other; SQLite already runs
 * one writer at a time). OMS_NOTFOUND when there is no such order. */
int orders_store_lock(oms_db_tx *tx, const char *order_id, oms_order_status *status,
                      oms_error *err);
/* Just the status (no items): OMS_NOTFOUND when absent. */
int orders_store_get_status(oms_db_tx *tx, const char *order_id, oms_order_status *status,
                            oms_error *err);
/* The order created earlier with this customer's idempotency key, or OMS_NOTFOUND. */
int orders_store_find_by_key(oms_db_tx *tx, const char *customer_id, const char *idem_key,
                             oms_order *out, oms_error *err);
/* Sets status (and the payment link when link != NULL) and updated_at. */
int orders_store_set_status(oms_db_tx *tx, const char *order_id, oms_order_status st,
                            const char *link, long long now_ms, oms_error *err);
/* Appends a line to the order's history: it reached status at at_ms because of cause. */
int orders_store_add_history(oms_db_tx *tx, const char *order_id, oms_order_status status,
                             const char *cause, long long at_ms, oms_error *err);
/* *n = orders created at or after since_ms still pending (no payment link yet). */
int orders_store_count_pending(oms_db_tx *tx, long long since_ms, long long *n, oms_error *err);
/* *n = the customer's orders still awaiting payment (pending, waiting_payment). */
int orders_store_count_open(oms_db_tx *tx, const char *customer_id, long long *n, oms_error *err);
/* Up to limit orders of a customer, newest first, strictly older than the cursor
 * (before_ms, before_id) when before_id is non-NULL. *out is a heap array of *n orders
 * (caller frees each with oms_order_free, then the array). */
int orders_store_list(oms_db_tx *tx, const char *customer_id, int limit, long long before_ms,
                      const char *before_id, oms_order **out, size_t *n, oms_error *err);

/* Up to limit orders matching f (status already checked), newest first, strictly
 * older than the cursor (before_ms, before_id) when before_id is non-NULL. *out as
 * orders_store_list. */
int orders_store_staff_list(oms_db_tx *tx, const orders_staff_filter *f, int limit,
                            long long before_ms, const char *before_id, oms_order **out, size_t *n,
                            oms_error *err);
/* The order's history, oldest first: *out heap array of *n (orders_history_free). */
int orders_store_history(oms_db_tx *tx, const char *order_id, orders_history_entry **out, size_t *n,
                         oms_error *err);
/* Appends a (its id ignored; ids are given by the database, increasing). */
int orders_store_add_audit(oms_db_tx *tx, const orders_audit *a, oms_error *err);
/* Up to limit entries with at_ms < before_ms, newest first. *out heap array of *n
 * (orders_audit_free each, then free). */
int orders_store_list_audit(oms_db_tx *tx, long long before_ms, int limit, orders_audit **out,
                            size_t *n, oms_error *err);

/* Money of the orders paid in [start_ms, end_ms) (status OMS_ORDER_PAID: the first
 * time they reached paid, cooking or ready), or refunded then after having been paid
 * (OMS_ORDER_REFUNDED), per currency, the most orders first. *out heap array of *n. */
typedef struct orders_money {
    char currency[8];
    long long orders, amount;
} orders_money;
int orders_store_money(oms_db_tx *tx, oms_order_status status, long long start_ms, long long end_ms,
                       orders_money **out, size_t *n, oms_error *err);
/* per_hour[h] += orders created in [start_ms + h hours, + 1 hour), h 0..23. */
int orders_store_created_per_hour(oms_db_tx *tx, long long start_ms, long long per_hour[24],
                                  oms_error *err);
/* Units per product of the orders paid in [start_ms, end_ms), most sold first. *out
 * heap array of *n (each product_name heap). */
int orders_store_units_paid(oms_db_tx *tx, long long start_ms, long long end_ms, orders_units **out,
                            size_t *n, oms_error *err);
/* Paid -> ready durations (ms), ascending, of the orders paid in [start_ms, end_ms)
 * that reached ready. *out heap array of *n (caller frees). */
int orders_store_paid_to_ready(oms_db_tx *tx, long long start_ms, long long end_ms, long long **out,
                               size_t *n, oms_error *err);

/* Records the order's pickup code and its UTC day (YYYY-MM-DD), unless it has one. */
int orders_store_set_pickup(oms_db_tx *tx, const char *order_id, const char *code, const char *day,
                            oms_error *err);
/* The order with this pickup code on day into order_id (OMS_ID_MAX + 1 bytes), a ready
 * one first; OMS_NOTFOUND when none. */
int orders_store_find_by_pickup(oms_db_tx *tx, const char *code, const char *day, char *order_id,
                                oms_error *err);

#endif
