#include "staff_auth.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_routes.h"
#include "oms/log.h"
#include "oms/util.h"

#define COOKIE "oms_staff"

/* The value of cookie name in a Cookie header ("a=1; oms_staff=...; b=2") into out;
 * 0 when absent or not a token's shape. */
static int cookie_value(const char *header, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    for (const char *p = header; p && *p;) {
        while (*p == ' ' || *p == ';')
            p++;
        if (strncmp(p, name, nl) == 0 && p[nl] == '=') {
            const char *v = p + nl + 1;
            size_t len = strcspn(v, ";");
            if (len == 0 || len >= n)
                return 0;
            memcpy(out, v, len);
            out[len] = '\0';
            return 1;
        }
        p = strchr(p, ';');
    }
    return 0;
}

int gw_staff_of(const gw_staff_auth *a, const oms_http_req *req, char *name, oms_error *err)
{
    char token[GW_STAFF_TOKEN_LEN + 1];
    name[0] = '\0';
    if (!a || !a->store ||
        !cookie_value(oms_http_header(req, "Cookie"), COOKIE, token, sizeof(token)))
        return oms_error_set(err, OMS_INVALID, "not signed in");
    return gw_staff_session_check(a->store, token, oms_now_ms(), a->idle_s, name, err);
}

/* "scheme://host[:port]" of url, lower case, into out. */
static void origin_of(const char *url, char *out, size_t n)
{
    const char *host = strstr(url, "://");
    size_t len = host ? (size_t)(host + 3 - url) + strcspn(host + 3, "/?#") : strlen(url);
    if (len >= n)
        len = n - 1;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)tolower((unsigned char)url[i]);
    out[len] = '\0';
}

int gw_staff_origin_ok(const gw_staff_auth *a, const oms_http_req *req)
{
    const char *origin = oms_http_header(req, "Origin");
    if (!origin)
        return 1;
    char want[256], got[256];
    origin_of(a->public_url, want, sizeof(want));
    origin_of(origin, got, sizeof(got));
    return strcmp(want, got) == 0;
}

void gw_staff_deny(const oms_http_req *req, oms_http_resp *resp)
{
    const char *accept = oms_http_header(req, "Accept");
    if (accept && strstr(accept, "text/html")) {
        char *next = oms_xmalloc(strlen(req->path) * 3 + 64);
        char *w = next + sprintf(next, "/staff/login.html?next=");
        for (const char *p = req->path; *p; p++) {
            if (isalnum((unsigned char)*p) || strchr("/-_.", *p))
                *w++ = *p;
            else
                w += sprintf(w, "%%%02X", (unsigned char)*p);
        }
        *w = '\0';
        oms_http_resp_redirect(resp, next);
        free(next);
        return;
    }
    oms_http_resp_error(resp, 401, "sign in as staff first");
}

/* ---- sign-in ----------------------------------------------------------------------- */

/* Decodes a form value (application/x-www-form-urlencoded) of length n into out. */
static void form_decode(const char *v, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        if (v[i] == '+') {
            out[o++] = ' ';
        } else if (v[i] == '%' && i + 2 < n && isxdigit((unsigned char)v[i + 1]) &&
                   isxdigit((unsigned char)v[i + 2])) {
            char hex[3] = {v[i + 1], v[i + 2], 0};
            out[o++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            out[o++] = v[i];
        }
    }
    out[o] = '\0';
}

static int form_field(const char *body, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    for (const char *p = body; p && *p;) {
        size_t len = strcspn(p, "&");
        if (len > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
            form_decode(p + kl + 1, len - kl - 1, out, cap);
            return 1;
        }
        p = p[len] ? p + len + 1 : NULL;
    }
    out[0] = '\0';
    return 0;
}

/* Where a form sign-in goes next: only a path of this site (no "//host", no scheme). */
static const char *safe_next(const char *next)
{
    if (next[0] == '/' && next[1] != '/' && next[1] != '\\' && !strchr(next, ':'))
        return next;
    return "/staff/";
}

static void set_cookie(const gw_staff_auth *a, oms_http_resp *resp, const char *token,
                       long long max_age)
{
    char c[256];
    int secure = strncasecmp(a->public_url, "https:", 6) == 0;
    snprintf(c, sizeof(c), COOKIE "=%s; HttpOnly; SameSite=Strict; Path=/; Max-Age=%lld%s", token,
             max_age, secure ? "; Secure" : "");
    oms_http_resp_header(resp, "Set-Cookie", c);
}

