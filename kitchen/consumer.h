/* The event the kitchen consumes: order.paid, from its queue kitchen.order.paid (with
 * the common library's retry and dead-letter queues, docs/amqp.md). The table the
 * service declaration names; each delivery goes through kitchen_accept_paid. */
#ifndef KITCHEN_CONSUMER_H
#define KITCHEN_CONSUMER_H

#include <stddef.h>

#include "oms/app.h"

extern const oms_service_consumer kitchen_consumers[];
extern const size_t kitchen_nconsumers;

#endif
