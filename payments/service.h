/* The payments service's rules: a checkout session per order (order.created), closing
 * it when the order is cancelled (order.cancelled), the Stripe webhook that turns a
 * verified checkout event into order.paid / order.cancelled (outbox, one transaction
 * with the session change and the inbox claim), and the local checkout's Pay/Cancel.
 * No transport headers: orders is reached through a port of function pointers, the
 * processor through its vtable, so the rules can be tested without servers. */
#ifndef PAYMENTS_SERVICE_H
#define PAYMENTS_SERVICE_H

#include <stddef.h>

#include "oms/db.h"
#include "oms/order.h"
#include "processor/processor.h"
#include "store.h"

typedef struct payments_orders_port {
    /* OrderService.UpdateOrder(orderID, status waiting_payment, PaymentLink link).
     * OMS_CONFLICT: the order has moved on (cancelled, already paid). */
    int (*set_waiting_payment)(void *ud, const char *order_id, const char *link, oms_error *err);
    void *ud;
} payments_orders_port;

/* The stock calls payments makes itself: stock decides the race between a payment and
 * a cancel or deadline (a released reservation cannot be committed, a committed one
 * cannot be released), so the side that asks first wins and the other adapts.
 * OMS_CONFLICT: the other side won; OMS_NOTFOUND: no reservation; other: retry. */
typedef struct payments_stock_port {
    int (*commit)(void *ud, const char *order_id, oms_error *err);
    int (*release)(void *ud, const char *order_id, oms_error *err);
    void *ud;
} payments_stock_port;

typedef struct payments_service {
    oms_db *db;                            /* borrowed */
    const payment_processor *processor;    /* chosen at start */
    const payments_processor_config *pcfg; /* borrowed */
    payments_orders_port orders;
    payments_stock_port stock;
    long long checkout_ttl_ms;       /* CHECKOUT_TTL: a session's deadline after it opens */
    const char *webhook_secret;      /* STRIPE_WEBHOOK_SECRET (never logged) */
    const char *gateway_url;         /* GATEWAY_HTTP_ADDR */
    void (*outbox_notify)(void *ud); /* wakes the relay after a commit; may be NULL */
    void *outbox_ud;
} payments_service;

/* The inbox consumer name of webhook events. */
#define PAYMENTS_WEBHOOK_CONSUMER "stripe.webhook"

/* order.created: get-or-create the order's session, tell orders the payment link,
 * then record the message in the inbox. OMS_OK/OMS_DUPLICATE: ack. OMS_INVALID:
 * unparseable (dead-letter). Other: retry later. */
int payments_handle_order_created(payments_service *s, const char *queue, const char *message_id,
                                  const char *body, size_t len, oms_error *err);
/* order.cancelled: closes the order's open session so it can no longer be paid
 * (status payment_failed -> failed, otherwise cancelled). Unknown orders are ignored. */
int payments_handle_order_cancelled(payments_service *s, const char *queue, const char *message_id,
                                    const char *body, size_t len, oms_error *err);

/* order.refunded: returns the order's payment through the processor (once per order:
 * the refunds table and the processor's idempotency key), records it and counts it in
 * payments_refunds_total{reason}. An order without a recorded payment is acknowledged
 * with a warning. OMS_AGAIN: the processor is unreachable (retried through the queue);
 * OMS_ERR: refused (logged at error level; retried, then dead-lettered). */
int payments_handle_order_refunded(payments_service *s, const char *queue, const char *message_id,
                                   const char *body, size_t len, oms_error *err);

/* The checkout deadline: closes every open session whose deadline has passed (at most
 * a batch per call) exactly as checkout.session.expired does -- stock released first,
 * the session expired at the processor, then order.cancelled with reason "checkout
 * expired". *closed (optional) gets the count. Safe to run in several instances. */
int payments_expire_due(payments_service *s, size_t *closed, oms_error *err);

/* The webhook: verifies sig_header over body, parses the event and applies it.
 * completed: the amount and currency must match the order's, the session must still be
 * open and the order's stock must commit -- then order.paid; otherwise the payment is
 * refunded (session refunded, order.refunded with the reason). expired/failed: stock
 * released, then order.cancelled. OMS_OK: applied or ignored (200). OMS_DUPLICATE:
 * seen before (200). OMS_INVALID: bad signature or event (400, err says which; nothing
 * changed). OMS_AGAIN/OMS_ERR: database or stock trouble (503: Stripe retries). */
int payments_webhook(payments_service *s, const char *sig_header, const char *body, size_t len,
                     oms_error *err);

/* The stored session for the local checkout page (out zeroed here; caller frees with
 * payments_row_free). OMS_NOTFOUND when unknown. */
int payments_checkout_get(payments_service *s, const char *session_id, payments_row *out,
                          oms_error *err);
/* Local checkout Pay (pay = 1) or Cancel (pay = 0): builds the Stripe-shaped event,
 * signs it and feeds it through payments_webhook. OMS_NOTFOUND: unknown session.
 * OMS_CONFLICT: the session is no longer open (out->status says what it is); a session
 * past its deadline is expired here first, so its Pay is refused. */
int payments_checkout_finish(payments_service *s, const char *session_id, int pay,
                             payments_row *out, oms_error *err);
/* 1 when an open session's deadline has passed at now_ms (the page shows "expired"). */
int payments_session_overdue(const payments_row *row, long long now_ms);

#endif
