/* oms-stock: wiring only. Configuration, logging, database and catalog, then the
 * reservation expiry ticker, the gRPC server and the admin HTTP server; on SIGINT/SIGTERM the
 * same in reverse. The rules live in service.c. */
#include <string.h>

#include "grpc_handlers.h"
#include "http_routes.h"
#include "oms/admin.h"
#include "oms/app.h"
#include "oms/discovery.h"
#include "oms/config.h"
#include "oms/db.h"
#include "oms/grpc_server.h"
#include "oms/http.h"
#include "oms/log.h"
#include "oms/ticker.h"
#include "oms/util.h"
#include "service.h"
#include "store.h"

typedef struct stock_config {
    char *grpc_addr;
    oms_discovery_config disc;
    char *admin_addr;
    char *database_url;
    char *catalog_file;
    long long reservation_ttl_s;
    long long checkout_ttl_s;
    long long sweep_ms;
    long long grpc_threads;
} stock_config;

static stock_config cfg;
static oms_app_common app; /* only its logging entries are used: stock needs no broker */

static const oms_cfg_def config_defs[] = {
    {"GRPC_ADDR", OMS_CFG_ADDR, "127.0.0.1:2002", 0, 0, NULL, &cfg.grpc_addr, NULL,
     "gRPC listen address (StockService)"},
    {"ADMIN_ADDR", OMS_CFG_ADDR, "127.0.0.1:9002", 0, 0, NULL, &cfg.admin_addr, NULL,
     "admin HTTP: /healthz /readyz /metrics /stock"},
    {"DATABASE_URL", OMS_CFG_STR, "var/stock.db", 0, 0, NULL, &cfg.database_url, NULL,
     "SQLite path (or sqlite:PATH) or postgres:// url"},
    {"CATALOG_FILE", OMS_CFG_STR, "data/catalog.json", 0, 0, NULL, &cfg.catalog_file, NULL,
     "catalog loaded at the first start (empty products table)"},
    {"RESERVATION_TTL", OMS_CFG_INT, "2100", 1, 604800, NULL, &cfg.reservation_ttl_s, NULL,
     "seconds an unpaid reservation holds stock: a safety net, later than CHECKOUT_TTL"},
    {"CHECKOUT_TTL", OMS_CFG_INT, "1800", 1, 86400, NULL, &cfg.checkout_ttl_s, NULL,
     "the checkout deadline (payments' setting, read here to check RESERVATION_TTL)"},
    {"RESERVATION_SWEEP_MS", OMS_CFG_INT, "1000", 10, 3600000, NULL, &cfg.sweep_ms, NULL,
     "how often expired reservations are released (ms)"},
    {"GRPC_THREADS", OMS_CFG_INT, "4", 1, 256, NULL, &cfg.grpc_threads, NULL,
     "gRPC worker threads"},
    OMS_DISCOVERY_CONFIG(&cfg.disc),
    OMS_APP_LOG_CONFIG(&app),
};

#define NDEFS (sizeof(config_defs) / sizeof(config_defs[0]))

static oms_discovery *discovery; /* registers this instance when DISCOVERY=etcd */

/* Releases reservations whose RESERVATION_TTL has passed (the ticker's period). */
static int expire_tick(void *ud, oms_error *err)
{
    return stock_expire_due(ud, oms_now_ms(), NULL, err);
}

