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
#include "oms/log.h"
#include "oms/tracer.h"
#include "oms/util.h"

/* Longest oms_app_stop waits for queued spans to reach the collector: a shutdown must
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
    {"OTEL_SERVICE_NAME", OMS_CFG_STR, "", 0, 0, NULL, &otel.service_name, NULL,
     "service.name of the spans (default: the service, e.g. orders)"},
    {"OTEL_EXPORTER_OTLP_ENDPOINT", OMS_CFG_STR, "", 0, 0, NULL, &otel.endpoint, "JAEGER_ADDR",
     "OTLP/HTTP base URL (or host:port); /v1/traces is appended; empty: no export"},
    {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", OMS_CFG_URL, "", 0, 0, NULL, &otel.traces_endpoint, NULL,
     "full traces URL, used as is (overrides the one above)"},
    {"OTEL_TRACES_SAMPLER", OMS_CFG_ENUM, "parentbased_always_on", 0, 0,
     "always_on|always_off|traceidratio|parentbased_always_on|parentbased_always_off|"
     "parentbased_traceidratio",
     &otel.sampler, NULL, "which spans are recorded"},
    {"OTEL_TRACES_SAMPLER_ARG", OMS_CFG_STR, "1.0", 0, 0, NULL, &otel.sampler_arg, NULL,
     "ratio 0..1 for the traceidratio samplers"},
    {"OTEL_SDK_DISABLED", OMS_CFG_BOOL, "false", 0, 0, NULL, &otel.disabled, NULL,
     "true: no spans recorded (ids still reach logs and peers)"},
    {"OTEL_RESOURCE_ATTRIBUTES", OMS_CFG_STR, "", 0, 0, NULL, &otel.resource_attrs, NULL,
     "extra resource attributes k=v,k2=v2"},
    {"OTEL_BSP_SCHEDULE_DELAY", OMS_CFG_INT, "1000", 1, 600000, NULL, &otel.delay_ms, NULL,
     "ms a finished span waits at most before its batch is sent"},
    {"OTEL_BSP_MAX_QUEUE_SIZE", OMS_CFG_INT, "2048", 1, 1000000, NULL, &otel.queue_size, NULL,
     "finished spans held for export; beyond it spans are dropped and counted"},
    {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE", OMS_CFG_INT, "512", 1, 100000, NULL, &otel.batch_size, NULL,
     "spans per export request"},
    {"OTEL_EXPORTER_OTLP_TIMEOUT", OMS_CFG_INT, "10000", 1, 600000, NULL, &otel.timeout_ms, NULL,
     "ms one export request may take"},
};
#define OTEL_COUNT (sizeof(otel_defs) / sizeof(otel_defs[0]))

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

void oms_app_start(const char *service, const oms_cfg_def *defs, size_t n,
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
    pthread_mutex_lock(&watch.mu);
    while (!watch.stop) {
        pthread_mutex_unlock(&watch.mu);
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
        pthread_mutex_lock(&watch.mu);
        if (clock_gettime(CLOCK_REALTIME, &until) != 0)
            break; /* cannot happen with CLOCK_REALTIME; never spin */
        until.tv_sec += READY_WATCH_MS / 1000;
        while (!watch.stop) {
            int e = pthread_cond_timedwait(&watch.cv, &watch.mu, &until);
            if (e == ETIMEDOUT)
                break;
            if (e != 0) {
                watch.stop = 1; /* a broken wait would spin; keep the last verdict */
                break;
            }
        }
    }
    pthread_mutex_unlock(&watch.mu);
    return NULL;
}

int oms_app_ready_watch_start(oms_grpc_server *s, oms_error *err)
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

void oms_app_ready_watch_stop(void)
{
    if (!watch.running)
        return;
    pthread_mutex_lock(&watch.mu);
    watch.stop = 1;
    pthread_cond_broadcast(&watch.cv);
    pthread_mutex_unlock(&watch.mu);
    int e = pthread_join(watch.thread, NULL);
    if (e != 0)
        oms_log_errorf("ready watch: pthread_join: %s", strerror(e));
    watch.running = 0;
    watch.server = NULL;
}

void oms_app_stop(void)
{
    oms_app_ready_watch_stop();
    oms_tracer_shutdown(TRACE_FLUSH_MS);
    oms_config_free(otel_defs, OTEL_COUNT);
}

void oms_app_amqp_config(const oms_app_common *common, oms_amqp_config *out)
{
    out->host = common->rabbitmq_host;
    out->port = (int)common->rabbitmq_port;
    out->user = common->rabbitmq_user;
    out->password = common->rabbitmq_password;
    out->vhost = common->rabbitmq_vhost;
}

void oms_app_retention(const oms_app_common *common, oms_retention *out)
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
