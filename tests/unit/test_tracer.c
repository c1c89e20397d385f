/* The tracer (oms/tracer.h): sampler decisions and endpoint rules as data tables, the
 * OTLP JSON of finished spans, the current-context discipline, the bounded queue's
 * drop counting, "no export" when disabled or unconfigured, and one real export to
 * a local receiver (plus one to a closed port). */
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "oms/http.h"
#include "oms/metrics.h"
#include "oms/status.h"
#include "oms/trace.h"
#include "oms/tracer.h"
#include "oms/util.h"

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define SID "00f067aa0ba902b7"

/* ---- sampling ------------------------------------------------------------------------ */

typedef struct {
    const char *sampler;
    double ratio;
    const char *parent;        /* traceparent, or NULL for a root */
    const char *trace_id_tail; /* the last 8 bytes of the new span's trace id, hex */
    int sampled;
} sample_case;

static const sample_case sample_cases[] = {
    {"always_on", 0, NULL, "0000000000000001", 1},
    {"always_on", 0, "00-" TID "-" SID "-00", "0000000000000001", 1}, /* ignores parent */
    {"always_off", 0, NULL, "0000000000000001", 0},
    {"always_off", 0, "00-" TID "-" SID "-01", "0000000000000001", 0},
    {"traceidratio", 0.5, NULL, "0000000000000001", 1},                    /* low ids kept */
    {"traceidratio", 0.5, NULL, "ffffffffffffffff", 0},                    /* high ids dropped */
    {"traceidratio", 0.5, "00-" TID "-" SID "-00", "0000000000000001", 1}, /* ignores parent */
    {"traceidratio", 0, NULL, "0000000000000000", 0},
    {"traceidratio", 1, NULL, "ffffffffffffffff", 1},
    {"parentbased_always_on", 0, NULL, "ffffffffffffffff", 1},
    {"parentbased_always_on", 0, "00-" TID "-" SID "-00", "0000000000000001", 0},
    {"parentbased_always_on", 0, "00-" TID "-" SID "-01", "0000000000000001", 1},
    {"parentbased_always_off", 0, NULL, "0000000000000001", 0},
    {"parentbased_always_off", 0, "00-" TID "-" SID "-01", "0000000000000001", 1},
    {"parentbased_traceidratio", 0.25, NULL, "5000000000000000", 0},
    {"parentbased_traceidratio", 0.25, NULL, "1000000000000000", 1},
    {"parentbased_traceidratio", 0.25, "00-" TID "-" SID "-01", "ffffffffffffffff", 1},
    {"parentbased_traceidratio", 0.25, "00-" TID "-" SID "-00", "0000000000000000", 0},
};

static void hex_to_bytes(const char *hex, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
}

static void test_sampler_table(void **state)
{
    for (size_t i = 0; i < OMS_NELEM(sample_cases); i++) {
        const sample_case *c = &sample_cases[i];
        int s = oms_sampler_parse(c->sampler);
        assert_true(s >= 0);
        oms_trace_ctx parent;
        memset(&parent, 0, sizeof(parent));
        if (c->parent)
            assert_int_equal(oms_traceparent_parse(c->parent, &parent), OMS_OK);
        uint8_t tid[16];
        memset(tid, 0xab, 8);
        hex_to_bytes(c->trace_id_tail, tid + 8, 8);
        int got = oms_sampler_decide((oms_sampler)s, c->ratio, c->parent ? &parent : NULL, tid);
        if (got != c->sampled)
            fail_msg("case %zu (%s, ratio %.2f, parent %s): got %d", i, c->sampler, c->ratio,
                     c->parent ? c->parent : "none", got);
    }
    assert_int_equal(oms_sampler_parse("sometimes"), -1);
    assert_int_equal(oms_sampler_parse(NULL), -1);
}

/* ---- endpoint ------------------------------------------------------------------------ */

