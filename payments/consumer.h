/* The events payments consumes, each from its own queue payments.<event>:
 * order.created (open a checkout session), order.cancelled (close it) and
 * order.refunded (return the money). The table the service declaration names. */
#ifndef PAYMENTS_CONSUMER_H
#define PAYMENTS_CONSUMER_H

#include <stddef.h>

#include "oms/app.h"

extern const oms_service_consumer payments_consumers[];
extern const size_t payments_nconsumers;

#endif
