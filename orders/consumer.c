#include "consumer.h"

#include "oms/util.h"
#include "service.h"

/* Every event moves an order's status; orders_handle_event maps the exchange to the
 * move (svc: the orders_service). */
static int on_order_event(void *svc, const oms_event_delivery *d, oms_error *err)
{
    return orders_handle_event(svc, d->queue, d->message_id, oms_event_exchanges[d->event], d->body,
                               d->len, err);
}

const oms_service_consumer orders_consumers[] = {
    {.event = OMS_EVENT_ORDER_PAID, .fn = on_order_event},
    {.event = OMS_EVENT_ORDER_COOKING, .fn = on_order_event},
    {.event = OMS_EVENT_ORDER_READY, .fn = on_order_event},
    {.event = OMS_EVENT_ORDER_CANCELLED, .fn = on_order_event},
    {.event = OMS_EVENT_ORDER_REFUNDED, .fn = on_order_event},
};

const size_t orders_nconsumers = OMS_NELEM(orders_consumers);