static void test_endpoint_table(void **state)
{
    static const struct {
        const char *traces, *base, *want;
        int rc;
    } cases[] = {
        {"", "http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces", OMS_OK},
        {NULL, "http://collector:4318/", "http://collector:4318/v1/traces", OMS_OK},
        {"", "localhost:4318", "http://localhost:4318/v1/traces", OMS_OK}, /* JAEGER_ADDR style */
        {"https://otel.example/x/traces", "http://ignored:1", "https://otel.example/x/traces",
         OMS_OK},
        {"", "", "", OMS_OK},
        {NULL, NULL, "", OMS_OK},
        {"", "grpc://collector:4317", "", OMS_INVALID},
    };
    for (size_t i = 0; i < OMS_NELEM(cases); i++) {
        char out[256];
        assert_int_equal(oms_tracer_endpoint_url(cases[i].traces, cases[i].base, out, sizeof(out)),
                         cases[i].rc);
        assert_string_equal(out, cases[i].want);
    }
    char tiny[8];
    assert_int_equal(oms_tracer_endpoint_url("", "http://127.0.0.1:4318", tiny, sizeof(tiny)),
                     OMS_INVALID);
}

/* ---- encoding -------------------------------------------------------------------------- */

static void init_manual(int queue_size, const char *sampler, int disabled)
{
    oms_tracer_config cfg = {.service_name = "unit",
                             .resource_attrs = "deployment.environment=test,bad,service.name=x",
                             .sampler = (oms_sampler)oms_sampler_parse(sampler),
                             .ratio = 1,
                             .disabled = disabled,
                             .queue_size = queue_size,
                             .manual = 1};
    oms_error err;
    assert_int_equal(oms_tracer_init(&cfg, &err), OMS_OK);
}

static const char *attr_of(const json_t *attrs, const char *key, const char *kind)
{
    size_t i;
    const json_t *a;
    json_array_foreach(attrs, i, a)
    {
        if (strcmp(json_string_value(json_object_get(a, "key")), key) == 0)
            return json_string_value(json_object_get(json_object_get(a, "value"), kind));
    }
    return NULL;
}

