/* oms-payments: wiring only. Config -> processor -> database -> outbox relay ->
 * orders and stock clients -> event consumers -> checkout deadline ticker -> gRPC
 * health server -> HTTP (webhook, local checkout in local mode, admin); then wait for
 * SIGINT/SIGTERM and stop in reverse order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_routes.h"
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
#include "oms/ticker.h"
#include "oms/util.h"
#include "orders_client.h"
#include "processor/processor.h"
#include "service.h"
#include "stock_client.h"
#include "store.h"

static struct {
    oms_app_common common;
    char *grpc_addr;
    oms_discovery_config disc;
    char *http_addr;
    char *database_url;
    char *orders_addrs;
    char *stock_addrs;
    long long checkout_ttl_s;
    long long checkout_sweep_ms;
    char *processor;
    char *stripe_key;
    char *stripe_api_base;
    char *webhook_secret;
    char *gateway_url;
    char *public_url;
} cfg;

static const oms_cfg_def config_table[] = {
    {"GRPC_ADDR", OMS_CFG_ADDR, "127.0.0.1:2001", 0, 0, NULL, &cfg.grpc_addr, NULL,
     "gRPC listen address (grpc.health.v1 only)"},
    {"PAYMENTS_HTTP_ADDR", OMS_CFG_ADDR, "127.0.0.1:8081", 0, 0, NULL, &cfg.http_addr, NULL,
     "webhook, local checkout and /healthz /readyz /metrics listen address"},
    {"DATABASE_URL", OMS_CFG_STR, "var/payments.db", 0, 0, NULL, &cfg.database_url, NULL,
     "SQLite path, or postgres://..."},
    {"ORDERS_ADDRS", OMS_CFG_STR, "127.0.0.1:2000", 0, 0, NULL, &cfg.orders_addrs, NULL,
     "orders gRPC addresses (comma list: round robin)"},
    {"STOCK_ADDRS", OMS_CFG_STR, "127.0.0.1:2002", 0, 0, NULL, &cfg.stock_addrs, NULL,
     "stock gRPC addresses: a payment commits its order's stock, a deadline releases it"},
    {"CHECKOUT_TTL", OMS_CFG_INT, "1800", 1, 86400, NULL, &cfg.checkout_ttl_s, NULL,
     "seconds a checkout can be paid; then the order is cancelled (stripe: 1800..86400)"},
    {"CHECKOUT_SWEEP_MS", OMS_CFG_INT, "1000", 10, 3600000, NULL, &cfg.checkout_sweep_ms, NULL,
     "how often checkouts past their deadline are closed (ms)"},
    {"PAYMENT_PROCESSOR", OMS_CFG_ENUM, "local", 0, 0, "local|stripe", &cfg.processor, NULL,
     "local (offline checkout page) or stripe (Stripe Checkout)"},
    {"STRIPE_KEY", OMS_CFG_STR, "", 0, 0, NULL, &cfg.stripe_key, NULL,
     "Stripe secret key, required with stripe (never logged)"},
    {"STRIPE_API_BASE", OMS_CFG_URL, "https://api.stripe.com", 0, 0, NULL, &cfg.stripe_api_base,
     NULL, "Stripe API base URL"},
    {"STRIPE_WEBHOOK_SECRET", OMS_CFG_STR, "whsec_local_dev", 0, 0, NULL, &cfg.webhook_secret, NULL,
     "webhook signing secret (never logged); stripe mode needs a real whsec_ one"},
    {"GATEWAY_HTTP_ADDR", OMS_CFG_URL, "http://localhost:8080", 0, 0, NULL, &cfg.gateway_url, NULL,
     "public gateway URL for the success/cancel pages"},
    {"PAYMENTS_PUBLIC_URL", OMS_CFG_URL, "http://localhost:8081", 0, 0, NULL, &cfg.public_url, NULL,
     "public URL of this service (local checkout links)"},
    OMS_DISCOVERY_CONFIG(&cfg.disc),
    OMS_APP_LOG_CONFIG(&cfg.common),
    OMS_APP_AMQP_CONFIG(&cfg.common),
};
#define CONFIG_COUNT (sizeof(config_table) / sizeof(config_table[0]))

static oms_discovery *discovery; /* DISCOVERY=etcd: registration and resolvers */

typedef int (*event_fn)(payments_service *, const char *, const char *, const char *, size_t,
                        oms_error *);

typedef struct consumer_ctx {
    payments_service *svc;
    const char *queue;
    const char *exchange;
    event_fn fn;
} consumer_ctx;

#define NCONSUMERS 3

static struct {
    const payment_processor *processor;
    int processor_ready;
    oms_db *db;
    oms_outbox_relay *relay;
    oms_grpc_client *orders;
    oms_grpc_client *stock;
    oms_amqp_consumer *consumers[NCONSUMERS];
    oms_ticker *deadline;
    oms_grpc_server *grpc;
    oms_http_server *http;
} app;

