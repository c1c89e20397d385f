/* Persistence of checkout sessions. Every function runs inside the caller's
 * transaction; SQL lives only here. */
#ifndef PAYMENTS_STORE_H
#define PAYMENTS_STORE_H

#include "oms/db.h"
#include "oms/order.h"

/* XX(NAME, "column value"). open is the only state that can still be paid; refunded
 * (the payment went back) can follow any other and is final. */
#define PAYMENTS_SESSION_STATUS_MAP(XX)                                                            \
    XX(OPEN, "open")                                                                               \
    XX(PAID, "paid")                                                                               \
    XX(EXPIRED, "expired")                                                                         \
    XX(FAILED, "failed")                                                                           \
    XX(CANCELLED, "cancelled")                                                                     \
    XX(REFUNDED, "refunded")

typedef enum {
#define PAYMENTS_SESSION_ENUM(name, str) PAYMENTS_SESSION_##name,
    PAYMENTS_SESSION_STATUS_MAP(PAYMENTS_SESSION_ENUM)
#undef PAYMENTS_SESSION_ENUM
} payments_session_status;

const char *payments_session_status_str(payments_session_status s);

/* A stored session. Heap strings owned by the struct (payments_row_free). */
typedef struct payments_row {
    char *session_id;
    char *order_id;
    char *customer_id;
    payments_session_status status;
    char *url;
    long long amount;
    char *currency;
    char *order_json; /* the order as received in order.created */
    long long created_ms, updated_ms;
    char *traceparent;    /* the order's trace when the session was opened; NULL if none.
                           * The webhook continues it, so paying joins the order's trace. */
    long long expires_ms; /* the checkout deadline; 0 for sessions older than the column */
    char *payment_intent; /* set when a payment completed (pi_...); NULL before */
} payments_row;

void payments_row_free(payments_row *r);

/* Opens the payments database with its migrations (sessions, outbox, inbox). *db is
 * owned by the caller (oms_db_close). */
int payments_store_open(oms_db **db, const char *url, oms_error *err);
/* Inserts a new open session. OMS_CONFLICT when the order (or id) already has one. */
int payments_store_insert(oms_db_tx *tx, const payments_row *r, oms_error *err);
/* Loads into out (zeroed here; caller frees). OMS_NOTFOUND when absent. */
int payments_store_get(oms_db_tx *tx, const char *session_id, payments_row *out, oms_error *err);
int payments_store_get_by_order(oms_db_tx *tx, const char *order_id, payments_row *out,
                                oms_error *err);
/* Moves an open session to st; *changed = 0 when it was not open (or absent). */
int payments_store_close(oms_db_tx *tx, const char *session_id, payments_session_status st,
                         long long now_ms, int *changed, oms_error *err);
/* Same, by order id (the order.cancelled consumer). */
int payments_store_close_by_order(oms_db_tx *tx, const char *order_id, payments_session_status st,
                                  long long now_ms, int *changed, oms_error *err);
/* Open -> paid with the payment's intent; *changed = 0 when it was not open. */
int payments_store_mark_paid(oms_db_tx *tx, const char *session_id, const char *payment_intent,
                             long long now_ms, int *changed, oms_error *err);
/* Gives the session a pickup code unique within the UTC day of now_ms (4 symbols, 5
 * or 6 on a crowded day) into code (>= OMS_PICKUP_CODE_MAX + 1 bytes). */
int payments_store_assign_pickup(oms_db_tx *tx, const char *session_id, long long now_ms,
                                 char *code, oms_error *err);
/* Any status but refunded -> refunded; payment_intent kept when NULL. *changed = 0 when
 * it was refunded already. */
int payments_store_mark_refunded(oms_db_tx *tx, const char *session_id, const char *payment_intent,
                                 long long now_ms, int *changed, oms_error *err);
/* Up to max open sessions whose deadline is at or before now_ms, oldest first: their
 * order ids into ids (each PAYMENTS_ORDER_ID_SIZE bytes), count in *n. */
#define PAYMENTS_ORDER_ID_SIZE (OMS_ID_MAX + 1)
int payments_store_list_due(oms_db_tx *tx, long long now_ms, char (*ids)[PAYMENTS_ORDER_ID_SIZE],
                            size_t max, size_t *n, oms_error *err);

/* A refund made for an order (at most one per order: a payment is refunded whole). */
typedef struct payments_refund_row {
    const char *order_id, *session_id, *refund_id, *reason, *currency;
    long long amount, created_ms;
} payments_refund_row;
/* Records a refund; OMS_CONFLICT when the order has one already. */
int payments_store_refund_insert(oms_db_tx *tx, const payments_refund_row *r, oms_error *err);
/* *found = 1 when the order has a recorded refund. */
int payments_store_refund_exists(oms_db_tx *tx, const char *order_id, int *found, oms_error *err);

#endif
