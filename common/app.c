/* The service runner (oms/app.h): what every service's main does the same way.
 *
 * A service is a const declaration; this file turns it into a process. The table is
 * the service's rows plus the shared ones its declaration implies; the parts start in
 * one fixed order and stop in the reverse one (nginx's init_process / exit_process),
 * so a service cannot get its own shutdown order wrong: nothing that is still taking
 * requests or messages outlives what it uses. Readiness is written once here:
 * database, then every consumer's broker connection, then every declared client. */
#include "oms/app.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "oms/admin.h"
#include "oms/amqp.h"
#include "oms/discovery.h"
#include "oms/log.h"
#include "oms/retention.h"
#include "oms/ticker.h"
#include "oms/tracer.h"
#include "oms/util.h"

/* Longest app_stop waits for queued spans to reach the collector: a shutdown must
 * stay prompt even when the collector hangs. */
#define TRACE_FLUSH_MS 3000
#define READY_WATCH_MS 1000

/* The OTEL_* variables, the same for every service (the OpenTelemetry SDK names, so a
 * deployment's existing settings apply). */
static struct {
    char *service_name;
    char *endpoint;
    char *traces_endpoint;
    char *sampler;
    char *sampler_arg;
    int disabled;
    char *resource_attrs;
    long long delay_ms, queue_size, batch_size, timeout_ms;
} otel;

static const oms_cfg_def otel_defs[] = {
    OMS_CFG_STR_ROW("OTEL_SERVICE_NAME", "", &otel.service_name,
                    "service.name of the spans (default: the service, e.g. orders)"),
    OMS_CFG_STR_ALIAS_ROW(
        "OTEL_EXPORTER_OTLP_ENDPOINT", "JAEGER_ADDR", "", &otel.endpoint,
        "OTLP/HTTP base URL (or host:port); /v1/traces is appended; empty: no export"),
    OMS_CFG_URL_ROW("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "", &otel.traces_endpoint,
                    "full traces URL, used as is (overrides the one above)"),
    OMS_CFG_ENUM_ROW("OTEL_TRACES_SAMPLER", "parentbased_always_on",
                     "always_on|always_off|traceidratio|parentbased_always_on|"
                     "parentbased_always_off|parentbased_traceidratio",
                     &otel.sampler, "which spans are recorded"),
    OMS_CFG_STR_ROW("OTEL_TRACES_SAMPLER_ARG", "1.0", &otel.sampler_arg,
                    "ratio 0..1 for the traceidratio samplers"),
    OMS_CFG_BOOL_ROW("OTEL_SDK_DISABLED", "false", &otel.disabled,
                     "true: no spans recorded (ids still reach logs and peers)"),
    OMS_CFG_STR_ROW("OTEL_RESOURCE_ATTRIBUTES", "", &otel.resource_attrs,
                    "extra resource attributes k=v,k2=v2"),
    OMS_CFG_INT_ROW("OTEL_BSP_SCHEDULE_DELAY", "1000", 1, 600000, &otel.delay_ms,
                    "ms a finished span waits at most before its batch is sent"),
    OMS_CFG_INT_ROW("OTEL_BSP_MAX_QUEUE_SIZE", "2048", 1, 1000000, &otel.queue_size,
                    "finished spans held for export; beyond it spans are dropped and counted"),
    OMS_CFG_INT_ROW("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512", 1, 100000, &otel.batch_size,
                    "spans per export request"),
    OMS_CFG_INT_ROW("OTEL_EXPORTER_OTLP_TIMEOUT", "10000", 1, 600000, &otel.timeout_ms,
                    "ms one export request may take"),
};
#define OTEL_COUNT OMS_NELEM(otel_defs)

/* Loads the OTEL_* table and starts the tracer; exits 2 on a bad value like any other
 * configuration error. A tracer that cannot start is logged and the service runs
 * without export: tracing must never be the reason a shop is down. */