static int on_event(const oms_amqp_delivery *d, void *ud)
{
    consumer_ctx *c = ud;
    oms_error err;
    oms_error_clear(&err);
    int rc = c->fn(c->svc, c->queue, d->message_id, d->body, d->len, &err);
    if (rc != OMS_OK && rc != OMS_DUPLICATE)
        oms_log_warn("event not applied", "queue", c->queue, "message_id", d->message_id, "error",
                     err.msg);
    return rc;
}

static int ready_check(void *ud, char *why, size_t n)
{
    oms_error err;
    oms_error_clear(&err);
    if (oms_db_ping(app.db, &err) != OMS_OK) {
        snprintf(why, n, "database: %s", err.msg);
        return OMS_UNAVAILABLE;
    }
    for (size_t i = 0; i < NCONSUMERS; i++)
        if (!oms_amqp_consumer_connected(app.consumers[i])) {
            snprintf(why, n, "broker: not connected");
            return OMS_UNAVAILABLE;
        }
    if (oms_grpc_client_check_health(app.orders, 500, &err) != OMS_OK) {
        snprintf(why, n, "orders: %s", err.msg);
        return OMS_UNAVAILABLE;
    }
    if (oms_grpc_client_check_health(app.stock, 500, &err) != OMS_OK) {
        snprintf(why, n, "stock: %s", err.msg);
        return OMS_UNAVAILABLE;
    }
    return OMS_OK;
}

static int deadline_tick(void *ud, oms_error *err)
{
    return payments_expire_due(ud, NULL, err);
}

/* Secrets anyone can read in our repository or in Stripe's docs: with one of them a
 * stranger could sign a "payment completed" event. */
static const char *const public_secrets[] = {"whsec_local_dev", "whsec_test_secret", "whsec_test",
                                             "whsec_secret",    "whsec_changeme",    "whsec_"};

/* Stripe mode takes real money: refuse to start with a secret that signs nothing real,
 * or with a deadline Stripe would refuse (expires_at must be 30 min to 24 h away). */
static void stripe_mode_check(void)
{
    const char *sec = cfg.webhook_secret;
    if (!sec[0] || strncmp(sec, "whsec_", 6) != 0)
        oms_app_config_fail("payments", "STRIPE_WEBHOOK_SECRET: PAYMENT_PROCESSOR=stripe needs "
                                        "the endpoint's signing secret (whsec_...) from Stripe");
    for (size_t i = 0; i < sizeof(public_secrets) / sizeof(public_secrets[0]); i++)
        if (strcmp(sec, public_secrets[i]) == 0)
            oms_app_config_fail("payments",
                                "STRIPE_WEBHOOK_SECRET: a published example secret; set the "
                                "endpoint's signing secret from Stripe");
    if (cfg.checkout_ttl_s < 1800 || cfg.checkout_ttl_s > 86400)
        oms_app_config_fail("payments", "CHECKOUT_TTL=%lld: Stripe accepts 1800 to 86400 seconds",
                            cfg.checkout_ttl_s);
}

