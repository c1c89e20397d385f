/* The orders service's rules: create (reserve, then persist with the outbox event),
 * read, list, status changes through the transition guard with their stock side
 * effects, the events it consumes, and the back office's calls (every customer's
 * orders, an order's history, a staff refund with its audit row, the day's figures). No transport
 * headers: stock is reached through a port of function pointers, so the rules can be tested without
 * servers. */
#ifndef ORDERS_SERVICE_H
#define ORDERS_SERVICE_H

#include <stdatomic.h>

#include "oms/db.h"
#include "oms/order.h"

typedef struct orders_stock_port {
    /* Reserves o's items for order_id, all or nothing; on success replaces o's items
     * with the catalog's (names, price ids, unit prices) and sets o->currency. */
    int (*reserve)(void *ud, const char *order_id, oms_order *o, oms_error *err);
    int (*release)(void *ud, const char *order_id, oms_error *err);
    int (*commit)(void *ud, const char *order_id, oms_error *err);
    void *ud;
} orders_stock_port;

typedef struct orders_service {
    oms_db *db; /* borrowed */
    orders_stock_port stock;
    void (*outbox_notify)(void *ud); /* wakes the outbox relay after a commit; may be NULL */
    void *outbox_ud;
    int max_open_orders; /* unpaid orders a customer may hold; 0: no limit */
    /* Orders still waiting for their payment link (the asynchronous side's backlog)
     * past which a new order is refused as an overload; 0: no bound. pending is the
     * last count, kept by orders_pending_tick. */
    long long max_pending;
    atomic_llong pending;
    const char *local_checkout_url; /* PAYMENTS_PUBLIC_URL: the one non-https PaymentLink base */
} orders_service;

/* Creates an order for customer_id from req's items (productID + quantity; merged
 * and validated here too). With idem_key, a second call with the same customer, key
 * and items returns the first order; other items are OMS_KEY_REUSED. A customer
 * holding max_open_orders unpaid orders gets OMS_LIMITED. out is initialised here
 * (caller frees). */
int orders_create(orders_service *s, const char *customer_id, oms_order *req, const char *idem_key,
                  oms_order *out, oms_error *err);
int orders_get(orders_service *s, const char *order_id, oms_order *out, oms_error *err);
/* Counts the orders created in the last ORDERS_PENDING_WINDOW_MS that are still
 * pending into s->pending (and the orders_pending gauge); a ticker calls it. Older
 * ones are stuck, not queued (their event was dead-lettered): they do not count. */
#define ORDERS_PENDING_WINDOW_MS (120 * 1000)
int orders_pending_tick(void *svc, oms_error *err);
/* The original's UpdateOrder: sets the payment link (when link is non-NULL and not
 * "none"; only https: or local_checkout_url/checkout/..., else OMS_INVALID) and moves
 * to status (when status >= 0) through the guard. Moving to the current status is a
 * no-op success; a move the guard forbids is OMS_CONFLICT, and so is paid when the
 * order's stock can no longer be committed. */
int orders_update(orders_service *s, const char *order_id, int status, const char *link,
                  oms_order *out, oms_error *err);
/* Newest first. page_token "" or from a previous call; next_token (>= 96 bytes) gets
 * "" on the last page. *out: heap array (caller frees each order and the array). */
int orders_list(orders_service *s, const char *customer_id, int page_size, const char *page_token,
                oms_order **out, size_t *n, char *next_token, oms_error *err);
/* Customer cancel before payment: releases stock, publishes order.cancelled.
 * OMS_NOTFOUND also when the order belongs to someone else. */
int orders_cancel(orders_service *s, const char *order_id, const char *customer_id, oms_order *out,
                  oms_error *err);
/* Applies an event (exchange order.paid / order.cooking / order.ready /
 * order.cancelled / order.refunded, body = order JSON, its "reason" recorded in the
 * history) once per message id (inbox, consumer = queue). OMS_OK or OMS_DUPLICATE:
 * done (ack). OMS_INVALID: unparseable (dead-letter). Other: retry later. A move
 * backwards is logged and acknowledged, never applied. order.paid for an order that
 * was cancelled, or whose stock cannot be committed, moves it to refunded and
 * publishes order.refunded (payments returns the money). */
int orders_handle_event(orders_service *s, const char *queue, const char *message_id,
                        const char *exchange, const char *body, size_t len, oms_error *err);