static int all_digits(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

static void test_span_json(void **state)
{
    init_manual(16, "parentbased_always_on", 0);
    oms_trace_ctx remote, link;
    assert_int_equal(oms_traceparent_parse("00-" TID "-" SID "-01", &remote), OMS_OK);
    oms_trace_new_root(&link);

    oms_span *srv = oms_span_start("GET /x/{}", OMS_SPAN_SERVER, &remote);
    oms_span_set_str(srv, "http.route", "/x/{}");
    oms_span_set_int(srv, "http.response.status_code", 200);
    oms_span_set_int(srv, "http.response.status_code", 503); /* replaces */
    oms_span_add_event(srv, "retry", "why", "busy");
    oms_span_add_link(srv, &link);
    oms_span_set_status(srv, OMS_SPAN_ERROR, "HTTP 503");
    oms_span *cli = oms_span_start("api.S/M", OMS_SPAN_CLIENT, NULL);
    oms_span *prod = oms_span_start_detached("order.paid publish", OMS_SPAN_PRODUCER, NULL);
    oms_span *cons = oms_span_start("q process", OMS_SPAN_CONSUMER, oms_span_context(prod));
    oms_span *internal = oms_span_start("cook", OMS_SPAN_INTERNAL, NULL);
    char srv_sid[17], cli_sid[17];
    oms_span_id_hex(oms_span_context(srv), srv_sid);
    oms_span_id_hex(oms_span_context(cli), cli_sid);
    oms_span_end(internal);
    oms_span_end(cons);
    oms_span_end(prod);
    oms_span_end(cli);
    oms_span_end(srv);

    size_t n = 0;
    char *body = oms_tracer_drain_json(&n);
    assert_non_null(body);
    assert_int_equal(n, 5);
    json_error_t jerr;
    json_t *root = json_loads(body, 0, &jerr);
    free(body);
    assert_non_null(root);
    json_t *rs = json_array_get(json_object_get(root, "resourceSpans"), 0);
    json_t *rattrs = json_object_get(json_object_get(rs, "resource"), "attributes");
    assert_string_equal(attr_of(rattrs, "service.name", "stringValue"), "unit");
    assert_string_equal(attr_of(rattrs, "deployment.environment", "stringValue"), "test");
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ss, "scope"), "name")),
                        "oms");
    json_t *spans = json_object_get(ss, "spans");
    assert_int_equal(json_array_size(spans), 5);
    /* Ended in reverse order: internal, consumer, producer, client, server. */
    static const int kinds[] = {1, 5, 4, 3, 2};
    for (size_t i = 0; i < 5; i++) {
        json_t *s = json_array_get(spans, i);
        assert_int_equal(json_integer_value(json_object_get(s, "kind")), kinds[i]);
        const char *st = json_string_value(json_object_get(s, "startTimeUnixNano"));
        const char *en = json_string_value(json_object_get(s, "endTimeUnixNano"));
        assert_true(all_digits(st) && all_digits(en)); /* int64 as JSON strings */
        assert_true(strtoll(en, NULL, 10) >= strtoll(st, NULL, 10));
        assert_true(strtoll(st, NULL, 10) > 1600000000000000000LL); /* nanoseconds */
        assert_int_equal(strlen(json_string_value(json_object_get(s, "spanId"))), 16);
    }
    json_t *jsrv = json_array_get(spans, 4), *jcli = json_array_get(spans, 3);
    json_t *jprod = json_array_get(spans, 2), *jcons = json_array_get(spans, 1);
    assert_string_equal(json_string_value(json_object_get(jsrv, "traceId")), TID);
    assert_string_equal(json_string_value(json_object_get(jsrv, "parentSpanId")), SID);
    assert_string_equal(json_string_value(json_object_get(jsrv, "spanId")), srv_sid);
    assert_string_equal(json_string_value(json_object_get(jsrv, "name")), "GET /x/{}");
    assert_string_equal(json_string_value(json_object_get(jcli, "parentSpanId")), srv_sid);
    assert_string_equal(json_string_value(json_object_get(jcli, "spanId")), cli_sid);
    json_t *attrs = json_object_get(jsrv, "attributes");
    assert_int_equal(json_array_size(attrs), 2);
    assert_string_equal(attr_of(attrs, "http.route", "stringValue"), "/x/{}");
    assert_string_equal(attr_of(attrs, "http.response.status_code", "intValue"), "503");
    json_t *ev = json_array_get(json_object_get(jsrv, "events"), 0);
    assert_string_equal(json_string_value(json_object_get(ev, "name")), "retry");
    assert_true(all_digits(json_string_value(json_object_get(ev, "timeUnixNano"))));
    assert_string_equal(attr_of(json_object_get(ev, "attributes"), "why", "stringValue"), "busy");
    json_t *lk = json_array_get(json_object_get(jsrv, "links"), 0);
    char ltid[33];
    oms_trace_id_hex(&link, ltid);
    assert_string_equal(json_string_value(json_object_get(lk, "traceId")), ltid);
    json_t *status = json_object_get(jsrv, "status");
    assert_int_equal(json_integer_value(json_object_get(status, "code")), 2);
    assert_string_equal(json_string_value(json_object_get(status, "message")), "HTTP 503");
    /* A detached span with no parent starts its own trace; its consumer is its child. */
    assert_null(json_object_get(jprod, "parentSpanId"));
    assert_string_not_equal(json_string_value(json_object_get(jprod, "traceId")), TID);
    assert_string_equal(json_string_value(json_object_get(jcons, "parentSpanId")),
                        json_string_value(json_object_get(jprod, "spanId")));
    json_decref(root);
    oms_tracer_shutdown(0);
}

/* ---- current context --------------------------------------------------------------------- */

static void test_current_context_restored(void **state)
{
    init_manual(16, "always_on", 0);
    oms_trace_clear_current();
    assert_null(oms_span_current());
    oms_span *a = oms_span_start("a", OMS_SPAN_SERVER, NULL);
    assert_ptr_equal(oms_span_current(), a);
    assert_memory_equal(oms_trace_current()->span_id, oms_span_context(a)->span_id, 8);
    oms_span *b = oms_span_start("b", OMS_SPAN_CLIENT, NULL);
    assert_ptr_equal(oms_span_current(), b);
    assert_memory_equal(oms_span_context(b)->trace_id, oms_span_context(a)->trace_id, 16);
    oms_span *d = oms_span_start_detached("d", OMS_SPAN_PRODUCER, oms_span_context(b));
    assert_ptr_equal(oms_span_current(), b); /* detached: current unchanged */
    oms_span_end(d);
    assert_ptr_equal(oms_span_current(), b);
    oms_span_end(b);
    assert_ptr_equal(oms_span_current(), a);
    oms_span *r = oms_span_start_root("r", OMS_SPAN_SERVER);
    assert_memory_not_equal(oms_span_context(r)->trace_id, oms_span_context(a)->trace_id, 16);
    oms_span_end(r);
    oms_span_end(a);
    assert_null(oms_span_current());
    assert_null(oms_trace_current());
    /* Code that sets the context directly leaves no stale current span. */
    oms_span *x = oms_span_start("x", OMS_SPAN_INTERNAL, NULL);
    oms_trace_ctx other;
    oms_trace_new_root(&other);
    oms_trace_set_current(&other);
    assert_null(oms_span_current());
    oms_span_end(x);
    /* NULL spans are no-ops. */
    oms_span_set_str(NULL, "k", "v");
    oms_span_set_int(NULL, "k", 1);
    oms_span_add_event(NULL, "e", NULL, NULL);
    oms_span_set_status(NULL, OMS_SPAN_ERROR, "x");
    oms_span_end(NULL);
    size_t n;
    free(oms_tracer_drain_json(&n));
    oms_tracer_shutdown(0);
}

