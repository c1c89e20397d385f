#include "consumer.h"

#include "oms/events.h"
#include "oms/log.h"

/* The consumer's verdict is the service's status: OMS_OK/OMS_DUPLICATE ack,
 * OMS_INVALID dead-letters, anything else is retried through the retry queue. */
static int on_paid(const oms_amqp_delivery *d, void *ud)
{
    kitchen_service *svc = ud;
    oms_error err;
    oms_error_clear(&err);
    int rc = kitchen_accept_paid(svc, KITCHEN_PAID_QUEUE, d->message_id, d->body, d->len, &err);
    if (rc == OMS_INVALID)
        oms_log_warn("order.paid rejected", "message_id", d->message_id, "error", err.msg);
    else if (rc != OMS_OK && rc != OMS_DUPLICATE)
        oms_log_warn("order.paid not applied; will retry", "message_id", d->message_id, "error",
                     err.msg);
    return rc;
}

int kitchen_consumer_start(oms_amqp_consumer **out, const oms_amqp_config *amqp,
                           const kitchen_consumer_config *kc, kitchen_service *svc, oms_error *err)
{
    /* Copied by oms_amqp_consumer_start (names included), so a stack struct is fine. */
    oms_amqp_consumer_config cc = {
        .queue = KITCHEN_PAID_QUEUE,
        .exchanges = &oms_event_exchanges[OMS_EVENT_ORDER_PAID],
        .nexchanges = 1,
        .prefetch = kc->prefetch > 0 ? kc->prefetch : 16,
        .max_retries = kc->max_retries,
        .retry_delay_ms = kc->retry_delay_ms,
        .workers = kc->workers,
        .fn = on_paid,
        .ud = svc,
    };
    return oms_amqp_consumer_start(out, amqp, &cc, err);
}