int main(int argc, char **argv)
{
    oms_app_start("payments", config_table, CONFIG_COUNT, &cfg.common, argc, argv);
    int local_mode = strcmp(cfg.processor, "local") == 0;
    if (!local_mode)
        stripe_mode_check();
    int exit_code = 1;
    oms_error err;
    oms_error_clear(&err);
    oms_amqp_config amqp;
    oms_app_amqp_config(&cfg.common, &amqp);
    payments_processor_config pcfg = {
        .gateway_url = cfg.gateway_url,
        .public_url = cfg.public_url,
        .stripe_key = cfg.stripe_key,
        .stripe_api = cfg.stripe_api_base,
    };
    payments_service svc;
    memset(&svc, 0, sizeof(svc));
    consumer_ctx cctx[NCONSUMERS] = {
        {&svc, "payments.order.created", "order.created", payments_handle_order_created},
        {&svc, "payments.order.cancelled", "order.cancelled", payments_handle_order_cancelled},
        {&svc, "payments.order.refunded", "order.refunded", payments_handle_order_refunded},
    };

    app.processor = payments_processor_find(cfg.processor);
    if (!app.processor) { /* the config enum makes this unreachable; stay safe anyway */
        oms_log_error("unknown payment processor", "PAYMENT_PROCESSOR", cfg.processor);
        goto out;
    }
    if (app.processor->init && app.processor->init(&pcfg, &err) != OMS_OK) {
        oms_log_error("cannot start payment processor", "processor", app.processor->name, "error",
                      err.msg);
        goto out;
    }
    app.processor_ready = 1;
    if (payments_store_open(&app.db, cfg.database_url, &err) != OMS_OK) {
        oms_log_error("cannot open database", "url", cfg.database_url, "error", err.msg);
        goto out;
    }
    if (oms_outbox_relay_start(&app.relay, app.db, &amqp, &err) != OMS_OK) {
        oms_log_error("cannot start outbox relay", "error", err.msg);
        goto out;
    }
    oms_retention keep;
    oms_app_retention(&cfg.common, &keep);
    oms_outbox_relay_set_retention(app.relay, &keep);
    if (oms_discovery_start(&discovery, &cfg.disc, &err) != OMS_OK) {
        oms_log_error("cannot start service discovery", "error", err.msg);
        goto out;
    }
    if (oms_discovery_client(discovery, "orders", cfg.orders_addrs, &app.orders, &err) != OMS_OK) {
        oms_log_error("cannot create orders client", "error", err.msg);
        goto out;
    }
    if (oms_discovery_client(discovery, "stock", cfg.stock_addrs, &app.stock, &err) != OMS_OK) {
        oms_log_error("cannot create stock client", "error", err.msg);
        goto out;
    }
    svc.db = app.db;
    svc.processor = app.processor;
    svc.checkout_ttl_ms = cfg.checkout_ttl_s * 1000;
    payments_stock_client_port(&svc.stock, app.stock);
    svc.pcfg = &pcfg;
    payments_orders_client_port(&svc.orders, app.orders);
    svc.webhook_secret = cfg.webhook_secret;
    svc.gateway_url = cfg.gateway_url;
    svc.outbox_notify = oms_outbox_relay_wake;
    svc.outbox_ud = app.relay;

    for (size_t i = 0; i < NCONSUMERS; i++) {
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
    if (oms_ticker_start(&app.deadline, "checkout deadline", cfg.checkout_sweep_ms, deadline_tick,
                         &svc, &err) != OMS_OK) {
        oms_log_error("cannot start the checkout deadline ticker", "error", err.msg);
        goto out;
    }
    /* No methods of its own: the server exists for grpc.health.v1. */
    if (oms_grpc_server_start(&app.grpc, cfg.grpc_addr, NULL, 0, 1, NULL, &err) != OMS_OK) {
        oms_log_error("cannot start gRPC server", "addr", cfg.grpc_addr, "error", err.msg);
        goto out;
    }
    oms_admin_set_ready(ready_check, NULL);
    if (oms_app_ready_watch_start(app.grpc, &err) != OMS_OK) {
        oms_log_error("cannot start the readiness watcher", "error", err.msg);
        goto out;
    }
    /* The local checkout pages exist only in local mode: in stripe mode they would let
     * anyone "pay" a Stripe session for free. */
    oms_http_config hc = {.addr = cfg.http_addr,
                          .routes =
                              local_mode ? payments_http_routes_local : payments_http_routes_stripe,
                          .nroutes = local_mode ? payments_http_routes_local_count
                                                : payments_http_routes_stripe_count,
                          .max_body = 64 * 1024,
                          .ud = &svc};
    char herr[256];
    if (oms_http_start(&app.http, &hc, herr, sizeof(herr)) != OMS_OK) {
        oms_log_error("cannot start HTTP server", "addr", cfg.http_addr, "error", herr);
        goto out;
    }
    /* Last, once everything answers: DISCOVERY=etcd clients start choosing us now. */
    if (oms_discovery_register(discovery, "payments", cfg.grpc_addr, &err) != OMS_OK) {
        oms_log_error("cannot register in service discovery", "error", err.msg);
        goto out;
    }
    oms_log_info("payments ready", "grpc", cfg.grpc_addr, "http", cfg.http_addr, "processor",
                 app.processor->name, "orders", cfg.orders_addrs);
    int sig = oms_signals_wait();
    oms_log_infof("stopping on signal %d", sig);
    exit_code = 0;
out:
    oms_discovery_stop(discovery); /* first: callers stop choosing us while we drain */
    /* Reverse order: stop taking requests and messages before what they use goes. */
    oms_app_ready_watch_stop(); /* reads the consumers, orders client and database */
    oms_http_stop(app.http);
    oms_grpc_server_stop(app.grpc);
    oms_ticker_stop(app.deadline);
    for (size_t i = 0; i < NCONSUMERS; i++)
        oms_amqp_consumer_stop(app.consumers[i]);
    oms_grpc_client_free(app.orders);
    oms_grpc_client_free(app.stock);
    oms_outbox_relay_stop(app.relay);
    if (app.db)
        oms_db_close(app.db);
    if (app.processor_ready && app.processor->cleanup)
        app.processor->cleanup();
    oms_config_free(config_table, CONFIG_COUNT);
    oms_app_stop();
    return exit_code;
}
