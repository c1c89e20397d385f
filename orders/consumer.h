/* The events orders consumes (order.paid, order.cooking, order.ready, order.cancelled,
 * order.refunded), each from its own queue orders.<event>: the table the service
 * declaration names, and its handler. */
#ifndef ORDERS_CONSUMER_H
#define ORDERS_CONSUMER_H

#include <stddef.h>

#include "oms/app.h"

extern const oms_service_consumer orders_consumers[];
extern const size_t orders_nconsumers;

#endif
