/* payments' HTTP surface: the admin endpoints, the Stripe webhook and the local
 * checkout pages. The server's user data is the payments_service. */
#ifndef PAYMENTS_HTTP_ROUTES_H
#define PAYMENTS_HTTP_ROUTES_H

#include <stddef.h>

#include "oms/http.h"

extern const oms_http_route payments_http_routes[];
extern const size_t payments_http_routes_count;

#endif