static void tracer_start(const char *service)
{
    char err[512];
    if (oms_config_load(otel_defs, OTEL_COUNT, err, sizeof(err)) != 0) {
        fprintf(stderr, "oms-%s: %s\n", service, err);
        exit(2);
    }
    char *end = NULL;
    errno = 0;
    double ratio = strtod(otel.sampler_arg, &end);
    if (errno != 0 || end == otel.sampler_arg || *end != '\0' || !(ratio >= 0 && ratio <= 1)) {
        fprintf(stderr,
                "oms-%s: config: OTEL_TRACES_SAMPLER_ARG=\"%.64s\": expected a number in "
                "0..1\n",
                service, otel.sampler_arg);
        exit(2);
    }
    char url[1024];
    if (oms_tracer_endpoint_url(otel.traces_endpoint, otel.endpoint, url, sizeof(url)) != OMS_OK) {
        char shown[128]; /* an endpoint may carry user:password@ */
        oms_url_redact(otel.endpoint, shown, sizeof(shown));
        fprintf(stderr,
                "oms-%s: config: OTEL_EXPORTER_OTLP_ENDPOINT=\"%.64s\": expected an "
                "http(s) URL or host:port\n",
                service, shown);
        exit(2);
    }
    oms_tracer_config tc = {
        .service_name = otel.service_name[0] ? otel.service_name : service,
        .endpoint = url,
        .resource_attrs = otel.resource_attrs,
        .sampler = (oms_sampler)oms_sampler_parse(otel.sampler),
        .ratio = ratio,
        .disabled = otel.disabled,
        .queue_size = (int)otel.queue_size,
        .batch_size = (int)otel.batch_size,
        .schedule_delay_ms = (int)otel.delay_ms,
        .export_timeout_ms = (int)otel.timeout_ms,
    };
    oms_error e;
    oms_error_clear(&e);
    if (oms_tracer_init(&tc, &e) != OMS_OK)
        oms_log_error("tracing off: the tracer did not start", "error", e.msg);
}

/* Handles --help (prints the table, exits 0), loads the table (on error prints the
 * one-line message to stderr and exits 2), then initialises the logger from
 * LOG_LEVEL/LOG_FORMAT and the tracer from the OTEL_* variables. Blocks SIGINT/SIGTERM
 * first (oms_signals_block): every thread started afterwards inherits the mask, so the
 * signals reach oms_signals_wait only. */
static void app_start(const char *service, const oms_cfg_def *defs, size_t n,
                      const oms_app_common *common, int argc, char **argv)
{
    oms_signals_block();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("oms-%s: configured by environment variables only:\n", service);
            oms_config_print_help(defs, n);
            printf("\ntracing (every service):\n");
            oms_config_print_help(otel_defs, OTEL_COUNT);
            exit(0);
        }
        fprintf(stderr,
                "oms-%s: unexpected argument %s (configuration is by environment; "
                "see --help)\n",
                service, argv[i]);
        exit(2);
    }
    char err[512];
    if (oms_config_load(defs, n, err, sizeof(err)) != 0) {
        fprintf(stderr, "oms-%s: %s\n", service, err);
        exit(2);
    }
    int level = oms_log_level_parse(common->log_level);
    oms_log_init(service, level < 0 ? OMS_LOG_INFO : (oms_log_level)level,
                 common->log_format && strcmp(common->log_format, "console") == 0);
    tracer_start(service);
}

