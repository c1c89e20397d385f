#include "oms/admin.h"

#include <jansson.h>
#include <stdlib.h>

#include "oms/metrics.h"
#include "oms/status.h"

static oms_ready_fn ready_fn;
static void *ready_ud;

void oms_admin_set_ready(oms_ready_fn fn, void *ud)
{
    ready_fn = fn;
    ready_ud = ud;
}

int oms_admin_check_ready(char *why, size_t whylen)
{
    if (whylen)
        why[0] = '\0';
    return ready_fn ? ready_fn(ready_ud, why, whylen) : OMS_OK;
}

void oms_admin_healthz(const oms_http_req *req, oms_http_resp *resp)
{
    oms_http_resp_json(resp, 200, json_pack("{s:s}", "status", "ok"));
}

void oms_admin_readyz(const oms_http_req *req, oms_http_resp *resp)
{
    char why[256];
    if (oms_admin_check_ready(why, sizeof(why)) == OMS_OK) {
        oms_http_resp_json(resp, 200, json_pack("{s:s}", "status", "ready"));
        return;
    }
    oms_http_resp_json(resp, 503, json_pack("{s:s,s:s}", "status", "not ready", "error", why));
    oms_http_resp_header(resp, "Retry-After", "1");
}

void oms_admin_metrics(const oms_http_req *req, oms_http_resp *resp)
{
    size_t len = 0;
    char *text = oms_metrics_render(&len);
    resp->status = 200;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
    resp->body = text;
    resp->len = len;
}
