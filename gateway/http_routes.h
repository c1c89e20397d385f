/* The gateway's HTTP API (README "HTTP API"): routes and their handlers, which
 * translate JSON to gRPC calls on orders and stock and back. */
#ifndef GATEWAY_HTTP_ROUTES_H
#define GATEWAY_HTTP_ROUTES_H

#include "oms/grpc_client.h"
#include "oms/http.h"
#include "rate_limit.h"

struct gw_staff_auth;
struct gw_jwt_verifier;

typedef struct gateway_ctx {
    oms_grpc_client *orders;           /* borrowed */
    oms_grpc_client *stock;            /* borrowed */
    const char *public_url;            /* "http://localhost:8080", for redirectToURL */
    int timeout_ms;                    /* per gRPC call */
    const char *kitchen_admin_url;     /* GET /api/kitchen/tickets relays its /tickets */
    const char *public_dir;            /* the pages (GET /kitchen serves kitchen.html) */
    gw_rate_limit *create_limit;       /* order creations per client address */
    struct gw_staff_auth *staff;       /* staff sessions (staff_auth.h) */
    struct gw_jwt_verifier *customers; /* customer tokens (jwt.h); NULL: no issuer */
} gateway_ctx;

extern const oms_http_route gateway_http_routes[];
extern const size_t gateway_http_nroutes;

#endif
