/* Stripe Checkout Sessions and refunds over libcurl (POST /v1/checkout/sessions,
 * /v1/checkout/sessions/{id}/expire, /v1/refunds; form-encoded).
 * One request per call with its own easy handle: sessions are created once per
 * order, so connection reuse buys nothing worth a shared, locked handle.
 * The secret key only ever goes into the Authorization header; it is never logged. */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/dynbuf.h"
#include "oms/log.h"
#include "oms/tracer.h"
#include "oms/util.h"
#include "processor.h"
#include "../urls.h"

#define STRIPE_MAX_RESPONSE (1024 * 1024) /* a session object is a few KiB */
#define STRIPE_MAX_FORM (1024 * 1024)     /* OMS_MAX_ITEMS line items are tens of KiB */
#define STRIPE_CONNECT_TIMEOUT_MS 5000L
#define STRIPE_TIMEOUT_MS 15000L

/* Appends "&key=<escaped value>". key is one of our literals (brackets are legal in
 * Stripe's form keys); the value is escaped with curl_easy_escape. */
static int form_add(CURL *h, oms_dynbuf *b, const char *key, const char *value, oms_error *err)
{
    char *esc = curl_easy_escape(h, value ? value : "", 0);
    if (!esc)
        return oms_error_set(err, OMS_ERR, "stripe: cannot encode %s", key);
    int rc = b->len ? oms_dynbuf_add(b, "&", 1) : OMS_OK;
    if (rc == OMS_OK)
        rc = oms_dynbuf_add(b, key, strlen(key));
    if (rc == OMS_OK)
        rc = oms_dynbuf_add(b, "=", 1);
    if (rc == OMS_OK)
        rc = oms_dynbuf_add(b, esc, strlen(esc));
    curl_free(esc);
    if (rc != OMS_OK)
        return oms_error_set(err, OMS_ERR, "stripe: request form larger than %zu bytes at %s",
                             b->toobig, key);
    return OMS_OK;
}

/* Line items carry our catalog's amounts (price_data: unit_amount, currency, name),
 * never a Stripe priceID: what Stripe charges is what the order says, whatever a
 * price object in the Stripe account might have been changed to. */
static int build_form(CURL *h, const payments_processor_config *cfg, const oms_order *o,
                      long long expires_at_s, oms_dynbuf *b, oms_error *err)
{
    char *success =
        payments_status_url(cfg->gateway_url, "success.html", o->customer_id, o->order_id);
    char *cancel =
        payments_status_url(cfg->gateway_url, "cancel.html", o->customer_id, o->order_id);
    char num[32];
    int rc = form_add(h, b, "mode", "payment", err);
    if (rc == OMS_OK)
        rc = form_add(h, b, "success_url", success, err);
    if (rc == OMS_OK)
        rc = form_add(h, b, "cancel_url", cancel, err);
    if (rc == OMS_OK)
        rc = form_add(h, b, "client_reference_id", o->order_id, err);
    if (rc == OMS_OK) {
        snprintf(num, sizeof(num), "%lld", expires_at_s);
        rc = form_add(h, b, "expires_at", num, err);
    }
    for (size_t i = 0; rc == OMS_OK && i < o->nitems; i++) {
        const oms_order_item *it = &o->items[i];
        char key[80];
        if (it->unit_price <= 0) {
            rc = oms_error_set(err, OMS_ERR, "stripe: item %s of order %s has no unit price",
                               it->product_id, o->order_id);
            break;
        }
        snprintf(key, sizeof(key), "line_items[%zu][price_data][currency]", i);
        rc = form_add(h, b, key, o->currency, err);
        if (rc != OMS_OK)
            break;
        snprintf(key, sizeof(key), "line_items[%zu][price_data][unit_amount]", i);
        snprintf(num, sizeof(num), "%lld", it->unit_price);
        rc = form_add(h, b, key, num, err);
        if (rc != OMS_OK)
            break;
        snprintf(key, sizeof(key), "line_items[%zu][price_data][product_data][name]", i);
        rc = form_add(h, b, key,
                      it->product_name && it->product_name[0] ? it->product_name : it->product_id,
                      err);
        if (rc != OMS_OK)
            break;
        snprintf(key, sizeof(key), "line_items[%zu][quantity]", i);
        snprintf(num, sizeof(num), "%d", it->quantity);
        rc = form_add(h, b, key, num, err);
    }
    if (rc == OMS_OK)
        rc = form_add(h, b, "metadata[orderID]", o->order_id, err);
    if (rc == OMS_OK)
        rc = form_add(h, b, "metadata[customerID]", o->customer_id, err);
    free(success);
    free(cancel);
    return rc;
}