/* ---- readiness watcher ------------------------------------------------------------ */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int running;
    int stop; /* under mu */
    oms_grpc_server *server;
} watch = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *ready_watch_main(void *arg)
{
    int last = -1; /* logged on change only */
    oms_mutex_lock(&watch.mu);
    while (!watch.stop) {
        oms_mutex_unlock(&watch.mu);
        char why[256];
        int serving = oms_admin_check_ready(why, sizeof(why)) == OMS_OK;
        oms_grpc_server_set_serving(watch.server, serving);
        if (serving != last && (last != -1 || !serving)) {
            if (serving)
                oms_log_info("ready: gRPC health SERVING");
            else
                oms_log_warn("not ready: gRPC health NOT_SERVING", "reason", why);
        }
        last = serving;
        struct timespec until;
        oms_mutex_lock(&watch.mu);
        if (clock_gettime(CLOCK_REALTIME, &until) != 0)
            break; /* cannot happen with CLOCK_REALTIME; never spin */
        until.tv_sec += READY_WATCH_MS / 1000;
        while (!watch.stop) {
            if (oms_cond_timedwait(&watch.cv, &watch.mu, &until) == ETIMEDOUT)
                break;
        }
    }
    oms_mutex_unlock(&watch.mu);
    return NULL;
}

/* Keeps grpc.health.v1 of s in step with /readyz: a thread runs oms_admin_check_ready
 * every second and reports SERVING or NOT_SERVING. */
static int ready_watch_start(oms_grpc_server *s, oms_error *err)
{
    if (!s)
        return oms_error_set(err, OMS_INVALID, "ready watch: no gRPC server");
    if (watch.running)
        return oms_error_set(err, OMS_INVALID, "ready watch: already running");
    watch.server = s;
    watch.stop = 0;
    int e = pthread_create(&watch.thread, NULL, ready_watch_main, NULL);
    if (e != 0)
        return oms_error_set(err, OMS_ERR, "ready watch: pthread_create: %s", strerror(e));
    watch.running = 1;
    return OMS_OK;
}

/* Stops and joins the watcher; no-op when none runs. */
static void ready_watch_stop(void)
{
    if (!watch.running)
        return;
    oms_mutex_lock(&watch.mu);
    watch.stop = 1;
    oms_cond_broadcast(&watch.cv);
    oms_mutex_unlock(&watch.mu);
    int e = pthread_join(watch.thread, NULL);
    if (e != 0)
        oms_log_errorf("ready watch: pthread_join: %s", strerror(e));
    watch.running = 0;
    watch.server = NULL;
}

/* Flushes the spans still queued (bounded wait) and frees what app_start set up. */
static void app_stop(void)
{
    ready_watch_stop();
    oms_tracer_shutdown(TRACE_FLUSH_MS);
    oms_config_free(otel_defs, OTEL_COUNT);
}

/* The broker settings from common (pointers borrowed from common). */
static void amqp_config(const oms_app_common *common, oms_amqp_config *out)
{
    out->host = common->rabbitmq_host;
    out->port = (int)common->rabbitmq_port;
    out->user = common->rabbitmq_user;
    out->password = common->rabbitmq_password;
    out->vhost = common->rabbitmq_vhost;
    out->addrs = common->rabbitmq_addrs;
    out->queue_type = common->rabbitmq_queue_type;
}

/* The relay's retention from OUTBOX_RETENTION_S / INBOX_RETENTION_S. */
static void retention(const oms_app_common *common, oms_retention *out)
{
    out->outbox_keep_ms = (int64_t)common->outbox_retention_s * 1000;
    out->inbox_keep_ms = (int64_t)common->inbox_retention_s * 1000;
}

void oms_app_config_fail(const char *service, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "oms-%s: config: %s\n", service, msg);
    exit(2);
}

/* ---- the runner -------------------------------------------------------------------- */

#define CONSUMER_PREFETCH 16
#define CLIENT_HEALTH_MS 500
#define READY_PAIRS 8 /* key/value pairs of the "<service> ready" line */
_Static_assert(3 + OMS_SERVICE_MAX_CLIENTS <= READY_PAIRS, "grpc, http, database and the clients");

typedef struct consumer_slot {
    const oms_service_consumer *decl;
    char queue[96]; /* <service>.<exchange> */
    oms_amqp_consumer *consumer;
} consumer_slot;

