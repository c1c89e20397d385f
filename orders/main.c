/* oms-orders: wiring only. Config -> database -> stock client -> outbox relay ->
 * gRPC server -> event consumers -> admin HTTP; then wait for SIGINT/SIGTERM and stop
 * in reverse order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc_handlers.h"
#include "oms/admin.h"
#include "oms/amqp.h"
#include "oms/app.h"
#include "oms/discovery.h"
#include "oms/db.h"
#include "oms/events.h"
#include "oms/grpc_client.h"
#include "oms/grpc_server.h"
#include "oms/http.h"
#include "oms/log.h"
#include "oms/outbox.h"
#include "oms/util.h"
#include "service.h"
#include "stock_client.h"
#include "store.h"

static struct {
    oms_app_common common;
    char *grpc_addr;
    oms_discovery_config disc;
    char *admin_addr;
    char *database_url;
    char *stock_addrs;
    long long grpc_threads;
    long long max_open_orders;
    char *payments_public_url;
} cfg;

static const oms_cfg_def config_table[] = {
    {"GRPC_ADDR", OMS_CFG_ADDR, "127.0.0.1:2000", 0, 0, NULL, &cfg.grpc_addr, NULL,
     "OrderService gRPC listen address"},
    {"ADMIN_ADDR", OMS_CFG_ADDR, "127.0.0.1:9000", 0, 0, NULL, &cfg.admin_addr, NULL,
     "/healthz /readyz /metrics listen address"},
    {"DATABASE_URL", OMS_CFG_STR, "var/orders.db", 0, 0, NULL, &cfg.database_url, NULL,
     "SQLite path, or postgres://..."},
    {"STOCK_ADDRS", OMS_CFG_STR, "127.0.0.1:2002", 0, 0, NULL, &cfg.stock_addrs, NULL,
     "stock gRPC addresses (comma list: round robin)"},
    {"GRPC_THREADS", OMS_CFG_INT, "4", 1, 64, NULL, &cfg.grpc_threads, NULL, "gRPC worker threads"},
    {"MAX_OPEN_ORDERS", OMS_CFG_INT, "5", 0, 1000000, NULL, &cfg.max_open_orders, NULL,
     "unpaid orders one customer may hold at once (0: no limit); more is 429"},
    {"PAYMENTS_PUBLIC_URL", OMS_CFG_URL, "http://localhost:8081", 0, 0, NULL,
     &cfg.payments_public_url, NULL,
     "local checkout base: the one non-https PaymentLink UpdateOrder accepts"},
    OMS_DISCOVERY_CONFIG(&cfg.disc),
    OMS_APP_LOG_CONFIG(&cfg.common),
    OMS_APP_AMQP_CONFIG(&cfg.common),
};
#define CONFIG_COUNT (sizeof(config_table) / sizeof(config_table[0]))

static oms_discovery *discovery; /* DISCOVERY=etcd: registration and resolvers */

/* The events orders consumes, each from its own durable queue. */
static const oms_event consumed[] = {OMS_EVENT_ORDER_PAID, OMS_EVENT_ORDER_COOKING,
                                     OMS_EVENT_ORDER_READY, OMS_EVENT_ORDER_CANCELLED,
                                     OMS_EVENT_ORDER_REFUNDED};
#define NCONSUMED (sizeof(consumed) / sizeof(consumed[0]))

typedef struct consumer_ctx {
    orders_service *svc;
    char queue[64];
    const char *exchange;
} consumer_ctx;

static struct {
    oms_db *db;
    oms_grpc_client *stock;
    oms_grpc_server *grpc;
    oms_outbox_relay *relay;
    oms_amqp_consumer *consumers[NCONSUMED];
    oms_http_server *admin;
} app;

static int on_event(const oms_amqp_delivery *d, void *ud)
{
    consumer_ctx *c = ud;
    oms_error err;
    oms_error_clear(&err);
    int rc =
        orders_handle_event(c->svc, c->queue, d->message_id, c->exchange, d->body, d->len, &err);
    if (rc != OMS_OK && rc != OMS_DUPLICATE)
        oms_log_warn("event not applied", "queue", c->queue, "message_id", d->message_id, "error",
                     err.msg);
    return rc;
}

static int ready_check(void *ud, char *why, size_t n)
{
    oms_error err;
    if (oms_db_ping(app.db, &err) != OMS_OK) {
        snprintf(why, n, "database: %s", err.msg);
        return OMS_UNAVAILABLE;
    }
    if (oms_grpc_client_check_health(app.stock, 500, &err) != OMS_OK) {
        snprintf(why, n, "stock: %s", err.msg);
        return OMS_UNAVAILABLE;
    }
    for (size_t i = 0; i < NCONSUMED; i++)
        if (!oms_amqp_consumer_connected(app.consumers[i])) {
            snprintf(why, n, "broker: not connected");
            return OMS_UNAVAILABLE;
        }
    return OMS_OK;
}

