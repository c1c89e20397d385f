/* oms-kitchen: wiring only. Config -> database (cooking tickets of a previous run
 * queued again) -> outbox relay -> stations -> order.paid consumer -> gRPC health
 * server -> admin HTTP; then wait for SIGINT/SIGTERM and stop in reverse order of
 * dependency. Stations start before the consumer so that every new ticket has
 * someone to wake, and stop after it so no delivery wakes a freed station. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer.h"
#include "http_routes.h"
#include "oms/admin.h"
#include "oms/amqp.h"
#include "oms/app.h"
#include "oms/discovery.h"
#include "oms/db.h"
#include "oms/grpc_server.h"
#include "oms/http.h"
#include "oms/log.h"
#include "oms/outbox.h"
#include "oms/util.h"
#include "service.h"
#include "stations.h"
#include "store.h"

static struct {
    oms_app_common common;
    char *grpc_addr;
    oms_discovery_config disc;
    char *admin_addr;
    char *database_url;
    long long stations;
    long long cook_ms;
} cfg;

static const oms_cfg_def config_table[] = {
    {"GRPC_ADDR", OMS_CFG_ADDR, "127.0.0.1:2003", 0, 0, NULL, &cfg.grpc_addr, NULL,
     "gRPC listen address (grpc.health.v1 only)"},
    {"ADMIN_ADDR", OMS_CFG_ADDR, "127.0.0.1:9003", 0, 0, NULL, &cfg.admin_addr, NULL,
     "/healthz /readyz /metrics /tickets listen address"},
    {"DATABASE_URL", OMS_CFG_STR, "var/kitchen.db", 0, 0, NULL, &cfg.database_url, NULL,
     "SQLite path, or postgres://..."},
    {"KITCHEN_STATIONS", OMS_CFG_INT, "2", 1, 64, NULL, &cfg.stations, NULL,
     "orders cooked at once"},
    {"KITCHEN_COOK_MS", OMS_CFG_INT, "3000", 0, 600000, NULL, &cfg.cook_ms, NULL,
     "cooking time of one order in ms (0 in tests)"},
    OMS_DISCOVERY_CONFIG(&cfg.disc),
    OMS_APP_LOG_CONFIG(&cfg.common),
    OMS_APP_AMQP_CONFIG(&cfg.common),
};
#define CONFIG_COUNT (sizeof(config_table) / sizeof(config_table[0]))

static oms_discovery *discovery; /* DISCOVERY=etcd: registration and resolvers */

static struct {
    kitchen_service svc;
    oms_db *db;
    oms_outbox_relay *relay;
    kitchen_stations *stations;
    oms_amqp_consumer *consumer;
    oms_grpc_server *grpc;
    oms_http_server *admin;
} app;

static void stations_wake(void *ud)
{
    kitchen_stations_wake(ud);
}

/* /readyz: the database answers and the order.paid consumer is connected. */
static int ready_check(void *ud, char *why, size_t n)
{
    oms_error err;
    oms_error_clear(&err);
    if (oms_db_ping(app.db, &err) != OMS_OK) {
        snprintf(why, n, "database: %s", err.msg);
        return OMS_UNAVAILABLE;
    }
    if (!oms_amqp_consumer_connected(app.consumer)) {
        snprintf(why, n, "broker: consumer of %s not connected", KITCHEN_PAID_QUEUE);
        return OMS_UNAVAILABLE;
    }
    return OMS_OK;
}