/* One service per process: the runner's state is the process's. */
static struct {
    oms_service_rt rt;
    oms_app_common common;
    oms_discovery_config disc;
    char *grpc_addr, *http_addr, *database_url; /* the rows the declaration implies */
    char database_default[96];
    oms_cfg_def *rows; /* the whole table (heap; the rows point at the fields above) */
    size_t nrows;
    oms_discovery *discovery;
    consumer_slot *consumers;
    size_t nconsumers;
    oms_ticker *tickers[OMS_SERVICE_MAX_TICKERS];
    oms_grpc_server *grpc;
    oms_http_server *http;
    int prepared, started; /* the hooks whose stop is due */
} run;

static const oms_cfg_def discovery_rows[] = {OMS_DISCOVERY_CONFIG(&run.disc)};
static const oms_cfg_def log_rows[] = {OMS_APP_LOG_CONFIG(&run.common)};
static const oms_cfg_def amqp_rows[] = {OMS_APP_AMQP_CONFIG(&run.common)};
static const oms_cfg_def amqp_conn_rows[] = {OMS_APP_AMQP_CONN_CONFIG(&run.common)};
static const oms_cfg_def http_rows[] = {OMS_APP_HTTP_CONFIG(&run.common)};
static const oms_cfg_def db_rows[] = {OMS_APP_DB_CONFIG(&run.common)};
static const oms_cfg_def grpc_rows[] = {OMS_APP_GRPC_CONFIG(&run.common)};
static const oms_http_route admin_routes[] = {OMS_ADMIN_ROUTES};

static int uses_broker(const oms_service_def *def)
{
    return def->broker || def->outbox || (def->nconsumes && *def->nconsumes > 0);
}

static void rows_add(const oms_cfg_def *defs, size_t n)
{
    if (n == 0)
        return; /* defs may be NULL: a service without rows of its own */
    memcpy(run.rows + run.nrows, defs, n * sizeof(*defs));
    run.nrows += n;
}

/* The service's table: its listen addresses and database first, then its own rows,
 * then the shared rows it uses. */
static void table_build(const oms_service_def *def)
{
    size_t cap = 3 + def->nconfig + OMS_NELEM(discovery_rows) + OMS_NELEM(log_rows) +
                 OMS_NELEM(amqp_rows) + OMS_NELEM(http_rows) + OMS_NELEM(db_rows) +
                 OMS_NELEM(grpc_rows);
    run.rows = oms_xcalloc(cap, sizeof(*run.rows));
    if (def->grpc.addr) {
        oms_cfg_def r =
            OMS_CFG_ADDR_ROW("GRPC_ADDR", def->grpc.addr, &run.grpc_addr, def->grpc.help);
        rows_add(&r, 1);
    }
    if (def->http.var) {
        oms_cfg_def r =
            OMS_CFG_ADDR_ROW(def->http.var, def->http.addr, &run.http_addr, def->http.help);
        rows_add(&r, 1);
    }
    if (def->db_open) {
        snprintf(run.database_default, sizeof(run.database_default), "var/%s.db", def->name);
        oms_cfg_def r =
            OMS_CFG_STR_ROW("DATABASE_URL", run.database_default, &run.database_url,
                            "SQLite path (or sqlite:PATH), or postgres://user:pass@host:port/db");
        rows_add(&r, 1);
    }
    rows_add(def->config, def->nconfig);
    rows_add(discovery_rows, OMS_NELEM(discovery_rows));
    rows_add(log_rows, OMS_NELEM(log_rows));
    if (def->outbox || (def->nconsumes && *def->nconsumes > 0))
        rows_add(amqp_rows, OMS_NELEM(amqp_rows));
    else if (def->broker) /* its own transient queue: no retries, no queue type */
        rows_add(amqp_conn_rows, OMS_NELEM(amqp_conn_rows));
    if (def->http.var)
        rows_add(http_rows, OMS_NELEM(http_rows));
    if (def->db_open)
        rows_add(db_rows, OMS_NELEM(db_rows));
    if (def->grpc.addr)
        rows_add(grpc_rows, OMS_NELEM(grpc_rows));
}

/* /readyz and gRPC health: the database answers, every consumer is connected to the
 * broker, every declared client's service answers its health check. */
