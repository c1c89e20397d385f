/* oms-gateway, as a declaration (oms/app.h runs it): the public HTTP API and pages
 * (http_routes.c) and staff sign-in (staff_auth.c). Orders and stock hold the shop's
 * data; the gateway keeps only staff accounts and sessions in a database of its own
 * (staff_store.c). No gRPC server of its own: it registers its HTTP address in
 * discovery. */
#include <curl/curl.h>
#include <string.h>

#include "http_routes.h"
#include "jwt.h"
#include "login_throttle.h"
#include "order_events.h"
#include "oms/app.h"
#include "oms/log.h"
#include "oms/util.h"
#include "staff_auth.h"
#include "staff_store.h"

static struct {
    char *orders_addrs;
    char *stock_addrs;
    char *public_url;
    char *public_dir;
    char *kitchen_admin_url;
    long long http_threads;
    long long timeout_ms;
    long long budget_ms;
    long long rate_per_min;
    long long rate_burst;
    char *rate_exempt;
    long long staff_idle_s;
    long long session_prune_ms;
    char *admin_password;
    char *auth_issuer;
    char *auth_audience;
    char *auth_jwks_file;
    char *auth_jwks_url;
    long long auth_refresh_s;
} cfg;

static const oms_cfg_def config[] = {
    OMS_CFG_STR_ROW("ORDERS_ADDRS", "127.0.0.1:2000", &cfg.orders_addrs,
                    "orders gRPC addresses (comma list: round robin)"),
    OMS_CFG_STR_ROW("STOCK_ADDRS", "127.0.0.1:2002", &cfg.stock_addrs,
                    "stock gRPC addresses (comma list: round robin)"),
    OMS_CFG_URL_ROW("PUBLIC_URL", "http://localhost:8080", &cfg.public_url,
                    "base URL customers reach the gateway at (redirectToURL)"),
    OMS_CFG_STR_ROW("PUBLIC_DIR", "gateway/public", &cfg.public_dir, "directory of the pages"),
    OMS_CFG_URL_ROW("KITCHEN_ADMIN_URL", "http://127.0.0.1:9003", &cfg.kitchen_admin_url,
                    "kitchen admin base URL (GET /api/kitchen/tickets relays it)"),
    OMS_CFG_INT_ROW("HTTP_THREADS", "8", 1, 64, &cfg.http_threads,
                    "HTTP worker threads (each waits in a synchronous gRPC call, so more than "
                    "cores)"),
    OMS_CFG_INT_ROW("GRPC_TIMEOUT_MS", "5000", 10, 60000, &cfg.timeout_ms,
                    "deadline of each gRPC call"),
    OMS_CFG_INT_ROW("HTTP_REQUEST_BUDGET_MS", "5000", 10, 600000, &cfg.budget_ms,
                    "time a request may take from its arrival; its gRPC calls get what is left"
                    " (at most GRPC_TIMEOUT_MS each)"),
    OMS_CFG_INT_ROW("RATE_LIMIT_ORDERS_PER_MIN", "30", 0, 1000000, &cfg.rate_per_min,
                    "orders one client address may create per minute (0: no limit); more is 429"),
    OMS_CFG_INT_ROW("RATE_LIMIT_BURST", "10", 1, 1000000, &cfg.rate_burst,
                    "orders an address may create at once before the per-minute rate applies"),
    OMS_CFG_STR_ROW("RATE_LIMIT_EXEMPT", "127.0.0.0/8,::1/128", &cfg.rate_exempt,
                    "addresses/CIDRs never rate limited (comma list; behind a proxy every "
                    "client is it)"),
    OMS_CFG_INT_ROW("STAFF_SESSION_IDLE_S", "43200", 60, 2592000, &cfg.staff_idle_s,
                    "a staff session ends after this many seconds without use"),
    OMS_CFG_INT_ROW("STAFF_SESSION_PRUNE_MS", "60000", 1000, 3600000, &cfg.session_prune_ms,
                    "how often ended staff sessions are deleted (ms)"),
    OMS_CFG_STR_ROW("OMS_ADMIN_PASSWORD", "", &cfg.admin_password,
                    "password of the first staff account \"admin\", created when there is none"
                    " (never logged; make run prints a random one)"),
    OMS_CFG_STR_ROW("AUTH_ISSUER", "", &cfg.auth_issuer,
                    "OIDC issuer of customer tokens (iss); empty: no customer sign-in"),
    OMS_CFG_STR_ROW("AUTH_AUDIENCE", "", &cfg.auth_audience,
                    "audience customer tokens must name (aud); required with AUTH_ISSUER"),
    OMS_CFG_STR_ROW("AUTH_JWKS_FILE", "", &cfg.auth_jwks_file,
                    "the issuer's signing keys as a JWKS file (or AUTH_JWKS_URL)"),
    OMS_CFG_STR_ROW("AUTH_JWKS_URL", "", &cfg.auth_jwks_url,
                    "the issuer's JWKS URL, fetched at start, every AUTH_JWKS_REFRESH_S and"
                    " once more for an unknown key id"),
    OMS_CFG_INT_ROW("AUTH_JWKS_REFRESH_S", "3600", 0, 86400, &cfg.auth_refresh_s,
                    "seconds between JWKS reloads (0: only on an unknown key id)"),
};