int main(int argc, char **argv)
{
    oms_app_start("kitchen", config_table, CONFIG_COUNT, &cfg.common, argc, argv);
    int exit_code = 1;
    oms_error err;
    oms_error_clear(&err);
    oms_amqp_config amqp;
    oms_app_amqp_config(&cfg.common, &amqp);

    if (kitchen_store_open(&app.db, cfg.database_url, &err) != OMS_OK) {
        oms_log_error("cannot open database", "url", cfg.database_url, "error", err.msg);
        goto out;
    }
    kitchen_service_init(&app.svc, app.db);
    long long requeued = 0;
    if (kitchen_requeue_cooking(&app.svc, kitchen_stale_cutoff(&app.svc, cfg.cook_ms, oms_now_ms()),
                                &requeued, &err) != OMS_OK) {
        oms_log_error("cannot queue again the tickets left cooking", "error", err.msg);
        goto out;
    }
    kitchen_metrics_register(&app.svc);
    if (oms_outbox_relay_start(&app.relay, app.db, &amqp, &err) != OMS_OK) {
        oms_log_error("cannot start outbox relay", "error", err.msg);
        goto out;
    }
    oms_retention keep;
    oms_app_retention(&cfg.common, &keep);
    oms_outbox_relay_set_retention(app.relay, &keep);
    app.svc.outbox_notify = oms_outbox_relay_wake;
    app.svc.outbox_ud = app.relay;

    if (kitchen_stations_start(&app.stations, &app.svc, (int)cfg.stations, cfg.cook_ms, &err) !=
        OMS_OK) {
        oms_log_error("cannot start stations", "error", err.msg);
        goto out;
    }
    app.svc.ticket_notify = stations_wake;
    app.svc.ticket_ud = app.stations;

    kitchen_consumer_config kc = {
        .prefetch = 16,
        .max_retries = (int)cfg.common.max_retries,
        .workers = (int)cfg.common.consumer_workers,
        .retry_delay_ms = (int)cfg.common.retry_delay_ms,
    };
    if (kitchen_consumer_start(&app.consumer, &amqp, &kc, &app.svc, &err) != OMS_OK) {
        oms_log_error("cannot start consumer", "queue", KITCHEN_PAID_QUEUE, "error", err.msg);
        goto out;
    }
    /* No kitchen methods over gRPC: the server exists for grpc.health.v1, which every
     * service answers (README "Observability"). */
    if (oms_grpc_server_start(&app.grpc, cfg.grpc_addr, NULL, 0, 1, NULL, &err) != OMS_OK) {
        oms_log_error("cannot start gRPC server", "addr", cfg.grpc_addr, "error", err.msg);
        goto out;
    }
    oms_admin_set_ready(ready_check, NULL);
    if (oms_app_ready_watch_start(app.grpc, &err) != OMS_OK) {
        oms_log_error("cannot start the readiness watcher", "error", err.msg);
        goto out;
    }
    oms_http_config hc = {.addr = cfg.admin_addr,
                          .routes = kitchen_http_routes,
                          .nroutes = kitchen_http_nroutes,
                          .ud = &app.svc};
    char herr[256];
    if (oms_http_start(&app.admin, &hc, herr, sizeof(herr)) != OMS_OK) {
        oms_log_error("cannot start admin HTTP", "addr", cfg.admin_addr, "error", herr);
        goto out;
    }
    if (oms_discovery_start(&discovery, &cfg.disc, &err) != OMS_OK) {
        oms_log_error("cannot start service discovery", "error", err.msg);
        goto out;
    }
    /* Last, once everything answers: DISCOVERY=etcd clients start choosing us now. */
    if (oms_discovery_register(discovery, "kitchen", cfg.grpc_addr, &err) != OMS_OK) {
        oms_log_error("cannot register in service discovery", "error", err.msg);
        goto out;
    }
    char nstations[24], cook[24];
    snprintf(nstations, sizeof(nstations), "%lld", cfg.stations);
    snprintf(cook, sizeof(cook), "%lld", cfg.cook_ms);
    oms_log_info("kitchen ready", "grpc", cfg.grpc_addr, "admin", cfg.admin_addr, "stations",
                 nstations, "cook_ms", cook);
    int sig = oms_signals_wait();
    oms_log_infof("stopping on signal %d", sig);
    exit_code = 0;
out:
    oms_discovery_stop(discovery); /* first: callers stop choosing us while we drain */
    oms_app_ready_watch_stop();    /* reads the consumer and database */
    oms_http_stop(app.admin);
    oms_amqp_consumer_stop(app.consumer);
    kitchen_stations_stop(app.stations);
    oms_outbox_relay_stop(app.relay);
    oms_grpc_server_stop(app.grpc);
    if (app.db)
        oms_db_close(app.db);
    oms_config_free(config_table, CONFIG_COUNT);
    oms_app_stop();
    return exit_code;
}
