/* oms-stock, as a declaration (oms/app.h runs it): StockService over gRPC, GET /stock on
 * the admin port, the catalog loaded at the first start and the reservation expiry
 * ticker. No broker: stock publishes and consumes no events. The rules live in
 * service.c. */
#include "grpc_handlers.h"
#include "http_routes.h"
#include "oms/app.h"
#include "oms/log.h"
#include "oms/util.h"
#include "service.h"
#include "store.h"

static struct {
    char *catalog_file;
    long long reservation_ttl_s;
    long long checkout_ttl_s;
    long long sweep_ms;
    long long grpc_threads;
} cfg;

static const oms_cfg_def config[] = {
    OMS_CFG_STR_ROW("CATALOG_FILE", "data/catalog.json", &cfg.catalog_file,
                    "catalog loaded at the first start (empty products table)"),
    OMS_CFG_INT_ROW("RESERVATION_TTL", "2100", 1, 604800, &cfg.reservation_ttl_s,
                    "seconds an unpaid reservation holds stock: a safety net, later than "
                    "CHECKOUT_TTL"),
    OMS_CFG_INT_ROW("CHECKOUT_TTL", "1800", 1, 86400, &cfg.checkout_ttl_s,
                    "the checkout deadline (payments' setting, read here to check "
                    "RESERVATION_TTL)"),
    OMS_CFG_INT_ROW("RESERVATION_SWEEP_MS", "1000", 10, 3600000, &cfg.sweep_ms,
                    "how often expired reservations are released (ms)"),
    OMS_CFG_INT_ROW("GRPC_THREADS", "4", 1, 256, &cfg.grpc_threads, "gRPC worker threads"),
};

static stock_service *svc;

/* A reservation must outlive its checkout session: released earlier, the stock could
 * be sold again while the first customer can still pay. */
static int stock_prepare(oms_service_rt *rt, oms_error *err)
{
    if (cfg.reservation_ttl_s <= cfg.checkout_ttl_s)
        oms_app_config_fail("stock",
                            "RESERVATION_TTL=%lld: must be later than CHECKOUT_TTL (%lld s); it is"
                            " only a safety net behind the checkout deadline",
                            cfg.reservation_ttl_s, cfg.checkout_ttl_s);
    return OMS_OK;
}

/* The catalog first (the service reads the levels for its gauges), then the service. */
static int stock_start(oms_service_rt *rt, oms_error *err)
{
    oms_error e;
    oms_error_clear(&e);
    size_t loaded = 0;
    int rc = stock_load_catalog(rt->db, cfg.catalog_file, &loaded, &e);
    if (rc != OMS_OK)
        return oms_error_set(err, rc, "cannot load the catalog: %s", e.msg);
    if (loaded > 0)
        oms_log_infof("catalog %s loaded: %zu products", cfg.catalog_file, loaded);
    rc = stock_service_new(&svc, rt->db, cfg.reservation_ttl_s * 1000, &e);
    if (rc != OMS_OK)
        return oms_error_set(err, rc, "cannot start the stock service: %s", e.msg);
    stock_service_register_metrics(svc);
    rt->ud = svc;
    return OMS_OK;
}

static void stock_stop(oms_service_rt *rt)
{
    stock_service_free(svc);
}

/* Releases reservations whose RESERVATION_TTL has passed. */
static int expire_tick(void *ud, oms_error *err)
{
    return stock_expire_due(ud, oms_now_ms(), NULL, err);
}

static const oms_service_def stock = {
    .name = "stock",
    .config = config,
    .nconfig = OMS_NELEM(config),
    .prepare = {stock_prepare, NULL},
    .start = {stock_start, stock_stop},
    .db_open = stock_store_open,
    .grpc = {"127.0.0.1:2002", "gRPC listen address (StockService)", stock_grpc_methods,
             &stock_grpc_nmethods, &cfg.grpc_threads},
    .http = {"ADMIN_ADDR", "127.0.0.1:9002", "admin HTTP: /healthz /readyz /metrics /stock",
             stock_http_routes, &stock_http_nroutes},
    .tickers = {{"reservation expiry", &cfg.sweep_ms, expire_tick}},
};

int main(int argc, char **argv)
{
    return oms_service_run(&stock, argc, argv);
}
