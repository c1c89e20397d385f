/* The operational endpoints every service serves over HTTP (README "Observability"):
 * /healthz (alive), /readyz (its dependencies answer), /metrics (Prometheus).
 * Put OMS_ADMIN_ROUTES in a service's route table and register a readiness check. */
#ifndef OMS_ADMIN_H
#define OMS_ADMIN_H

#include <stddef.h>

#include "oms/http.h"

/* Returns OMS_OK when ready, else an error code with a reason in why (e.g.
 * "database: unable to open"). Called on every /readyz; keep it fast (< 1 s). */
typedef int (*oms_ready_fn)(void *ud, char *why, size_t whylen);

/* Process-wide; set once at start before serving. */
void oms_admin_set_ready(oms_ready_fn fn, void *ud);
/* Runs the registered check (OMS_OK when none is registered). */
int oms_admin_check_ready(char *why, size_t whylen);

void oms_admin_healthz(const oms_http_req *req, oms_http_resp *resp);
void oms_admin_readyz(const oms_http_req *req, oms_http_resp *resp);
void oms_admin_metrics(const oms_http_req *req, oms_http_resp *resp);

#define OMS_ADMIN_ROUTES                                                                           \
    {"GET", "/healthz", oms_admin_healthz}, {"GET", "/readyz", oms_admin_readyz},                  \
    {                                                                                              \
        "GET", "/metrics", oms_admin_metrics                                                       \
    }

#endif
