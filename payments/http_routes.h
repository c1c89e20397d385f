/* payments' HTTP surface: the admin endpoints, the Stripe webhook and (local mode
 * only) the local checkout pages. The server's user data is the payments_service. */
#ifndef PAYMENTS_HTTP_ROUTES_H
#define PAYMENTS_HTTP_ROUTES_H

#include <stddef.h>

#include "oms/http.h"

/* PAYMENT_PROCESSOR=stripe: admin + webhook. */
extern const oms_http_route payments_http_routes_stripe[];
extern const size_t payments_http_routes_stripe_count;
/* PAYMENT_PROCESSOR=local: admin + webhook + the checkout pages. */
extern const oms_http_route payments_http_routes_local[];
extern const size_t payments_http_routes_local_count;

#endif
