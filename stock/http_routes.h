/* The stock admin HTTP server's routes: /healthz, /readyz, /metrics (common) and
 * GET /stock, the levels of every product for operators and tests. The server's user
 * data must be the stock_service. */
#ifndef STOCK_HTTP_ROUTES_H
#define STOCK_HTTP_ROUTES_H

#include <stddef.h>

#include "oms/http.h"
#include "oms/status.h"

extern const oms_http_route stock_http_routes[];
extern const size_t stock_http_nroutes;

#endif