static gateway_ctx gw;
static gw_staff_auth staff;
static gw_events *events;
/* Watched orders still pending are re-read this often (their next state comes by a
 * gRPC call, not an event). */
static const long long pending_poll_ms = 250;

/* A trailing slash would double in the URLs built on base. */
static void trim_slashes(char *base)
{
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        base[--n] = '\0';
}

/* The order rate limiter (a bad RATE_LIMIT_EXEMPT is a configuration error: exit 2)
 * and libcurl, which must be set up before any thread can use it (the kitchen relay). */
static int gateway_prepare(oms_service_rt *rt, oms_error *err)
{
    oms_error e;
    oms_error_clear(&e);
    if (gw_rate_limit_new(&gw.create_limit, (int)cfg.rate_per_min, (int)cfg.rate_burst,
                          cfg.rate_exempt, &e) != OMS_OK)
        oms_app_config_fail("gateway", "%s", e.msg);
    trim_slashes(cfg.public_url);
    trim_slashes(cfg.kitchen_admin_url);
    gw.public_url = cfg.public_url;
    gw.kitchen_admin_url = cfg.kitchen_admin_url;
    gw.public_dir = cfg.public_dir;
    gw.timeout_ms = (int)cfg.timeout_ms;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        gw_rate_limit_free(gw.create_limit);
        return oms_error_set(err, OMS_ERR, "curl_global_init failed");
    }
    if (cfg.auth_issuer[0]) {
        gw_jwt_config jc = {.issuer = cfg.auth_issuer,
                            .audience = cfg.auth_audience,
                            .jwks_file = cfg.auth_jwks_file[0] ? cfg.auth_jwks_file : NULL,
                            .jwks_url = cfg.auth_jwks_url[0] ? cfg.auth_jwks_url : NULL,
                            .refresh_s = cfg.auth_refresh_s,
                            .leeway_s = 60};
        if (gw_jwt_verifier_new(&gw.customers, &jc, &e) != OMS_OK)
            oms_app_config_fail("gateway", "%s", e.msg);
        gw_jwt_stats st;
        gw_jwt_stats_get(gw.customers, &st);
        if (st.keys == 0)
            oms_log_warn("customer tokens: no signing key loaded yet; tokens are refused until"
                         " the JWKS loads",
                         "url", cfg.auth_jwks_url);
    }
    return OMS_OK;
}

