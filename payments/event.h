/* Stripe events as payments reads them (the fields it needs from a verified webhook
 * body) and writes them (the local processor's events, in Stripe's exact shape). */
#ifndef PAYMENTS_EVENT_H
#define PAYMENTS_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "oms/order.h"
#include "oms/status.h"

typedef struct payments_event {
    char id[256];                     /* evt_... (required) */
    char type[128];                   /* checkout.session.completed ... (required) */
    char object_id[256];              /* data.object.id, "" when absent */
    char order_id[OMS_ID_MAX + 1];    /* data.object.metadata.orderID, "" when absent */
    char customer_id[OMS_ID_MAX + 1]; /* data.object.metadata.customerID, "" when absent */
    char payment_status[32];          /* data.object.payment_status, "" when absent */
    char payment_intent[256];         /* data.object.payment_intent (pi_...), "" when absent */
    char currency[8];                 /* data.object.currency, "" when absent */
    long long amount_total;           /* data.object.amount_total in minor units */
    int has_amount;                   /* amount_total was present (an integer) */
} payments_event;

/* Parses body[0..len). OMS_INVALID with a message naming the field when the JSON is
 * malformed, a required field is missing, or a field has the wrong type or size. */
int payments_event_parse(const char *body, size_t len, payments_event *out, oms_error *err);

/* What the local checkout page produces. */
typedef struct payments_local_event {
    const char *type;           /* checkout.session.completed / checkout.session.expired */
    const char *session_status; /* "complete" / "expired" */
    const char *payment_status; /* "paid" / "unpaid" */
    const char *session_id;
    const char *session_url;
    const char *success_url;
    const char *order_id;
    const char *customer_id;
    long long amount;
    const char *currency;
    const char *payment_intent; /* "pi_local_<session>" when paid, NULL otherwise */
    int64_t created;            /* unix seconds */
} payments_local_event;

/* A Stripe-shaped event JSON (id "evt_local_<hex>", object "event", api_version,
 * created, livemode false, type, data.object as a checkout.session). Heap string
 * (caller frees), or NULL when no id could be generated. */
char *payments_event_build_local(const payments_local_event *e);

#endif
