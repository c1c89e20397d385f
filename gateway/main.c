/* oms-gateway: the public HTTP API and pages. Stateless: every request becomes gRPC
 * calls to orders and stock. */
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#include "oms/admin.h"
#include "oms/app.h"
#include "oms/discovery.h"
#include "oms/grpc_client.h"
#include "oms/http.h"
#include "oms/log.h"
#include "oms/util.h"
#include "routes.h"

static struct {
    oms_app_common common;
    char *http_addr;
    oms_discovery_config disc;
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

static const oms_cfg_def config_table[] = {
    {"HTTP_ADDR", OMS_CFG_ADDR, "127.0.0.1:8080", 0, 0, NULL, &cfg.http_addr, NULL,
     "API and pages listen address"},
    {"ORDERS_ADDRS", OMS_CFG_STR, "127.0.0.1:2000", 0, 0, NULL, &cfg.orders_addrs, NULL,
     "orders gRPC addresses (comma list: round robin)"},
    {"STOCK_ADDRS", OMS_CFG_STR, "127.0.0.1:2002", 0, 0, NULL, &cfg.stock_addrs, NULL,
     "stock gRPC addresses (comma list: round robin)"},
    {"PUBLIC_URL", OMS_CFG_URL, "http://localhost:8080", 0, 0, NULL, &cfg.public_url, NULL,
     "base URL customers reach the gateway at (redirectToURL)"},
    {"PUBLIC_DIR", OMS_CFG_STR, "gateway/public", 0, 0, NULL, &cfg.public_dir, NULL,
     "directory of the pages"},
    {"KITCHEN_ADMIN_URL", OMS_CFG_URL, "http://127.0.0.1:9003", 0, 0, NULL, &cfg.kitchen_admin_url,
     NULL, "kitchen admin base URL (GET /api/kitchen/tickets relays it)"},
    {"HTTP_THREADS", OMS_CFG_INT, "8", 1, 64, NULL, &cfg.http_threads, NULL,
     "HTTP worker threads (each waits in a synchronous gRPC call, so more than cores)"},
    {"GRPC_TIMEOUT_MS", OMS_CFG_INT, "5000", 10, 60000, NULL, &cfg.timeout_ms, NULL,
     "deadline of each gRPC call"},
    {"RATE_LIMIT_ORDERS_PER_MIN", OMS_CFG_INT, "30", 0, 1000000, NULL, &cfg.rate_per_min, NULL,
     "orders one client address may create per minute (0: no limit); more is 429"},
    {"RATE_LIMIT_BURST", OMS_CFG_INT, "10", 1, 1000000, NULL, &cfg.rate_burst, NULL,
     "orders an address may create at once before the per-minute rate applies"},
    {"RATE_LIMIT_EXEMPT", OMS_CFG_STR, "127.0.0.0/8,::1/128", 0, 0, NULL, &cfg.rate_exempt, NULL,
     "addresses/CIDRs never rate limited (comma list; behind a proxy every client is it)"},
    OMS_DISCOVERY_CONFIG(&cfg.disc),
    OMS_APP_LOG_CONFIG(&cfg.common),
};
#define CONFIG_COUNT (sizeof(config_table) / sizeof(config_table[0]))

static oms_discovery *discovery; /* DISCOVERY=etcd: registration and resolvers */

static gateway_ctx gw;

static int ready_check(void *ud, char *why, size_t n)
{
    oms_error err;
    if (oms_grpc_client_check_health(gw.orders, 500, &err) != OMS_OK) {
        snprintf(why, n, "orders: %s", err.msg);
        return OMS_UNAVAILABLE;
    }
    if (oms_grpc_client_check_health(gw.stock, 500, &err) != OMS_OK) {
        snprintf(why, n, "stock: %s", err.msg);
        return OMS_UNAVAILABLE;
    }
    return OMS_OK;
}

int main(int argc, char **argv)
{
    oms_app_start("gateway", config_table, CONFIG_COUNT, &cfg.common, argc, argv);
    int exit_code = 1;
    oms_http_server *http = NULL;
    oms_error err;
    memset(&gw, 0, sizeof(gw));
    if (gw_rate_limit_new(&gw.create_limit, (int)cfg.rate_per_min, (int)cfg.rate_burst,
                          cfg.rate_exempt, &err) != OMS_OK)
        oms_app_config_fail("gateway", "%s", err.msg);
    /* a trailing slash would double in redirectToURL */
    size_t ul = strlen(cfg.public_url);
    while (ul > 0 && cfg.public_url[ul - 1] == '/')
        cfg.public_url[--ul] = '\0';
    gw.public_url = cfg.public_url;
    gw.timeout_ms = (int)cfg.timeout_ms;
    size_t kl = strlen(cfg.kitchen_admin_url);
    while (kl > 0 && cfg.kitchen_admin_url[kl - 1] == '/')
        cfg.kitchen_admin_url[--kl] = '\0';
    gw.kitchen_admin_url = cfg.kitchen_admin_url;
    gw.public_dir = cfg.public_dir;
    /* Before any thread can use libcurl (the kitchen relay); reference counted. */
    int curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    if (!curl_ok) {
        oms_log_error("curl_global_init failed");
        goto out;
    }
    if (oms_discovery_start(&discovery, &cfg.disc, &err) != OMS_OK) {
        oms_log_error("cannot start service discovery", "error", err.msg);
        goto out;
    }
    if (oms_discovery_client(discovery, "orders", cfg.orders_addrs, &gw.orders, &err) != OMS_OK ||
        oms_discovery_client(discovery, "stock", cfg.stock_addrs, &gw.stock, &err) != OMS_OK) {
        oms_log_error("cannot create gRPC clients", "error", err.msg);
        goto out;
    }
    oms_admin_set_ready(ready_check, NULL);
    oms_http_config hc = {.addr = cfg.http_addr,
                          .routes = gateway_routes,
                          .nroutes = gateway_routes_count,
                          .max_body = 64 * 1024,
                          .static_dir = cfg.public_dir,
                          .threads = (int)cfg.http_threads,
                          .ud = &gw};
    char herr[256];
    if (oms_http_start(&http, &hc, herr, sizeof(herr)) != OMS_OK) {
        oms_log_error("cannot start HTTP server", "addr", cfg.http_addr, "error", herr);
        goto out;
    }
    /* Last, once it answers: with DISCOVERY=etcd a load balancer or an operator finds
     * the gateways' HTTP addresses in the registry, like every other service's. */
    if (oms_discovery_register(discovery, "gateway", cfg.http_addr, &err) != OMS_OK) {
        oms_log_error("cannot register in service discovery", "error", err.msg);
        goto out;
    }
    oms_log_info("gateway ready", "http", cfg.http_addr, "orders", cfg.orders_addrs, "stock",
                 cfg.stock_addrs);
    int sig = oms_signals_wait();
    oms_log_infof("stopping on signal %d", sig);
    exit_code = 0;
out:
    oms_discovery_stop(discovery); /* before the clients it keeps in step are freed */
    oms_http_stop(http);
    oms_grpc_client_free(gw.orders);
    oms_grpc_client_free(gw.stock);
    gw_rate_limit_free(gw.create_limit);
    if (curl_ok)
        curl_global_cleanup();
    oms_config_free(config_table, CONFIG_COUNT);
    oms_app_stop();
    return exit_code;
}
