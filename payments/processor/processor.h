/* Payment processors: where a checkout session is opened for an order. A const
 * vtable per backend (curl's vtls style), chosen once at start from
 * PAYMENT_PROCESSOR; the rest of payments never asks which one it has. */
#ifndef PAYMENTS_PROCESSOR_H
#define PAYMENTS_PROCESSOR_H

#include "oms/order.h"
#include "oms/status.h"

/* Settings every backend may need; strings borrowed from the service's config and
 * valid for the process's life. */
typedef struct payments_processor_config {
    const char *gateway_url; /* GATEWAY_HTTP_ADDR: success/cancel pages */
    const char *public_url;  /* PAYMENTS_PUBLIC_URL: local checkout links */
    const char *stripe_key;  /* STRIPE_KEY (secret: never logged) */
    const char *stripe_api;  /* STRIPE_API_BASE */
} payments_processor_config;

/* Money going back for an order's completed payment. Strings borrowed for the call. */
typedef struct payments_refund_req {
    const char *order_id;
    const char *session_id;
    const char *payment_intent; /* the completed session's payment_intent */
    long long amount;           /* minor units, the whole payment */
    const char *currency;
    const char *reason; /* ours: order_cancelled, amount_mismatch, stock_unavailable, staff */
} payments_refund_req;

#define PAYMENTS_REFUND_ID_MAX 255

#define PAYMENTS_SESSION_ID_MAX 255

/* A session the processor opened. url is heap (owned by the struct;
 * payments_session_free releases it). */
typedef struct payments_session {
    char id[PAYMENTS_SESSION_ID_MAX + 1];
    char *url;
} payments_session;

void payments_session_free(payments_session *s);

typedef struct payment_processor {
    const char *name;
    /* Process-wide set-up before any other call (NULL: nothing to do). */
    int (*init)(const payments_processor_config *cfg, oms_error *err);
    void (*cleanup)(void);
    /* Opens a checkout session for o (its items, total, ids). Must be idempotent per
     * order where the backend allows it (Stripe: Idempotency-Key). On OMS_OK out is
     * filled (caller frees with payments_session_free). OMS_AGAIN: transient (rate
     * limit, 5xx, network) -- retry later; OMS_ERR: refused (retried, then
     * dead-lettered); both with a message in err. expires_at_s (unix seconds) is the
     * checkout deadline: after it the session cannot be paid (Stripe: expires_at). */
    int (*create_session)(const payments_processor_config *cfg, const oms_order *o,
                          long long expires_at_s, payments_session *out, oms_error *err);
    /* Closes an open session at the backend so it can no longer be paid (order
     * cancelled). NULL: the backend keeps no state of its own (local: the checkout page
     * reads our database). OMS_OK also when the backend says the session is no longer
     * open; OMS_AGAIN: transient, retry; OMS_ERR: refused (bad key). */
    int (*expire_session)(const payments_processor_config *cfg, const char *session_id,
                          const char *order_id, oms_error *err);
    /* Returns r's payment to the customer. Idempotent per order (Stripe:
     * Idempotency-Key), so a retry never refunds twice; a payment already refunded is
     * OMS_OK. On OMS_OK refund_id (PAYMENTS_REFUND_ID_MAX + 1 bytes) names the refund.
     * OMS_AGAIN: transient, retry; OMS_ERR: refused (logged at error level). */
    int (*refund)(const payments_processor_config *cfg, const payments_refund_req *r,
                  char *refund_id, oms_error *err);
} payment_processor;

extern const payment_processor payments_processor_local;
extern const payment_processor payments_processor_stripe;

/* The backend called name ("local", "stripe"), or NULL. */
const payment_processor *payments_processor_find(const char *name);

#endif
