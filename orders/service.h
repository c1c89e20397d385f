/* The orders service's rules: create (reserve, then persist with the outbox event),
 * read, list, status changes through the transition guard with their stock side
 * effects, and the events it consumes. No transport headers: stock is reached
 * through a port of function pointers, so the rules can be tested without servers. */
#ifndef ORDERS_SERVICE_H
#define ORDERS_SERVICE_H

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
    int max_open_orders;            /* unpaid orders a customer may hold; 0: no limit */
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

#endif
