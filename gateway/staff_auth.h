/* Who is calling the gateway: a signed-in member of staff (the oms_staff cookie of a
 * server-side session, gateway/staff_store.h) or nobody in particular. The staff
 * routes (sign-in, sign-out, who am I) live in staff_auth.c; other routes ask
 * gw_staff_of() before serving what only staff may see (the kitchen display, every
 * customer's order list).
 *
 * Cookie: oms_staff=<64 hex>; HttpOnly; SameSite=Strict; Path=/ (+ Secure when
 * PUBLIC_URL is https). A state-changing staff request whose Origin is not the shop's
 * own (PUBLIC_URL's scheme://host[:port]) is refused with 403 before anything else:
 * SameSite already keeps the cookie off cross-site requests in current browsers, the
 * Origin check covers the others. */
#ifndef GATEWAY_STAFF_AUTH_H
#define GATEWAY_STAFF_AUTH_H

#include <stddef.h>

#include "login_throttle.h"
#include "oms/http.h"
#include "staff_store.h"

typedef struct gw_staff_auth {
    gw_staff_store *store;       /* borrowed */
    gw_login_throttle *throttle; /* borrowed */
    const char *public_url;      /* its origin is the only one trusted for staff POSTs */
    long long idle_s;            /* STAFF_SESSION_IDLE_S */
} gw_staff_auth;

/* The signed-in staff member's name into name (GW_STAFF_NAME_MAX + 1 bytes): OMS_OK;
 * OMS_INVALID when there is no valid session (the caller answers 401); OMS_AGAIN/ERR
 * when the store cannot tell (503). */
int gw_staff_of(const gw_staff_auth *a, const oms_http_req *req, char *name, oms_error *err);

/* 1 when the request may change state for staff: no Origin header (not a browser's
 * cross-site request) or the shop's own origin. */
int gw_staff_origin_ok(const gw_staff_auth *a, const oms_http_req *req);

/* Answers 401 for an API caller, or sends a browser (Accept: text/html) to the sign-in
 * page with next= the path it wanted. */
void gw_staff_deny(const oms_http_req *req, oms_http_resp *resp);

/* POST /staff/login (JSON {"name","password"} or a form), POST /staff/logout,
 * GET /api/staff/me. The server's user data must be a gateway_ctx whose staff field
 * points at a gw_staff_auth. */
void gw_staff_login(const oms_http_req *req, oms_http_resp *resp);
void gw_staff_logout(const oms_http_req *req, oms_http_resp *resp);
void gw_staff_me(const oms_http_req *req, oms_http_resp *resp);

#endif