/* ---- back office (staff) -------------------------------------------------------- */

/* Filters of orders_staff_list; "" / 0 / -1 mean "any". */
typedef struct orders_staff_filter {
    const char *status;      /* a status name ("ready for pick-up"); "" any */
    const char *customer_id; /* "" any */
    const char *order_id;    /* "" any */
    long long since_ms;      /* created_at >= since_ms; 0 no bound */
    long long until_ms;      /* created_at < until_ms; 0 no bound */
} orders_staff_filter;

/* One line of an order's history: it reached status at at_ms because of cause. */
typedef struct orders_history_entry {
    oms_order_status status;
    long long at_ms;
    char *cause; /* heap */
} orders_history_entry;

/* One staff change, recorded in the same transaction as the change. */
typedef struct orders_audit {
    long long id; /* set by the store, increasing */
    long long at_ms;
    char *staff, *action, *subject; /* heap */
    char *before, *after;           /* heap; JSON objects, before "" when created */
    char *reason;                   /* heap */
} orders_audit;

void orders_audit_free(orders_audit *a);
void orders_history_free(orders_history_entry *h, size_t n); /* entries and the array */

/* Units of one product sold (paid) in the day. */
typedef struct orders_units {
    char product_id[OMS_ID_MAX + 1];
    char *product_name; /* heap */
    long long quantity;
} orders_units;

/* One shop day's figures (proto Summary). */
typedef struct orders_summary {
    char day[11];
    long long orders, paid_orders, revenue;
    char currency[8];
    long long refunds, refunded_amount;
    orders_units *units; /* heap array of nunits, most sold first */
    size_t nunits;
    long long paid_to_ready_p50_ms, paid_to_ready_p90_ms;
    long long orders_per_hour[24];
    long long late_tickets;
} orders_summary;

void orders_summary_free(orders_summary *s);

#define ORDERS_REASON_MAX 200
#define ORDERS_AUDIT_MAX_LIMIT 200

/* Every customer's orders matching f, newest first; paging as orders_list (same token
 * scheme, page_size 1..100, 0: 20). Unknown status or a bad id is OMS_INVALID naming
 * the field. *out: heap array (caller frees each order and the array). */
int orders_staff_list(orders_service *s, const orders_staff_filter *f, int page_size,
                      const char *page_token, oms_order **out, size_t *n, char *next_token,
                      oms_error *err);
/* The order (out, initialised here; caller frees) and its history oldest first
 * (*hist heap array, orders_history_free). OMS_NOTFOUND for an unknown order. */
int orders_history(orders_service *s, const char *order_id, oms_order *out,
                   orders_history_entry **hist, size_t *n, oms_error *err);
/* A staff refund: only a paid, cooking or ready order (else OMS_CONFLICT naming its
 * status); an order already refunded is returned unchanged (no second audit row or
 * event). In one transaction: status refunded through the guard, a history row
 * "staff <name>: <reason>", the audit row "order.refund" and the order.refunded event
 * (reason "staff": payments returns the money). reason: 1..200 characters, no control
 * characters. out initialised here (caller frees). */
int orders_refund(orders_service *s, const char *order_id, const char *staff, const char *reason,
                  oms_order *out, oms_error *err);
/* The figures of day ("YYYY-MM-DD", strict) at tz_minutes east of UTC (-840..840).
 * out initialised here (caller frees with orders_summary_free). */
int orders_summary_get(orders_service *s, const char *day, int tz_minutes, orders_summary *out,
                       oms_error *err);
/* Audit entries newest first, at_ms < before_ms (0: no bound); limit 1..200 (0: 50).
 * *out heap array (caller frees each with orders_audit_free, then the array). */
int orders_audit_list(orders_service *s, long long before_ms, int limit, orders_audit **out,
                      size_t *n, oms_error *err);

/* The hand-over: by order id or by today's pickup code (one of them; the code in any
 * case), a ready order becomes collected, with a history line naming staff, an audit
 * row and order.collected in one transaction. Collected already: OMS_OK, the order,
 * nothing new. Another status: OMS_CONFLICT naming it. An unknown code, or another
 * day's: OMS_NOTFOUND. */
int orders_collect(orders_service *s, const char *order_id, const char *pickup_code,
                   const char *staff, oms_order *out, oms_error *err);

#endif