static const char *json_str(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}

/* Stripe's error object of a non-2xx answer: type, code, message ("" when absent).
 * The strings live in *j (caller decrefs). */
typedef struct stripe_error {
    json_t *j;
    const char *type, *code, *msg;
} stripe_error;

static void stripe_error_read(const oms_dynbuf *resp, stripe_error *e)
{
    e->j = resp->p ? json_loadb(resp->p, resp->len, 0, NULL) : NULL;
    const json_t *o = json_object_get(e->j, "error");
    e->type = json_str(o, "type");
    e->code = json_str(o, "code");
    e->msg = json_str(o, "message");
}

/* Maps a non-2xx answer to a status, logging Stripe's error object in one line. */
static int stripe_failure(const char *what, long status, const oms_dynbuf *resp,
                          const char *order_id, oms_error *err)
{
    stripe_error e;
    stripe_error_read(resp, &e);
    char st[16];
    snprintf(st, sizeof(st), "%ld", status);
    char line[96];
    snprintf(line, sizeof(line), "stripe: %s failed", what);
    oms_log_error(line, "order_id", order_id, "status", st, "type", e.type, "code", e.code,
                  "message", e.msg);
    int rc = (status == 429 || status >= 500) ? OMS_AGAIN : OMS_ERR;
    oms_error_set(err, rc, "stripe answered %ld (%s%s%s): %s", status, e.type, e.code[0] ? "/" : "",
                  e.code, e.msg[0] ? e.msg : "no error message");
    json_decref(e.j);
    return rc;
}

static int parse_session(const oms_dynbuf *resp, payments_session *out, oms_error *err)
{
    json_error_t je;
    json_t *j = resp->p ? json_loadb(resp->p, resp->len, 0, &je) : NULL;
    const char *id = json_string_value(json_object_get(j, "id"));
    const char *url = json_string_value(json_object_get(j, "url"));
    int rc = OMS_OK;
    if (!j)
        rc = oms_error_set(err, OMS_ERR, "stripe: response is not JSON");
    else if (!id || !id[0] || strlen(id) > PAYMENTS_SESSION_ID_MAX)
        rc = oms_error_set(err, OMS_ERR, "stripe: response has no valid session id");
    else if (!url || strncmp(url, "http", 4) != 0)
        rc = oms_error_set(err, OMS_ERR, "stripe: session %s has no url", id);
    if (rc == OMS_OK) {
        snprintf(out->id, sizeof(out->id), "%s", id);
        out->url = oms_strdup(url);
    }
    json_decref(j);
    return rc;
}

/* One POST to Stripe on handle h: form (may be empty) form-encoded, the secret key as
 * Bearer, an Idempotency-Key when idem is not NULL, inside a CLIENT span of the current
 * trace. OMS_OK when an answer came (*status, body in *resp, which the caller frees);
 * OMS_AGAIN on network trouble, a timeout or an oversized answer. */