void gw_staff_login(const oms_http_req *req, oms_http_resp *resp)
{
    const gateway_ctx *g = req->ud;
    const gw_staff_auth *a = g->staff;
    if (!gw_staff_origin_ok(a, req)) {
        oms_http_resp_error(resp, 403, "cross-site sign-in refused");
        return;
    }
    char name[GW_STAFF_NAME_MAX * 3 + 1] = "", password[GW_STAFF_PASSWORD_MAX * 3 + 1] = "",
                                      next[512] = "";
    const char *ct = oms_http_header(req, "Content-Type");
    int form = ct && strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0;
    if (form) {
        form_field(req->body, "name", name, sizeof(name));
        form_field(req->body, "password", password, sizeof(password));
        form_field(req->body, "next", next, sizeof(next));
    } else {
        json_error_t je;
        json_t *j = json_loadb(req->body, req->body_len, 0, &je);
        const char *n = json_string_value(json_object_get(j, "name"));
        const char *p = json_string_value(json_object_get(j, "password"));
        if (!j || !n || !p) {
            json_decref(j);
            oms_http_resp_error(resp, 400,
                                "body: {\"name\":\"...\",\"password\":\"...\"} expected");
            return;
        }
        snprintf(name, sizeof(name), "%s", n);
        snprintf(password, sizeof(password), "%s", p);
        json_decref(j);
    }
    const struct sockaddr *from = oms_http_client_addr(req);
    int retry = 1;
    if (!gw_login_throttle_check(a->throttle, from, name, oms_mono_ms(), &retry)) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", retry);
        oms_http_resp_error(resp, 429, "too many failed sign-ins; retry in %d s", retry);
        oms_http_resp_header(resp, "Retry-After", ra);
        goto done;
    }
    oms_error err;
    oms_error_clear(&err);
    int rc = gw_staff_verify(a->store, name, password, &err);
    if (rc == OMS_INVALID) {
        gw_login_throttle_failure(a->throttle, from, name, oms_mono_ms());
        oms_log_warn("staff sign-in refused", "name", name);
        /* One answer for every wrong part: no hint whether the name exists. */
        oms_http_resp_error(resp, 401, "wrong name or password");
        goto done;
    }
    char token[GW_STAFF_TOKEN_LEN + 1];
    if (rc == OMS_OK)
        rc = gw_staff_session_create(a->store, name, oms_now_ms(), token, &err);
    if (rc != OMS_OK) {
        oms_http_resp_error(resp, oms_status_to_http(rc) >= 500 ? oms_status_to_http(rc) : 503,
                            "%s", err.msg);
        goto done;
    }
    gw_login_throttle_success(a->throttle, from, name);
    oms_log_info("staff signed in", "name", name);
    set_cookie(a, resp, token, a->idle_s);
    if (form) {
        oms_http_resp_redirect(resp, safe_next(next));
    } else {
        oms_http_resp_json(resp, 200, json_pack("{s:s}", "name", name));
    }
    memset(token, 0, sizeof(token));
done:
    memset(password, 0, sizeof(password)); /* no copy of it left in freed stack frames */
}

void gw_staff_logout(const oms_http_req *req, oms_http_resp *resp)
{
    const gateway_ctx *g = req->ud;
    const gw_staff_auth *a = g->staff;
    if (!gw_staff_origin_ok(a, req)) {
        oms_http_resp_error(resp, 403, "cross-site sign-out refused");
        return;
    }
    char token[GW_STAFF_TOKEN_LEN + 1];
    oms_error err;
    oms_error_clear(&err);
    if (cookie_value(oms_http_header(req, "Cookie"), COOKIE, token, sizeof(token)) &&
        gw_staff_session_delete(a->store, token, &err) != OMS_OK) {
        oms_http_resp_error(resp, 503, "%s", err.msg);
        return;
    }
    set_cookie(a, resp, "", 0);
    oms_http_resp_text(resp, 204, "text/plain", "", 0);
}

void gw_staff_me(const oms_http_req *req, oms_http_resp *resp)
{
    const gateway_ctx *g = req->ud;
    char name[GW_STAFF_NAME_MAX + 1];
    oms_error err;
    oms_error_clear(&err);
    int rc = gw_staff_of(g->staff, req, name, &err);
    if (rc == OMS_INVALID) {
        oms_http_resp_error(resp, 401, "sign in as staff first");
        return;
    }
    if (rc != OMS_OK) {
        oms_http_resp_error(resp, 503, "%s", err.msg);
        return;
    }
    oms_http_resp_json(resp, 200, json_pack("{s:s}", "name", name));
}