/* ---- queue, disabled, unconfigured, unsampled ---------------------------------------------- */

/* The value of the first line of the metrics text that starts with prefix, or 0. */
static double metric_value(const char *prefix)
{
    size_t len = 0;
    char *text = oms_metrics_render(&len);
    double v = 0;
    const char *p = text;
    while (p && *p) {
        if (strncmp(p, prefix, strlen(prefix)) == 0) {
            v = strtod(p + strlen(prefix), NULL);
            break;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    free(text);
    return v;
}

#define DROPPED_FULL "otel_spans_dropped_total{reason=\"queue_full\"} "

static void test_queue_overflow_drops_and_counts(void **state)
{
    init_manual(4, "always_on", 0);
    double before = metric_value(DROPPED_FULL);
    oms_tracer_stats st0, st1;
    oms_tracer_stats_get(&st0);
    for (int i = 0; i < 10; i++) {
        oms_span *s = oms_span_start("s", OMS_SPAN_INTERNAL, NULL);
        assert_true(oms_span_recording(s));
        oms_span_end(s); /* never blocks: the 5th..10th are dropped */
    }
    oms_tracer_stats_get(&st1);
    assert_int_equal(st1.queued - st0.queued, 4);
    assert_int_equal(st1.dropped - st0.dropped, 6);
    assert_true(metric_value(DROPPED_FULL) - before == 6);
    size_t n = 0;
    char *body = oms_tracer_drain_json(&n);
    assert_int_equal(n, 4);
    free(body);
    /* Room again once drained. */
    oms_span_end(oms_span_start("again", OMS_SPAN_INTERNAL, NULL));
    body = oms_tracer_drain_json(&n);
    assert_int_equal(n, 1);
    free(body);
    oms_tracer_shutdown(0);
}

static void test_disabled_records_nothing(void **state)
{
    init_manual(16, "always_on", 1);
    assert_false(oms_tracer_active());
    oms_span *s = oms_span_start("s", OMS_SPAN_SERVER, NULL);
    assert_false(oms_span_recording(s));
    assert_true(oms_span_context(s)->valid); /* ids still reach logs and peers */
    assert_ptr_equal(oms_span_current(), s);
    oms_span_end(s);
    size_t n = 99;
    assert_null(oms_tracer_drain_json(&n));
    assert_int_equal(n, 0);
    oms_tracer_shutdown(0);

    /* No endpoint and not manual: nothing recorded either, and no thread. */
    oms_tracer_config cfg = {
        .service_name = "unit", .endpoint = "", .sampler = OMS_SAMPLER_ALWAYS_ON};
    oms_error err;
    assert_int_equal(oms_tracer_init(&cfg, &err), OMS_OK);
    assert_false(oms_tracer_active());
    s = oms_span_start("s", OMS_SPAN_SERVER, NULL);
    assert_false(oms_span_recording(s));
    oms_span_end(s);
    assert_null(oms_tracer_drain_json(&n));
    oms_tracer_shutdown(1000);

    /* Not initialised at all: ids, no recording (what other modules' tests see). */
    s = oms_span_start("s", OMS_SPAN_SERVER, NULL);
    assert_false(oms_span_recording(s));
    assert_true(oms_span_context(s)->flags & 1);
    oms_span_end(s);
}

static void test_unsampled_propagates_flag(void **state)
{
    init_manual(16, "parentbased_always_off", 0);
    oms_span *root = oms_span_start("root", OMS_SPAN_SERVER, NULL);
    assert_false(oms_span_recording(root));
    assert_int_equal(oms_span_context(root)->flags & 1, 0);
    char tp[OMS_TRACEPARENT_LEN + 1];
    oms_trace_current_header(tp);
    assert_string_equal(tp + 53, "00"); /* peers learn it was not sampled */
    oms_span_end(root);
    oms_trace_ctx sampled;
    assert_int_equal(oms_traceparent_parse("00-" TID "-" SID "-01", &sampled), OMS_OK);
    oms_span *child = oms_span_start("child", OMS_SPAN_SERVER, &sampled);
    assert_true(oms_span_recording(child));
    oms_span_end(child);
    size_t n = 0;
    char *body = oms_tracer_drain_json(&n);
    assert_int_equal(n, 1);
    free(body);
    oms_tracer_shutdown(0);
}

/* ---- real export -------------------------------------------------------------------------- */

static pthread_mutex_t rx_mu = PTHREAD_MUTEX_INITIALIZER;
static int rx_spans;
static char rx_ctype[64];

static void rx_traces(const oms_http_req *req, oms_http_resp *resp)
{
    json_t *j = json_loadb(req->body, req->body_len, 0, NULL);
    json_t *spans = json_object_get(
        json_array_get(
            json_object_get(json_array_get(json_object_get(j, "resourceSpans"), 0), "scopeSpans"),
            0),
        "spans");
    const char *ct = oms_http_header(req, "Content-Type");
    /* This receiver's own request spans are exported too (same process); only the
     * test's spans are counted. */
    int n = 0;
    size_t i;
    const json_t *sp;
    json_array_foreach(spans, i, sp)
    {
        const char *name = json_string_value(json_object_get(sp, "name"));
        n += name && strcmp(name, "POST /v1/traces") != 0;
    }
    oms_mutex_lock(&rx_mu);
    rx_spans += n;
    snprintf(rx_ctype, sizeof(rx_ctype), "%s", ct ? ct : "");
    oms_mutex_unlock(&rx_mu);
    json_decref(j);
    oms_http_resp_text(resp, 200, "application/json", "{}", 2);
}

static int received(void)
{
    oms_mutex_lock(&rx_mu);
    int n = rx_spans;
    oms_mutex_unlock(&rx_mu);
    return n;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_export_to_receiver_and_to_nowhere(void **state)
{
    static const oms_http_route routes[] = {{"POST", "/v1/traces", rx_traces}};
    oms_http_config hc = {.addr = "127.0.0.1:0", .routes = routes, .nroutes = 1};
    oms_http_server *rx = NULL;
    char herr[256];
    assert_int_equal(oms_http_start(&rx, &hc, herr, sizeof(herr)), OMS_OK);
    char base[64], url[128];
    snprintf(base, sizeof(base), "127.0.0.1:%d", oms_http_port(rx));
    assert_int_equal(oms_tracer_endpoint_url(NULL, base, url, sizeof(url)), OMS_OK);
    oms_tracer_config cfg = {.service_name = "unit",
                             .endpoint = url,
                             .sampler = OMS_SAMPLER_ALWAYS_ON,
                             .schedule_delay_ms = 20,
                             .batch_size = 3};
    oms_error err;
    assert_int_equal(oms_tracer_init(&cfg, &err), OMS_OK);
    assert_true(oms_tracer_active());
    for (int i = 0; i < 7; i++)
        oms_span_end(oms_span_start("exported", OMS_SPAN_INTERNAL, NULL));
    for (int i = 0; i < 500 && received() < 7; i++)
        sleep_ms(10);
    assert_int_equal(received(), 7);
    oms_mutex_lock(&rx_mu);
    assert_string_equal(rx_ctype, "application/json");
    oms_mutex_unlock(&rx_mu);
    /* Spans still queued at shutdown are sent by the flush. */
    oms_span_end(oms_span_start("flushed", OMS_SPAN_INTERNAL, NULL));
    oms_tracer_shutdown(2000);
    assert_int_equal(received(), 8);
    oms_http_stop(rx);

    /* Nothing listens on the port any more: the batch fails, is dropped and counted. */
    double failures = metric_value("otel_export_failures_total ");
    double dropped = metric_value("otel_spans_dropped_total{reason=\"export_failed\"} ");
    cfg.export_timeout_ms = 1000;
    assert_int_equal(oms_tracer_init(&cfg, &err), OMS_OK);
    for (int i = 0; i < 2; i++)
        oms_span_end(oms_span_start("lost", OMS_SPAN_INTERNAL, NULL));
    oms_tracer_stats st;
    for (int i = 0; i < 500; i++) {
        oms_tracer_stats_get(&st);
        if (st.failed_batches > 0)
            break;
        sleep_ms(10);
    }
    assert_true(st.failed_batches > 0);
    assert_true(metric_value("otel_export_failures_total ") > failures);
    assert_true(metric_value("otel_spans_dropped_total{reason=\"export_failed\"} ") - dropped == 2);
    oms_tracer_shutdown(1000);
}

/* A collector that answers `refuse_status` to the first `refuse_left` requests. */
static int refuse_left, refuse_status;

static void rx_flaky(const oms_http_req *req, oms_http_resp *resp)
{
    oms_mutex_lock(&rx_mu);
    int refuse = refuse_left > 0;
    if (refuse)
        refuse_left--;
    oms_mutex_unlock(&rx_mu);
    if (refuse) {
        oms_http_resp_error(resp, refuse_status, "not now");
        return;
    }
    rx_traces(req, resp);
}

/* Runs one batch of 3 spans against a collector refusing the first `refusals`
 * requests with `status`; returns the spans received within 5 s. */
static int export_against(int status, int refusals, oms_http_server **rx_out)
{
    static const oms_http_route routes[] = {{"POST", "/v1/traces", rx_flaky}};
    oms_http_config hc = {.addr = "127.0.0.1:0", .routes = routes, .nroutes = 1};
    char herr[256], base[64], url[128];
    assert_int_equal(oms_http_start(rx_out, &hc, herr, sizeof(herr)), OMS_OK);
    snprintf(base, sizeof(base), "127.0.0.1:%d", oms_http_port(*rx_out));
    assert_int_equal(oms_tracer_endpoint_url(NULL, base, url, sizeof(url)), OMS_OK);
    oms_mutex_lock(&rx_mu);
    rx_spans = 0;
    refuse_left = refusals;
    refuse_status = status;
    oms_mutex_unlock(&rx_mu);
    oms_tracer_config cfg = {.service_name = "unit",
                             .endpoint = url,
                             .sampler = OMS_SAMPLER_ALWAYS_ON,
                             .schedule_delay_ms = 20,
                             .batch_size = 3,
                             .export_timeout_ms = 1000};
    oms_error err;
    assert_int_equal(oms_tracer_init(&cfg, &err), OMS_OK);
    for (int i = 0; i < 3; i++)
        oms_span_end(oms_span_start("retried", OMS_SPAN_INTERNAL, NULL));
    oms_tracer_stats st;
    for (int i = 0; i < 500 && received() < 3; i++) {
        oms_tracer_stats_get(&st);
        if (st.failed_batches > 0)
            break;
        sleep_ms(10);
    }
    return received();
}

/* 503 twice, then 200: the batch arrives whole after two retries, nothing dropped.
 * 400: final, no retry; the batch is dropped and counted. */
static void test_export_retries_retryable_answers(void **state)
{
    oms_http_server *rx = NULL;
    double retries = metric_value("otel_export_retries_total ");
    double dropped = metric_value("otel_spans_dropped_total{reason=\"export_failed\"} ");
    assert_int_equal(export_against(503, 2, &rx), 3);
    assert_true(metric_value("otel_export_retries_total ") - retries == 2);
    assert_true(metric_value("otel_spans_dropped_total{reason=\"export_failed\"} ") == dropped);
    oms_tracer_shutdown(1000);
    oms_http_stop(rx);

    retries = metric_value("otel_export_retries_total ");
    assert_int_equal(export_against(400, 1, &rx), 0);
    oms_tracer_shutdown(1000);
    oms_http_stop(rx);
    assert_true(metric_value("otel_export_retries_total ") == retries);
    assert_true(metric_value("otel_spans_dropped_total{reason=\"export_failed\"} ") - dropped == 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sampler_table),
        cmocka_unit_test(test_endpoint_table),
        cmocka_unit_test(test_span_json),
        cmocka_unit_test(test_current_context_restored),
        cmocka_unit_test(test_queue_overflow_drops_and_counts),
        cmocka_unit_test(test_disabled_records_nothing),
        cmocka_unit_test(test_unsampled_propagates_flag),
        cmocka_unit_test(test_export_to_receiver_and_to_nowhere),
        cmocka_unit_test(test_export_retries_retryable_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
