#include "http_util.h"

#include <string.h>
#include <strings.h>

#include "http_routes.h"
#include "oms/order.h"
#include "oms/order_pb.h"
#include "oms/status.h"
#include "oms/util.h"
#include "staff_auth.h"

static const char id_rule[] = "must be 1 to 64 characters of A-Z a-z 0-9 _ . : -";

/* A customer at the unpaid-orders limit waits for a payment, a cancel or a checkout
 * deadline: 60 s; a service that is down: 1 s. */
void gw_reply_status(oms_http_resp *resp, int rc, const char *msg)
{
    int http = oms_status_to_http(rc);
    if (rc == OMS_DUPLICATE)
        http = 409;
    oms_http_resp_error(resp, http, "%s", msg && msg[0] ? msg : oms_status_text(rc));
    if (http == 503)
        oms_http_resp_header(resp, "Retry-After", "1");
    else if (http == 429)
        oms_http_resp_header(resp, "Retry-After", "60");
}

void gw_shed_if_overloaded(const oms_http_req *req, int rc, const char *msg)
{
    if (rc == OMS_UNAVAILABLE && msg && strncmp(msg, OMS_OVERLOADED, strlen(OMS_OVERLOADED)) == 0)
        oms_http_shed(req, GW_SHED_MS);
}

int gw_check_id(oms_http_resp *resp, const char *field, const char *v)
{
    if (oms_valid_id(v))
        return 1;
    oms_http_resp_error(resp, 400, "%s: %s", field, id_rule);
    return 0;
}

int gw_check_json_type(const oms_http_req *req, oms_http_resp *resp)
{
    const char *ct = oms_http_header(req, "Content-Type");
    /* No Content-Type: the original accepted such clients. A prefix alone is not
     * enough ("application/jsonx", "application/json-seq" are other types). */
    if (!ct || (strncasecmp(ct, "application/json", 16) == 0 &&
                (ct[16] == '\0' || ct[16] == ';' || ct[16] == ' ')))
        return 1;
    oms_http_resp_error(resp, 415, "Content-Type must be application/json (got %.60s)", ct);
    return 0;
}

int gw_require_staff(const oms_http_req *req, oms_http_resp *resp, char *name)
{
    gateway_ctx *g = req->ud;
    char own[GW_STAFF_NAME_MAX + 1];
    oms_error err;
    oms_error_clear(&err);
    int rc = gw_staff_of(g->staff, req, name ? name : own, &err);
    if (rc == OMS_OK)
        return 1;
    if (rc == OMS_INVALID)
        gw_staff_deny(req, resp);
    else
        gw_reply_status(resp, rc, err.msg);
    return 0;
}

int gw_require_staff_change(const oms_http_req *req, oms_http_resp *resp, char *name)
{
    gateway_ctx *g = req->ud;
    if (!gw_staff_origin_ok(g->staff, req)) {
        oms_http_resp_error(resp, 403, "cross-site request refused");
        return 0;
    }
    return gw_require_staff(req, resp, name);
}

int gw_write_order(oms_jbuf *b, const Api__Order *m)
{
    oms_order o;
    oms_error err;
    if (!m || oms_order_from_pb(m, &o, &err) != OMS_OK)
        return 0;
    if ((int)o.status < 0)
        o.status = OMS_ORDER_PENDING;
    oms_order_write_json(b, &o);
    oms_order_free(&o);
    return 1;
}

void gw_reply_order(oms_http_resp *resp, int status, const Api__Order *m)
{
    oms_jbuf b;
    oms_jbuf_init(&b, 1024);
    if (!gw_write_order(&b, m)) {
        oms_jbuf_free(&b);
        oms_http_resp_error(resp, 502, "orders service returned an invalid order");
        return;
    }
    size_t len;
    char *body = oms_jbuf_take(&b, &len);
    oms_http_resp_json_text(resp, status, body, len);
}

void gw_reply_order_list(oms_http_resp *resp, const Api__ListOrdersResponse *r)
{
    oms_jbuf b;
    oms_jbuf_init(&b, 1024 * (r->n_orders + 1));
    oms_jbuf_lit(&b, "{\"orders\":[");
    int first = 1;
    for (size_t i = 0; i < r->n_orders; i++) {
        size_t mark = b.len;
        if (!first)
            oms_jbuf_lit(&b, ",");
        if (gw_write_order(&b, r->orders[i]))
            first = 0;
        else /* not an order: left out */
            b.len = mark, b.p[mark] = '\0';
    }
    oms_jbuf_lit(&b, "],\"nextPageToken\":");
    oms_jbuf_str(&b, r->nextpagetoken);
    oms_jbuf_lit(&b, "}");
    size_t len;
    char *body = oms_jbuf_take(&b, &len);
    oms_http_resp_json_text(resp, 200, body, len);
}