static int service_ready(void *ud, char *why, size_t n)
{
    const oms_service_def *def = run.rt.def;
    oms_error err;
    oms_error_clear(&err);
    if (run.rt.db && oms_db_ping(run.rt.db, &err) != OMS_OK) {
        snprintf(why, n, "database: %s", err.msg);
        return OMS_UNAVAILABLE;
    }
    for (size_t i = 0; i < run.nconsumers; i++)
        if (!oms_amqp_consumer_connected(run.consumers[i].consumer)) {
            snprintf(why, n, "broker: consumer of %s not connected", run.consumers[i].queue);
            return OMS_UNAVAILABLE;
        }
    for (size_t i = 0; i < OMS_SERVICE_MAX_CLIENTS && def->clients[i].name; i++)
        if (oms_grpc_client_check_health(run.rt.clients[i], CLIENT_HEALTH_MS, &err) != OMS_OK) {
            snprintf(why, n, "%s: %s", def->clients[i].name, err.msg);
            return OMS_UNAVAILABLE;
        }
    return OMS_OK;
}

/* Every delivery of every consumed event: the declared handler, and one log line when
 * it did not apply. */
static int on_delivery(const oms_amqp_delivery *d, void *ud)
{
    const consumer_slot *c = ud;
    oms_event_delivery ev = {c->decl->event, c->queue, d->message_id, d->body, d->len};
    oms_error err;
    oms_error_clear(&err);
    int rc = c->decl->fn(run.rt.ud, &ev, &err);
    if (rc == OMS_INVALID)
        oms_log_warn("event rejected: dead-lettered", "queue", c->queue, "message_id",
                     d->message_id, "error", err.msg);
    else if (rc != OMS_OK && rc != OMS_DUPLICATE)
        oms_log_warn("event not applied; will retry", "queue", c->queue, "message_id",
                     d->message_id, "error", err.msg);
    return rc;
}

static int consumers_start(const oms_service_def *def, const oms_amqp_config *amqp)
{
    run.nconsumers = def->nconsumes ? *def->nconsumes : 0;
    if (run.nconsumers == 0)
        return OMS_OK;
    run.consumers = oms_xcalloc(run.nconsumers, sizeof(*run.consumers));
    for (size_t i = 0; i < run.nconsumers; i++) {
        consumer_slot *c = &run.consumers[i];
        c->decl = &def->consumes[i];
        snprintf(c->queue, sizeof(c->queue), "%s.%s", def->name,
                 oms_event_exchanges[c->decl->event]);
        /* Copied by oms_amqp_consumer_start (names included). */
        oms_amqp_consumer_config cc = {
            .queue = c->queue,
            .exchanges = &oms_event_exchanges[c->decl->event],
            .nexchanges = 1,
            .prefetch = CONSUMER_PREFETCH,
            .max_retries = (int)run.common.max_retries,
            .workers = (int)run.common.consumer_workers,
            .retry_delay_ms = (int)run.common.retry_delay_ms,
            .fn = on_delivery,
            .ud = c,
        };
        oms_error err;
        oms_error_clear(&err);
        if (oms_amqp_consumer_start(&c->consumer, amqp, &cc, &err) != OMS_OK) {
            oms_log_error("cannot start consumer", "queue", c->queue, "error", err.msg);
            return OMS_ERR;
        }
    }
    return OMS_OK;
}