static int stripe_post(CURL *h, const payments_processor_config *cfg, const char *path,
                       const oms_dynbuf *form, const char *idem, const char *order_id, long *status,
                       oms_dynbuf *resp, oms_error *err)
{
    struct curl_slist *hdrs = NULL, *tmp;
    char *url = payments_join_url(cfg->stripe_api, path);
    size_t alen = strlen(cfg->stripe_key) + 32;
    char *auth = oms_xmalloc(alen);
    snprintf(auth, alen, "Authorization: Bearer %s", cfg->stripe_key);
    char idem_line[160] = "";
    if (idem)
        snprintf(idem_line, sizeof(idem_line), "Idempotency-Key: %s", idem);
    const char *lines[] = {auth, "Content-Type: application/x-www-form-urlencoded",
                           "Accept: application/json", idem_line};
    int rc = OMS_OK;
    *status = 0;
    for (size_t i = 0; i < OMS_NELEM(lines); i++) {
        if (!lines[i][0])
            continue;
        tmp = curl_slist_append(hdrs, lines[i]);
        if (!tmp) {
            rc = oms_error_set(err, OMS_AGAIN, "stripe: out of memory for headers");
            goto done;
        }
        hdrs = tmp;
    }

    CURLcode cc = CURLE_OK;
    /* Each setopt can only fail on a bad option or OOM; keep the first failure. */
#define SETOPT(opt, val)                                                                           \
    if (cc == CURLE_OK)                                                                            \
    cc = curl_easy_setopt(h, opt, val)
    SETOPT(CURLOPT_URL, url);
    SETOPT(CURLOPT_HTTPHEADER, hdrs);
    SETOPT(CURLOPT_POSTFIELDS, form->p ? form->p : "");
    SETOPT(CURLOPT_POSTFIELDSIZE, (long)form->len);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, STRIPE_CONNECT_TIMEOUT_MS);
    SETOPT(CURLOPT_TIMEOUT_MS, STRIPE_TIMEOUT_MS);
    SETOPT(CURLOPT_NOSIGNAL, 1L);                         /* we are multi-threaded */
    SETOPT(CURLOPT_WRITEFUNCTION, oms_dynbuf_curl_write); /* over the cap: CURLE_WRITE_ERROR */
    SETOPT(CURLOPT_WRITEDATA, resp);
    SETOPT(CURLOPT_USERAGENT, "oms-payments/1.0");
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#undef SETOPT
    /* The call is a CLIENT span of the order's trace (the span around the event being
     * handled), so a slow or failing Stripe shows up there. */
    char name[128];
    snprintf(name, sizeof(name), "POST %s", path);
    oms_span *span = oms_span_start(name, OMS_SPAN_CLIENT, NULL);
    oms_span_set_str(span, "http.request.method", "POST");
    oms_span_set_str(span, "url.full", url);
    oms_span_set_str(span, OMS_ATTR_ORDER_ID, order_id);
    if (cc == CURLE_OK)
        cc = curl_easy_perform(h);
    if (cc == CURLE_OK && curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status) != CURLE_OK)
        *status = 0;
    if (*status)
        oms_span_set_int(span, "http.response.status_code", *status);
    if (cc != CURLE_OK || *status < 200 || *status > 299)
        oms_span_set_status(span, OMS_SPAN_ERROR,
                            cc != CURLE_OK ? curl_easy_strerror(cc) : "Stripe answered an error");
    oms_span_end(span);
    if (cc != CURLE_OK) {
        /* Network trouble, a timeout or an oversized answer: transient by nature. */
        oms_log_warn("stripe: request failed", "order_id", order_id, "error",
                     curl_easy_strerror(cc));
        rc = oms_error_set(err, OMS_AGAIN, "stripe: %s", curl_easy_strerror(cc));
    }
done:
    curl_slist_free_all(hdrs);
    /* The header held the secret key: do not leave it in freed memory. */
    memset(auth, 0, strlen(auth));
    free(auth);
    free(url);
    return rc;
}

static int stripe_create_session(const payments_processor_config *cfg, const oms_order *o,
                                 long long expires_at_s, payments_session *out, oms_error *err)
{
    memset(out, 0, sizeof(*out));
    oms_dynbuf form, resp;
    oms_dynbuf_init(&form, STRIPE_MAX_FORM);
    oms_dynbuf_init(&resp, STRIPE_MAX_RESPONSE);
    long status = 0;
    int rc;
    CURL *h = curl_easy_init();
    if (!h) {
        rc = oms_error_set(err, OMS_AGAIN, "stripe: cannot create a curl handle");
        goto done;
    }
    rc = build_form(h, cfg, o, expires_at_s, &form, err);
    if (rc != OMS_OK)
        goto done;
    /* Stripe returns the first session for a repeated key, so a retry after a lost
     * answer does not open a second checkout for the same order. */
    char idem[128];
    snprintf(idem, sizeof(idem), "oms-%s", o->order_id);
    rc =
        stripe_post(h, cfg, "/v1/checkout/sessions", &form, idem, o->order_id, &status, &resp, err);
    if (rc != OMS_OK)
        goto done;
    if (status < 200 || status > 299) {
        rc = stripe_failure("create checkout session", status, &resp, o->order_id, err);
        goto done;
    }
    rc = parse_session(&resp, out, err);
done:
    if (h)
        curl_easy_cleanup(h);
    oms_dynbuf_free(&form);
    oms_dynbuf_free(&resp);
    return rc;
}

/* POST /v1/checkout/sessions/{id}/expire: afterwards the session cannot be paid.
 * Stripe refuses (4xx) a session that is no longer open: expired already (a retry of
 * ours), or completed -- then its checkout.session.completed webhook comes, and the
 * webhook refunds the payment of the cancelled order. So a refusal is not retried. */