static void gateway_unprepare(oms_service_rt *rt)
{
    gw_jwt_verifier_free(gw.customers); /* the HTTP server has stopped: no verify runs */
    gw.customers = NULL;
    gw_rate_limit_free(gw.create_limit);
    curl_global_cleanup();
}

/* The first account: "admin" with OMS_ADMIN_PASSWORD when the shop has no staff yet
 * (another instance doing the same at once is fine: OMS_CONFLICT). */
static int first_admin(oms_error *err)
{
    long long n = 0;
    int rc = gw_staff_count(staff.store, &n, err);
    if (rc != OMS_OK || n > 0 || !cfg.admin_password[0])
        return rc;
    rc = gw_staff_add(staff.store, "admin", cfg.admin_password, err);
    if (rc == OMS_CONFLICT) {
        oms_error_clear(err);
        return OMS_OK;
    }
    if (rc == OMS_OK)
        oms_log_info("staff account created from OMS_ADMIN_PASSWORD", "name", "admin");
    return rc == OMS_INVALID ? oms_error_set(err, OMS_INVALID, "OMS_ADMIN_PASSWORD: %s", err->msg)
                             : rc;
}

static int gateway_start(oms_service_rt *rt, oms_error *err)
{
    gw.orders = oms_service_client_of(rt, "orders");
    gw.stock = oms_service_client_of(rt, "stock");
    int rc = gw_staff_store_attach(&staff.store, rt->db, NULL, err);
    if (rc == OMS_OK)
        rc = gw_login_throttle_new(&staff.throttle, NULL, err);
    if (rc == OMS_OK)
        rc = first_admin(err);
    if (rc != OMS_OK) {
        gw_login_throttle_free(staff.throttle);
        gw_staff_store_close(staff.store);
        staff.throttle = NULL;
        staff.store = NULL;
        return rc;
    }
    staff.public_url = cfg.public_url;
    staff.idle_s = cfg.staff_idle_s;
    gw.staff = &staff;
    rc = gw_events_new(&events, rt->amqp, gw.orders, (int)cfg.timeout_ms, err);
    if (rc != OMS_OK) {
        gw_login_throttle_free(staff.throttle);
        gw_staff_store_close(staff.store);
        staff.throttle = NULL;
        staff.store = NULL;
        return rc;
    }
    rt->ud = &gw;
    return OMS_OK;
}

/* Runs after the HTTP server stopped: every stream has ended. */
static void gateway_stop(oms_service_rt *rt)
{
    gw_events_free(events);
    events = NULL;
    gw_login_throttle_free(staff.throttle);
    gw_staff_store_close(staff.store);
    staff.throttle = NULL;
    staff.store = NULL;
}

/* Deletes ended staff sessions, a bounded batch at a time. */
static int session_prune_tick(void *ud, oms_error *err)
{
    long long removed = 0;
    int rc;
    do
        rc = gw_staff_session_prune(staff.store, oms_now_ms(), cfg.staff_idle_s, &removed, err);
    while (rc == OMS_OK && removed >= 1000);
    return rc;
}

static const oms_service_def gateway = {
    .name = "gateway",
    .config = config,
    .nconfig = OMS_NELEM(config),
    .prepare = {gateway_prepare, gateway_unprepare},
    .start = {gateway_start, gateway_stop},
    .db_open = gw_staff_db_open,
    .broker = 1, /* order events for the streams */
    .http = {"HTTP_ADDR", "127.0.0.1:8080", "API and pages listen address", gateway_http_routes,
             &gateway_http_nroutes, &cfg.public_dir, &cfg.http_threads, &cfg.budget_ms},
    .clients = {{"orders", &cfg.orders_addrs}, {"stock", &cfg.stock_addrs}},
    .tickers = {{"staff session prune", &cfg.session_prune_ms, session_prune_tick},
                {"pending stream re-read", &pending_poll_ms, gw_events_pending_tick}},
};

int main(int argc, char **argv)
{
    return oms_service_run(&gateway, argc, argv);
}