/* "<service> ready" with its addresses, database and the targets of its clients. */
static void log_ready(const oms_service_def *def)
{
    const char *kv[2 * READY_PAIRS] = {NULL}; /* grpc, http, database, the clients */
    size_t k = 0;
    if (run.grpc) {
        kv[k++] = "grpc";
        kv[k++] = run.grpc_addr;
    }
    if (run.http) {
        kv[k++] = "http";
        kv[k++] = run.http_addr;
    }
    if (run.rt.db) {
        kv[k++] = "database";
        kv[k++] = oms_db_driver_name(run.rt.db);
    }
    for (size_t i = 0; i < OMS_SERVICE_MAX_CLIENTS && def->clients[i].name; i++) {
        kv[k++] = def->clients[i].name;
        kv[k++] = *def->clients[i].addrs;
    }
    char msg[64];
    snprintf(msg, sizeof(msg), "%s ready", def->name);
    /* The field list ends at the first NULL key. */
    oms_log_info(msg, kv[0], kv[1], kv[2], kv[3], kv[4], kv[5], kv[6], kv[7], kv[8], kv[9], kv[10],
                 kv[11], kv[12], kv[13], kv[14], kv[15]);
}

/* Starts every part in order; the first failure is logged and returned (what started
 * is stopped by service_stop). */
static int service_start(const oms_service_def *def)
{
    oms_service_rt *rt = &run.rt;
    oms_error err;
    oms_error_clear(&err);
    static oms_amqp_config amqp; /* rt->amqp points here while the service runs */
    amqp_config(&run.common, &amqp);
    if (uses_broker(def) && oms_amqp_config_check(&amqp, &err) != OMS_OK)
        oms_app_config_fail(def->name, "%s", err.msg); /* a bad RABBITMQ_ADDRS: exit 2 */
    rt->amqp = uses_broker(def) ? &amqp : NULL;
    rt->routes = def->http.routes ? def->http.routes : admin_routes;
    rt->nroutes = def->http.routes ? *def->http.nroutes : OMS_NELEM(admin_routes);

    if (def->prepare.start) {
        if (def->prepare.start(rt, &err) != OMS_OK) {
            oms_log_error("cannot prepare the service", "error", err.msg);
            return OMS_ERR;
        }
        run.prepared = 1;
    }
    if (def->db_open) {
        oms_db_set_pool(&run.common.db_pool);
        if (def->db_open(&rt->db, run.database_url, &err) != OMS_OK) {
            oms_log_error("cannot open database", "url", run.database_url, "error", err.msg);
            return OMS_ERR;
        }
    }
    if (oms_discovery_start(&run.discovery, &run.disc, &err) != OMS_OK) {
        oms_log_error("cannot start service discovery", "error", err.msg);
        return OMS_ERR;
    }
    for (size_t i = 0; i < OMS_SERVICE_MAX_CLIENTS && def->clients[i].name; i++) {
        const oms_service_client *c = &def->clients[i];
        if (oms_discovery_client(run.discovery, c->name, *c->addrs, &rt->clients[i], &err) !=
            OMS_OK) {
            oms_log_error("cannot create gRPC client", "service", c->name, "error", err.msg);
            return OMS_ERR;
        }
    }
    if (def->outbox) {
        if (oms_outbox_relay_start(&rt->relay, rt->db, &amqp, &err) != OMS_OK) {
            oms_log_error("cannot start outbox relay", "error", err.msg);
            return OMS_ERR;
        }
        oms_retention keep;
        retention(&run.common, &keep);
        oms_outbox_relay_set_retention(rt->relay, &keep);
    }
    if (def->start.start) {
        if (def->start.start(rt, &err) != OMS_OK) {
            oms_log_error("cannot start the service", "error", err.msg);
            return OMS_ERR;
        }
        run.started = 1;
    }
    if (consumers_start(def, &amqp) != OMS_OK)
        return OMS_ERR;
    for (size_t i = 0; i < OMS_SERVICE_MAX_TICKERS && def->tickers[i].name; i++) {
        const oms_service_ticker *t = &def->tickers[i];
        if (oms_ticker_start(&run.tickers[i], t->name, *t->period_ms, t->fn, rt->ud, &err) !=
            OMS_OK) {
            oms_log_error("cannot start ticker", "ticker", t->name, "error", err.msg);
            return OMS_ERR;
        }
    }
    if (def->grpc.addr) {
        size_t n = def->grpc.methods ? *def->grpc.nmethods : 0;
        int threads = def->grpc.threads ? (int)*def->grpc.threads : 1;
        if (oms_grpc_server_start_bounded(&run.grpc, run.grpc_addr, def->grpc.methods, n, threads,
                                          (int)run.common.grpc_max_in_flight, rt->ud,
                                          &err) != OMS_OK) {
            oms_log_error("cannot start gRPC server", "addr", run.grpc_addr, "error", err.msg);
            return OMS_ERR;
        }
    }
    oms_admin_set_ready(service_ready, NULL);
    if (def->http.var) {
        oms_http_config hc = {
            .addr = run.http_addr,
            .routes = rt->routes,
            .nroutes = rt->nroutes,
            .static_dir = def->http.static_dir ? *def->http.static_dir : NULL,
            .threads = def->http.threads ? (int)*def->http.threads : 0,
            .limits = &run.common.http,
            .budget_ms = def->http.budget_ms ? *def->http.budget_ms : 0,
            .ud = rt->ud,
        };
        char herr[256] = "";
        if (oms_http_start(&run.http, &hc, herr, sizeof(herr)) != OMS_OK) {
            oms_log_error("cannot start HTTP server", "addr", run.http_addr, "error", herr);
            return OMS_ERR;
        }
    }
    if (run.grpc && ready_watch_start(run.grpc, &err) != OMS_OK) {
        oms_log_error("cannot start the readiness watcher", "error", err.msg);
        return OMS_ERR;
    }
    /* Last, once everything answers: DISCOVERY=etcd clients start choosing us now. */
    const char *addr = run.grpc ? run.grpc_addr : run.http_addr;
    if (oms_discovery_register(run.discovery, def->name, addr, &err) != OMS_OK) {
        oms_log_error("cannot register in service discovery", "error", err.msg);
        return OMS_ERR;
    }
    log_ready(def);
    return OMS_OK;
}