static int stripe_expire_session(const payments_processor_config *cfg, const char *session_id,
                                 const char *order_id, oms_error *err)
{
    oms_dynbuf form, resp;
    oms_dynbuf_init(&form, STRIPE_MAX_FORM);
    oms_dynbuf_init(&resp, STRIPE_MAX_RESPONSE);
    long status = 0;
    int rc;
    char path[PAYMENTS_SESSION_ID_MAX * 3 + 64];
    CURL *h = curl_easy_init();
    if (!h)
        return oms_error_set(err, OMS_AGAIN, "stripe: cannot create a curl handle");
    char *esc = curl_easy_escape(h, session_id, 0);
    if (!esc) {
        curl_easy_cleanup(h);
        return oms_error_set(err, OMS_AGAIN, "stripe: cannot encode the session id");
    }
    snprintf(path, sizeof(path), "/v1/checkout/sessions/%s/expire", esc);
    curl_free(esc);
    rc = stripe_post(h, cfg, path, &form, NULL, order_id, &status, &resp, err);
    /* 4xx but a bad key (401/403) or a rate limit (429): the session is not open. */
    int not_open = status >= 400 && status < 500 && status != 401 && status != 403 && status != 429;
    if (rc == OMS_OK && (status < 200 || status > 299) && !not_open) {
        rc = stripe_failure("expire checkout session", status, &resp, order_id, err);
    } else if (rc == OMS_OK && not_open) {
        stripe_error e;
        stripe_error_read(&resp, &e);
        oms_log_warn("stripe: checkout session was no longer open; not expired", "order_id",
                     order_id, "session_id", session_id, "code", e.code, "message", e.msg);
        json_decref(e.j);
    }
    curl_easy_cleanup(h);
    oms_dynbuf_free(&resp);
    return rc;
}

/* POST /v1/refunds for the whole payment_intent. The Idempotency-Key is per order, so
 * a retry (lost answer, redelivery) returns the first refund instead of a second one;
 * Stripe's "already refunded" refusal means the money is back, which is what we want. */
static int stripe_refund(const payments_processor_config *cfg, const payments_refund_req *r,
                         char *refund_id, oms_error *err)
{
    oms_dynbuf form, resp;
    oms_dynbuf_init(&form, STRIPE_MAX_FORM);
    oms_dynbuf_init(&resp, STRIPE_MAX_RESPONSE);
    long status = 0;
    int rc;
    if (!r->payment_intent || !r->payment_intent[0])
        return oms_error_set(err, OMS_ERR, "stripe: order %s has no payment_intent to refund",
                             r->order_id);
    CURL *h = curl_easy_init();
    if (!h)
        return oms_error_set(err, OMS_AGAIN, "stripe: cannot create a curl handle");
    rc = form_add(h, &form, "payment_intent", r->payment_intent, err);
    if (rc == OMS_OK)
        rc = form_add(h, &form, "metadata[orderID]", r->order_id, err);
    if (rc == OMS_OK)
        rc = form_add(h, &form, "metadata[reason]", r->reason, err);
    if (rc != OMS_OK)
        goto done;
    char idem[128];
    snprintf(idem, sizeof(idem), "oms-refund-%s", r->order_id);
    rc = stripe_post(h, cfg, "/v1/refunds", &form, idem, r->order_id, &status, &resp, err);
    if (rc != OMS_OK)
        goto done;
    if (status >= 200 && status <= 299) {
        json_t *j = resp.p ? json_loadb(resp.p, resp.len, 0, NULL) : NULL;
        const char *id = json_string_value(json_object_get(j, "id"));
        snprintf(refund_id, PAYMENTS_REFUND_ID_MAX + 1, "%s", id && id[0] ? id : "re_unknown");
        json_decref(j);
        goto done;
    }
    stripe_error e;
    stripe_error_read(&resp, &e);
    int already = status == 400 && strcmp(e.code, "charge_already_refunded") == 0;
    json_decref(e.j);
    if (already) {
        oms_log_warn("stripe: payment was already refunded", "order_id", r->order_id,
                     "payment_intent", r->payment_intent);
        snprintf(refund_id, PAYMENTS_REFUND_ID_MAX + 1, "already_refunded");
        goto done;
    }
    rc = stripe_failure("refund", status, &resp, r->order_id, err);
done:
    curl_easy_cleanup(h);
    oms_dynbuf_free(&form);
    oms_dynbuf_free(&resp);
    return rc;
}

static int stripe_init(const payments_processor_config *cfg, oms_error *err)
{
    if (!cfg->stripe_key || !cfg->stripe_key[0])
        return oms_error_set(err, OMS_INVALID,
                             "STRIPE_KEY must be set when PAYMENT_PROCESSOR=stripe");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return oms_error_set(err, OMS_ERR, "stripe: curl_global_init failed");
    return OMS_OK;
}

static void stripe_cleanup(void)
{
    curl_global_cleanup();
}

const payment_processor payments_processor_stripe = {
    .name = "stripe",
    .init = stripe_init,
    .cleanup = stripe_cleanup,
    .create_session = stripe_create_session,
    .expire_session = stripe_expire_session,
    .refund = stripe_refund,
};