static const oms_http_route admin_routes[] = {OMS_ADMIN_ROUTES};

int main(int argc, char **argv)
{
    oms_app_start("orders", config_table, CONFIG_COUNT, &cfg.common, argc, argv);
    int exit_code = 1;
    oms_error err;
    oms_error_clear(&err);
    orders_service svc;
    memset(&svc, 0, sizeof(svc));
    consumer_ctx cctx[NCONSUMED];
    oms_amqp_config amqp;
    oms_app_amqp_config(&cfg.common, &amqp);

    if (orders_store_open(&app.db, cfg.database_url, &err) != OMS_OK) {
        oms_log_error("cannot open database", "url", cfg.database_url, "error", err.msg);
        goto out;
    }
    if (oms_discovery_start(&discovery, &cfg.disc, &err) != OMS_OK) {
        oms_log_error("cannot start service discovery", "error", err.msg);
        goto out;
    }
    if (oms_discovery_client(discovery, "stock", cfg.stock_addrs, &app.stock, &err) != OMS_OK) {
        oms_log_error("cannot create stock client", "error", err.msg);
        goto out;
    }
    if (oms_outbox_relay_start(&app.relay, app.db, &amqp, &err) != OMS_OK) {
        oms_log_error("cannot start outbox relay", "error", err.msg);
        goto out;
    }
    oms_retention keep;
    oms_app_retention(&cfg.common, &keep);
    oms_outbox_relay_set_retention(app.relay, &keep);
    svc.db = app.db;
    svc.max_open_orders = (int)cfg.max_open_orders;
    svc.local_checkout_url = cfg.payments_public_url;
    orders_stock_client_port(&svc.stock, app.stock);
    svc.outbox_notify = oms_outbox_relay_wake;
    svc.outbox_ud = app.relay;

    if (oms_grpc_server_start(&app.grpc, cfg.grpc_addr, orders_grpc_methods,
                              orders_grpc_methods_count, (int)cfg.grpc_threads, &svc,
                              &err) != OMS_OK) {
        oms_log_error("cannot start gRPC server", "addr", cfg.grpc_addr, "error", err.msg);
        goto out;
    }
    for (size_t i = 0; i < NCONSUMED; i++) {
        const char *ex = oms_event_exchanges[consumed[i]];
        cctx[i].svc = &svc;
        cctx[i].exchange = ex;
        snprintf(cctx[i].queue, sizeof(cctx[i].queue), "orders.%s", ex);
        oms_amqp_consumer_config cc = {
            .queue = cctx[i].queue,
            .exchanges = &cctx[i].exchange,
            .nexchanges = 1,
            .prefetch = 16,
            .max_retries = (int)cfg.common.max_retries,
            .workers = (int)cfg.common.consumer_workers,
            .retry_delay_ms = (int)cfg.common.retry_delay_ms,
            .fn = on_event,
            .ud = &cctx[i],
        };
        if (oms_amqp_consumer_start(&app.consumers[i], &amqp, &cc, &err) != OMS_OK) {
            oms_log_error("cannot start consumer", "queue", cctx[i].queue, "error", err.msg);
            goto out;
        }
    }
    oms_admin_set_ready(ready_check, NULL);
    if (oms_app_ready_watch_start(app.grpc, &err) != OMS_OK) {
        oms_log_error("cannot start the readiness watcher", "error", err.msg);
        goto out;
    }
    oms_http_config hc = {.addr = cfg.admin_addr,
                          .routes = admin_routes,
                          .nroutes = sizeof(admin_routes) / sizeof(admin_routes[0])};
    char herr[256];
    if (oms_http_start(&app.admin, &hc, herr, sizeof(herr)) != OMS_OK) {
        oms_log_error("cannot start admin HTTP", "addr", cfg.admin_addr, "error", herr);
        goto out;
    }
    /* Last, once everything answers: DISCOVERY=etcd clients start choosing us now. */
    if (oms_discovery_register(discovery, "orders", cfg.grpc_addr, &err) != OMS_OK) {
        oms_log_error("cannot register in service discovery", "error", err.msg);
        goto out;
    }
    oms_log_info("orders ready", "grpc", cfg.grpc_addr, "admin", cfg.admin_addr, "stock",
                 cfg.stock_addrs);
    int sig = oms_signals_wait();
    oms_log_infof("stopping on signal %d", sig);
    exit_code = 0;
out:
    oms_discovery_stop(discovery); /* first: callers stop choosing us while we drain */
    oms_app_ready_watch_stop();    /* reads the consumers, stock client and database */
    oms_http_stop(app.admin);
    oms_grpc_server_stop(app.grpc);
    for (size_t i = 0; i < NCONSUMED; i++)
        oms_amqp_consumer_stop(app.consumers[i]);
    oms_outbox_relay_stop(app.relay);
    oms_grpc_client_free(app.stock);
    if (app.db)
        oms_db_close(app.db);
    oms_config_free(config_table, CONFIG_COUNT);
    oms_app_stop();
    return exit_code;
}