int main(int argc, char **argv)
{
    /* Blocks SIGINT/SIGTERM first (every thread started below inherits the mask, so
     * the signals reach oms_signals_wait only), handles --help, loads the table (a bad
     * value: one line on stderr, exit 2) and sets up the logger. */
    oms_app_start("stock", config_defs, NDEFS, &app, argc, argv);
    /* A reservation must outlive its checkout session: released earlier, the stock
     * could be sold again while the first customer can still pay. */
    if (cfg.reservation_ttl_s <= cfg.checkout_ttl_s)
        oms_app_config_fail("stock",
                            "RESERVATION_TTL=%lld: must be later than CHECKOUT_TTL (%lld s); it is"
                            " only a safety net behind the checkout deadline",
                            cfg.reservation_ttl_s, cfg.checkout_ttl_s);

    int status = 1;
    struct oms_db *db = NULL;
    stock_service *svc = NULL;
    oms_ticker *expiry = NULL;
    oms_grpc_server *grpc = NULL;
    oms_http_server *http = NULL;
    oms_error err;
    oms_error_clear(&err);

    if (stock_store_open(&db, cfg.database_url, &err) != OMS_OK) {
        oms_log_errorf("cannot open database %s: %s", cfg.database_url, err.msg);
        goto out;
    }
    size_t loaded = 0;
    if (stock_load_catalog(db, cfg.catalog_file, &loaded, &err) != OMS_OK) {
        oms_log_errorf("cannot load the catalog: %s", err.msg);
        goto out;
    }
    if (loaded > 0)
        oms_log_infof("catalog %s loaded: %zu products", cfg.catalog_file, loaded);
    if (stock_service_new(&svc, db, cfg.reservation_ttl_s * 1000, &err) != OMS_OK) {
        oms_log_errorf("cannot start the stock service: %s", err.msg);
        goto out;
    }
    stock_service_register_metrics(svc);
    if (oms_ticker_start(&expiry, "reservation expiry", cfg.sweep_ms, expire_tick, svc, &err) !=
        OMS_OK) {
        oms_log_errorf("cannot start the expiry sweeper: %s", err.msg);
        goto out;
    }
    if (oms_grpc_server_start(&grpc, cfg.grpc_addr, stock_grpc_methods, stock_grpc_nmethods,
                              (int)cfg.grpc_threads, svc, &err) != OMS_OK) {
        oms_log_errorf("cannot start gRPC on %s: %s", cfg.grpc_addr, err.msg);
        goto out;
    }
    oms_admin_set_ready(stock_http_ready, svc);
    if (oms_app_ready_watch_start(grpc, &err) != OMS_OK) {
        oms_log_errorf("cannot start the readiness watcher: %s", err.msg);
        goto out;
    }
    oms_http_config hc;
    memset(&hc, 0, sizeof(hc));
    hc.addr = cfg.admin_addr;
    hc.routes = stock_http_routes;
    hc.nroutes = stock_http_nroutes;
    hc.ud = svc;
    char herr[256] = "";
    if (oms_http_start(&http, &hc, herr, sizeof(herr)) != OMS_OK) {
        oms_log_errorf("cannot start admin HTTP on %s: %s", cfg.admin_addr, herr);
        goto out;
    }

    if (oms_discovery_start(&discovery, &cfg.disc, &err) != OMS_OK) {
        oms_log_error("cannot start service discovery", "error", err.msg);
        goto out;
    }
    /* Last, once everything answers: DISCOVERY=etcd clients start choosing us now. */
    if (oms_discovery_register(discovery, "stock", cfg.grpc_addr, &err) != OMS_OK) {
        oms_log_error("cannot register in service discovery", "error", err.msg);
        goto out;
    }
    oms_log_info("stock ready", "grpc", cfg.grpc_addr, "admin", cfg.admin_addr, "database",
                 oms_db_driver_name(db));
    int sig = oms_signals_wait();
    oms_log_infof("signal %d: shutting down", sig);
    status = 0;

out:
    oms_discovery_stop(discovery); /* first: callers stop choosing us while we drain */
    /* Reverse order of start; every stop accepts NULL. HTTP first: it renders the
     * gauges that read svc. */
    oms_app_ready_watch_stop(); /* reads svc */
    oms_http_stop(http);
    oms_grpc_server_stop(grpc);
    oms_ticker_stop(expiry);
    oms_admin_set_ready(NULL, NULL);
    stock_service_free(svc);
    stock_store_close(db);
    if (status == 0)
        oms_log_info("stock stopped");
    oms_config_free(config_defs, NDEFS);
    oms_app_stop();
    return status;
}
