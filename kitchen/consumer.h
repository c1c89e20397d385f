/* The order.paid consumer: durable queue kitchen.order.paid bound to the order.paid
 * exchange, with the common library's retry queue and dead-letter queue (docs/amqp.md).
 * Each delivery goes through kitchen_accept_paid. */
#ifndef KITCHEN_CONSUMER_H
#define KITCHEN_CONSUMER_H

#include "oms/amqp.h"
#include "service.h"

#define KITCHEN_PAID_QUEUE "kitchen.order.paid"

typedef struct kitchen_consumer_config {
    int prefetch;       /* unacknowledged deliveries in flight; 0 = 16 */
    int max_retries;    /* MAX_RETRIES */
    int retry_delay_ms; /* RETRY_DELAY_MS */
    int workers;        /* CONSUMER_WORKERS; 0 = 1 */
} kitchen_consumer_config;

/* Starts consuming into svc (borrowed; must outlive the consumer). On OMS_OK *out is
 * owned by the caller (oms_amqp_consumer_stop). */
int kitchen_consumer_start(oms_amqp_consumer **out, const oms_amqp_config *amqp,
                           const kitchen_consumer_config *kc, kitchen_service *svc, oms_error *err);

#endif
