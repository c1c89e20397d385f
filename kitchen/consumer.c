#include "consumer.h"

#include "oms/util.h"
#include "service.h"

/* The verdict is the service's status: OMS_OK/OMS_DUPLICATE ack, OMS_INVALID
 * dead-letters, anything else is retried through the retry queue (svc: the
 * kitchen_service). */
static int on_paid(void *svc, const oms_event_delivery *d, oms_error *err)
{
    return kitchen_accept_paid(svc, d->queue, d->message_id, d->body, d->len, err);
}

static int on_refunded(void *svc, const oms_event_delivery *d, oms_error *err)
{
    return kitchen_close_ticket(svc, KITCHEN_WITHDRAWN, d->queue, d->message_id, d->body, d->len,
                                err);
}

static int on_collected(void *svc, const oms_event_delivery *d, oms_error *err)
{
    return kitchen_close_ticket(svc, KITCHEN_COLLECTED, d->queue, d->message_id, d->body, d->len,
                                err);
}

const oms_service_consumer kitchen_consumers[] = {
    {.event = OMS_EVENT_ORDER_PAID, .fn = on_paid},
    {.event = OMS_EVENT_ORDER_REFUNDED, .fn = on_refunded},
    {.event = OMS_EVENT_ORDER_COLLECTED, .fn = on_collected},
};

const size_t kitchen_nconsumers = OMS_NELEM(kitchen_consumers);
