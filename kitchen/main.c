/* oms-kitchen, as a declaration (oms/app.h runs it): order.paid becomes a ticket
 * (consumer.c), stations cook the tickets and announce order.cooking and order.ready
 * through the outbox, and the admin port shows the tickets. gRPC serves
 * grpc.health.v1 only, which every service answers. The stations start before the
 * consumer, so every new ticket has someone to wake, and stop after it, so no delivery
 * wakes a freed station. */
#include <stdio.h>

#include "consumer.h"
#include "http_routes.h"
#include "oms/app.h"
#include "oms/log.h"
#include "oms/util.h"
#include "service.h"
#include "stations.h"
#include "store.h"

static struct {
    long long stations;
    long long cook_ms;
    long long sla_ms;
    long long pickup_window_s;
    long long late_scan_ms;
} cfg;

static const oms_cfg_def config[] = {
    OMS_CFG_INT_ROW("KITCHEN_STATIONS", "2", 1, 64, &cfg.stations, "orders cooked at once"),
    OMS_CFG_INT_ROW("KITCHEN_COOK_MS", "3000", 0, 600000, &cfg.cook_ms,
                    "cooking time of one order in ms (0 in tests)"),
    OMS_CFG_INT_ROW("KITCHEN_SLA_MS", "600000", 0, 86400000, &cfg.sla_ms,
                    "a ticket queued or cooking longer than this is late (0: never)"),
    OMS_CFG_INT_ROW("PICKUP_WINDOW", "7200", 0, 604800, &cfg.pickup_window_s,
                    "seconds a ready order may wait for pick-up before it is flagged (0: never)"),
    OMS_CFG_INT_ROW("KITCHEN_LATE_SCAN_MS", "5000", 100, 600000, &cfg.late_scan_ms,
                    "how often tickets are checked for lateness (ms)"),
};

static kitchen_service svc;
static kitchen_stations *stations;

static void stations_wake(void *ud)
{
    kitchen_stations_wake(ud);
}

/* Tickets a previous run left cooking go back to the queue, then the stations start. */
static int kitchen_start(oms_service_rt *rt, oms_error *err)
{
    oms_error e;
    oms_error_clear(&e);
    kitchen_service_init(&svc, rt->db);
    svc.sla_ms = cfg.sla_ms;
    svc.pickup_window_ms = cfg.pickup_window_s * 1000;
    long long requeued = 0;
    long long cutoff = kitchen_stale_cutoff(&svc, cfg.cook_ms, oms_now_ms());
    int rc = kitchen_requeue_cooking(&svc, cutoff, &requeued, &e);
    if (rc != OMS_OK)
        return oms_error_set(err, rc, "cannot queue again the tickets left cooking: %s", e.msg);
    kitchen_metrics_register(&svc);
    svc.outbox_notify = oms_outbox_relay_wake;
    svc.outbox_ud = rt->relay;
    rc = kitchen_stations_start(&stations, &svc, (int)cfg.stations, cfg.cook_ms, &e);
    if (rc != OMS_OK)
        return oms_error_set(err, rc, "cannot start stations: %s", e.msg);
    svc.ticket_notify = stations_wake;
    svc.ticket_ud = stations;
    rt->ud = &svc;
    char n[24], cook[24];
    snprintf(n, sizeof(n), "%lld", cfg.stations);
    snprintf(cook, sizeof(cook), "%lld", cfg.cook_ms);
    oms_log_info("stations started", "stations", n, "cook_ms", cook);
    return OMS_OK;
}

static void kitchen_stop(oms_service_rt *rt)
{
    kitchen_stations_stop(stations);
}

/* Flags tickets that turned late (counted once per stage). */
static int late_scan_tick(void *ud, oms_error *err)
{
    long long marked = 0;
    return kitchen_mark_late(&svc, oms_now_ms(), &marked, err);
}

static const oms_service_def kitchen = {
    .name = "kitchen",
    .config = config,
    .nconfig = OMS_NELEM(config),
    .start = {kitchen_start, kitchen_stop},
    .db_open = kitchen_store_open,
    .outbox = 1,
    .grpc = {"127.0.0.1:2003", "gRPC listen address (grpc.health.v1 only)"},
    .http = {"ADMIN_ADDR", "127.0.0.1:9003", "/healthz /readyz /metrics /tickets listen address",
             kitchen_http_routes, &kitchen_http_nroutes},
    .tickers = {{"late tickets", &cfg.late_scan_ms, late_scan_tick}},
    .consumes = kitchen_consumers,
    .nconsumes = &kitchen_nconsumers,
};

int main(int argc, char **argv)
{
    return oms_service_run(&kitchen, argc, argv);
}
