#include "http_routes.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "checkout_page.h"
#include "oms/admin.h"
#include "oms/log.h"
#include "oms/util.h"
#include "service.h"
#include "urls.h"

/* Takes html (heap, from checkout_page.c) and its length. Callers render into a
 * variable first: the length is only known after the render call returns. */
static void page(oms_http_resp *resp, int status, char *html, size_t len)
{
    if (!html) {
        oms_http_resp_error(resp, 500, "cannot render the page");
        return;
    }
    oms_http_resp_text(resp, status, "text/html; charset=utf-8", html, len);
    free(html);
}

static void message_page(oms_http_resp *resp, int status, const char *title, const char *text)
{
    size_t len = 0;
    char *html = payments_page_message(title, text, &len);
    page(resp, status, html, len);
}

/* "application/json" with optional parameters ("; charset=utf-8"), any case. */
static int is_json(const char *ctype)
{
    static const char json[] = "application/json";
    if (!ctype || strncasecmp(ctype, json, sizeof(json) - 1) != 0)
        return 0;
    char next = ctype[sizeof(json) - 1];
    return next == '\0' || next == ';' || next == ' ';
}

static void webhook(const oms_http_req *req, oms_http_resp *resp)
{
    payments_service *s = req->ud;
    if (!is_json(oms_http_header(req, "Content-Type"))) {
        oms_http_resp_error(resp, 415, "Content-Type must be application/json");
        return;
    }
    oms_error err;
    oms_error_clear(&err);
    int rc = payments_webhook(s, oms_http_header(req, "Stripe-Signature"), req->body, req->body_len,
                              &err);
    switch (rc) {
    case OMS_OK:
        oms_http_resp_text(resp, 200, "application/json", "{\"received\":true}", 17);
        break;
    case OMS_DUPLICATE:
        oms_http_resp_text(resp, 200, "application/json", "{\"received\":true,\"duplicate\":true}",
                           34);
        break;
    case OMS_INVALID: oms_http_resp_error(resp, 400, "%s", err.msg); break;
    default:
        /* Not committed: a non-2xx makes Stripe deliver the event again later. */
        oms_http_resp_error(resp, 503, "event not recorded, retry later");
        oms_http_resp_header(resp, "Retry-After", "5");
        break;
    }
}

static void status_unavailable(oms_http_resp *resp)
{
    message_page(resp, 503, "Try again", "The checkout is unavailable right now; please retry.");
    oms_http_resp_header(resp, "Retry-After", "5");
}

static void checkout_show(const oms_http_req *req, oms_http_resp *resp)
{
    payments_service *s = req->ud;
    payments_row row;
    oms_error err;
    oms_error_clear(&err);
    int rc = payments_checkout_get(s, req->params[0], &row, &err);
    if (rc == OMS_NOTFOUND) {
        message_page(resp, 404, "Checkout not found", "There is no checkout with this link.");
        return;
    }
    if (rc != OMS_OK) {
        oms_log_error("checkout page: cannot load session", "error", err.msg);
        status_unavailable(resp);
        return;
    }
    size_t len = 0;
    if (payments_session_overdue(&row, oms_now_ms()))
        row.status = PAYMENTS_SESSION_EXPIRED; /* the sweep closes it within a period */
    if (row.status != PAYMENTS_SESSION_OPEN) {
        char *url =
            payments_status_url(s->gateway_url, "success.html", row.customer_id, row.order_id);
        char *html = payments_page_closed(&row, url, &len);
        page(resp, 200, html, len);
        free(url);
    } else {
        oms_order o;
        rc = oms_order_from_json_str(row.order_json, strlen(row.order_json), &o, &err);
        if (rc != OMS_OK) {
            oms_log_error("checkout page: stored order unreadable", "session_id", row.session_id,
                          "error", err.msg);
            oms_http_resp_error(resp, 500, "stored order is unreadable");
        } else {
            char *html = payments_page_checkout(&row, &o, &len);
            page(resp, 200, html, len);
            oms_order_free(&o);
        }
    }
    payments_row_free(&row);
}

static void checkout_finish(const oms_http_req *req, oms_http_resp *resp, int pay)
{
    payments_service *s = req->ud;
    payments_row row;
    oms_error err;
    oms_error_clear(&err);
    int rc = payments_checkout_finish(s, req->params[0], pay, &row, &err);
    if (rc == OMS_NOTFOUND) {
        message_page(resp, 404, "Checkout not found", "There is no checkout with this link.");
        return;
    }
    char *url = NULL;
    if (row.order_id)
        url = payments_status_url(s->gateway_url, "success.html", row.customer_id, row.order_id);
    if (rc == OMS_OK) {
        oms_http_resp_redirect(resp, url);
    } else if (rc == OMS_CONFLICT) {
        size_t len = 0;
        char *html = payments_page_closed(&row, url, &len);
        page(resp, 409, html, len);
    } else {
        oms_log_error("checkout: event not applied", "session_id", req->params[0], "error",
                      err.msg);
        status_unavailable(resp);
    }
    free(url);
    payments_row_free(&row);
}

static void checkout_pay(const oms_http_req *req, oms_http_resp *resp)
{
    checkout_finish(req, resp, 1);
}

static void checkout_cancel(const oms_http_req *req, oms_http_resp *resp)
{
    checkout_finish(req, resp, 0);
}

/* Stripe mode serves only the webhook and the admin routes; the local checkout pages
 * exist in local mode alone (in stripe mode they would let anyone "pay" for free). */
const oms_http_route payments_http_routes_stripe[] = {
    OMS_ADMIN_ROUTES,
    {"POST", "/webhook", webhook},
};
const size_t payments_http_routes_stripe_count = OMS_NELEM(payments_http_routes_stripe);

const oms_http_route payments_http_routes_local[] = {
    OMS_ADMIN_ROUTES,
    {"POST", "/webhook", webhook},
    {"GET", "/checkout/{}", checkout_show},
    {"POST", "/checkout/{}/pay", checkout_pay},
    {"POST", "/checkout/{}/cancel", checkout_cancel},
};
const size_t payments_http_routes_local_count = OMS_NELEM(payments_http_routes_local);
