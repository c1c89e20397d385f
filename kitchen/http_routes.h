/* The kitchen's admin HTTP routes: /healthz, /readyz, /metrics (common) and the ticket
 * views for the kitchen display page: GET /tickets (newest 100) and
 * GET /tickets/{orderID}. The server's user data must be the kitchen_service. */
#ifndef KITCHEN_HTTP_ROUTES_H
#define KITCHEN_HTTP_ROUTES_H

#include <stddef.h>

#include "oms/http.h"

#define KITCHEN_TICKETS_LIMIT 100

extern const oms_http_route kitchen_http_routes[];
extern const size_t kitchen_http_nroutes;

#endif