/* The reverse of service_start; each step accepts what never started. */
static void service_stop(const oms_service_def *def)
{
    oms_service_rt *rt = &run.rt;
    oms_discovery_stop(run.discovery); /* first: callers stop choosing us while we drain */
    run.discovery = NULL;
    ready_watch_stop(); /* reads the database, consumers and clients */
    oms_http_stop(run.http);
    oms_admin_set_ready(NULL, NULL);
    oms_grpc_server_stop(run.grpc);
    for (size_t i = OMS_SERVICE_MAX_TICKERS; i-- > 0;)
        oms_ticker_stop(run.tickers[i]);
    for (size_t i = 0; i < run.nconsumers; i++)
        oms_amqp_consumer_stop(run.consumers[i].consumer);
    free(run.consumers);
    if (run.started && def->start.stop)
        def->start.stop(rt);
    oms_outbox_relay_stop(rt->relay);
    for (size_t i = 0; i < OMS_SERVICE_MAX_CLIENTS; i++)
        oms_grpc_client_free(rt->clients[i]);
    if (rt->db)
        oms_db_close(rt->db);
    if (run.prepared && def->prepare.stop)
        def->prepare.stop(rt);
}

int oms_service_run(const oms_service_def *def, int argc, char **argv)
{
    run.rt.def = def;
    table_build(def);
    app_start(def->name, run.rows, run.nrows, &run.common, argc, argv);
    int exit_code = 1;
    if (service_start(def) == OMS_OK) {
        int sig = oms_signals_wait();
        oms_log_infof("stopping on signal %d", sig);
        exit_code = 0;
    }
    service_stop(def);
    if (exit_code == 0)
        oms_log_infof("%s stopped", def->name);
    oms_config_free(run.rows, run.nrows);
    free(run.rows);
    app_stop();
    return exit_code;
}

oms_grpc_client *oms_service_client_of(const oms_service_rt *rt, const char *name)
{
    for (size_t i = 0; i < OMS_SERVICE_MAX_CLIENTS && rt->def->clients[i].name; i++)
        if (strcmp(rt->def->clients[i].name, name) == 0)
            return rt->clients[i];
    return NULL;
}
