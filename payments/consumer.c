#include "consumer.h"

#include "oms/util.h"
#include "service.h"

/* svc: the payments_service; the queue is the inbox consumer name. */
static int on_created(void *svc, const oms_event_delivery *d, oms_error *err)
{
    return payments_handle_order_created(svc, d->queue, d->message_id, d->body, d->len, err);
}

static int on_cancelled(void *svc, const oms_event_delivery *d, oms_error *err)
{
    return payments_handle_order_cancelled(svc, d->queue, d->message_id, d->body, d->len, err);
}

static int on_refunded(void *svc, const oms_event_delivery *d, oms_error *err)
{
    return payments_handle_order_refunded(svc, d->queue, d->message_id, d->body, d->len, err);
}

const oms_service_consumer payments_consumers[] = {
    {.event = OMS_EVENT_ORDER_CREATED, .fn = on_created},
    {.event = OMS_EVENT_ORDER_CANCELLED, .fn = on_cancelled},
    {.event = OMS_EVENT_ORDER_REFUNDED, .fn = on_refunded},
};

const size_t payments_nconsumers = OMS_NELEM(payments_consumers);
