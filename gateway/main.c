/* oms-gateway, as a declaration (oms/app.h runs it): the public HTTP API and pages
 * (http_routes.c). Stateless: every request becomes gRPC calls to orders and stock, so
 * it is ready when both answer. No gRPC server of its own: it registers its HTTP
 * address in discovery. */
#include <curl/curl.h>
#include <string.h>

#include "http_routes.h"
#include "oms/app.h"
#include "oms/util.h"

static struct {
    char *orders_addrs;
    char *stock_addrs;
    char *public_url;
    char *public_dir;
    char *kitchen_admin_url;
    long long http_threads;
    long long timeout_ms;
    long long rate_per_min;
    long long rate_burst;
    char *rate_exempt;
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
    OMS_CFG_INT_ROW("RATE_LIMIT_ORDERS_PER_MIN", "30", 0, 1000000, &cfg.rate_per_min,
                    "orders one client address may create per minute (0: no limit); more is 429"),
    OMS_CFG_INT_ROW("RATE_LIMIT_BURST", "10", 1, 1000000, &cfg.rate_burst,
                    "orders an address may create at once before the per-minute rate applies"),
    OMS_CFG_STR_ROW("RATE_LIMIT_EXEMPT", "127.0.0.0/8,::1/128", &cfg.rate_exempt,
                    "addresses/CIDRs never rate limited (comma list; behind a proxy every "
                    "client is it)"),
};

static gateway_ctx gw;

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
    return OMS_OK;
}

static void gateway_unprepare(oms_service_rt *rt)
{
    gw_rate_limit_free(gw.create_limit);
    curl_global_cleanup();
}

static int gateway_start(oms_service_rt *rt, oms_error *err)
{
    gw.orders = oms_service_client_of(rt, "orders");
    gw.stock = oms_service_client_of(rt, "stock");
    rt->ud = &gw;
    return OMS_OK;
}

static const oms_service_def gateway = {
    .name = "gateway",
    .config = config,
    .nconfig = OMS_NELEM(config),
    .prepare = {gateway_prepare, gateway_unprepare},
    .start = {gateway_start, NULL},
    .http = {"HTTP_ADDR", "127.0.0.1:8080", "API and pages listen address", gateway_http_routes,
             &gateway_http_nroutes, &cfg.public_dir, &cfg.http_threads},
    .clients = {{"orders", &cfg.orders_addrs}, {"stock", &cfg.stock_addrs}},
};

int main(int argc, char **argv)
{
    return oms_service_run(&gateway, argc, argv);
}
