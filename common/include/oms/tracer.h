/* Spans and their export (OpenTelemetry semantics, OTLP/HTTP JSON), on top of the ids
 * and the thread's current context in oms/trace.h.
 *
 * A span is started on a thread and becomes that thread's current context, so logs
 * (oms/log.h), outgoing gRPC metadata and outbox rows pick it up; ending it restores
 * the context that was current before. Spans on one thread end in the reverse order
 * they started (LIFO), like nested scopes. A detached span never touches the current
 * context (the outbox relay keeps one per row of a batch).
 *
 * Ending a recorded span hands it to a bounded queue; a background thread sends the
 * queue in batches to the OTLP/HTTP endpoint with libcurl. A full queue drops the span
 * and counts it in otel_spans_dropped_total{reason="queue_full"}: a request never
 * waits for the exporter. A batch the collector does not accept (down, timeout,
 * non-2xx) is dropped and counted in otel_spans_dropped_total{reason="export_failed"}
 * and otel_export_failures_total.
 *
 * Without oms_tracer_init, with OTEL_SDK_DISABLED, without an endpoint, or for a span
 * the sampler declined, spans still carry ids (logs and propagation keep working) but
 * nothing is recorded. Every function accepts a NULL span and does nothing. */
#ifndef OMS_TRACER_H
#define OMS_TRACER_H

#include <stddef.h>
#include <stdint.h>

#include "oms/status.h"
#include "oms/trace.h"

/* The values are OTLP's SpanKind numbers. */
typedef enum {
    OMS_SPAN_INTERNAL = 1,
    OMS_SPAN_SERVER = 2,
    OMS_SPAN_CLIENT = 3,
    OMS_SPAN_PRODUCER = 4,
    OMS_SPAN_CONSUMER = 5,
} oms_span_kind;

/* OTLP's Status.code numbers. */
typedef enum { OMS_SPAN_UNSET = 0, OMS_SPAN_OK = 1, OMS_SPAN_ERROR = 2 } oms_span_status;

/* XX(NAME, OTEL_TRACES_SAMPLER value) */
#define OMS_SAMPLER_MAP(XX)                                                                        \
    XX(ALWAYS_ON, "always_on")                                                                     \
    XX(ALWAYS_OFF, "always_off")                                                                   \
    XX(RATIO, "traceidratio")                                                                      \
    XX(PB_ALWAYS_ON, "parentbased_always_on")                                                      \
    XX(PB_ALWAYS_OFF, "parentbased_always_off")                                                    \
    XX(PB_RATIO, "parentbased_traceidratio")

typedef enum {
#define OMS_SAMPLER_ENUM(name, str) OMS_SAMPLER_##name,
    OMS_SAMPLER_MAP(OMS_SAMPLER_ENUM)
#undef OMS_SAMPLER_ENUM
} oms_sampler;

/* "always_on" -> OMS_SAMPLER_ALWAYS_ON; -1 when unknown. */
int oms_sampler_parse(const char *s);
/* The sampling decision for a new span of trace_id: parent-based samplers follow a
 * valid parent's sampled flag and apply their root sampler otherwise; the others
 * ignore the parent. traceidratio keeps a trace when the trace id's last 8 bytes,
 * read big-endian, fall below ratio * 2^64, so every service decides alike. */
int oms_sampler_decide(oms_sampler s, double ratio, const oms_trace_ctx *parent,
                       const uint8_t trace_id[16]);

typedef struct oms_tracer_config {
    const char *service_name;   /* resource service.name (copied) */
    const char *endpoint;       /* full traces URL (".../v1/traces"); NULL or "": no export */
    const char *resource_attrs; /* OTEL_RESOURCE_ATTRIBUTES "k=v,k2=v2"; may be NULL */
    oms_sampler sampler;
    double ratio;          /* 0..1, for the ratio samplers */
    int disabled;          /* OTEL_SDK_DISABLED: ids only, nothing recorded */
    int queue_size;        /* finished spans waiting for export; 0 = 2048 */
    int batch_size;        /* spans per request; 0 = 512 */
    int schedule_delay_ms; /* longest a span waits before its batch goes; 0 = 1000 */
    int export_timeout_ms; /* per request; 0 = 10000 */
    int manual;            /* tests: record and queue without an endpoint or exporter
                            * thread; oms_tracer_drain_json takes the queue */
} oms_tracer_config;

/* Builds the traces URL: traces_endpoint as-is when non-empty, else endpoint (a base
 * URL, or host:port as the original's JAEGER_ADDR was) with "/v1/traces" appended;
 * "http://" is added when no scheme is given. Writes "" when both are empty.
 * Returns OMS_OK, or OMS_INVALID when the result does not fit or has another scheme. */
int oms_tracer_endpoint_url(const char *traces_endpoint, const char *endpoint, char *out,
                            size_t outlen);

/* Process-wide; call once before starting threads that make spans. Copies cfg.
 * OMS_ERR when the exporter thread or libcurl cannot start (spans then stay
 * unrecorded). Also creates the otel_* metric series at zero. */
int oms_tracer_init(const oms_tracer_config *cfg, oms_error *err);
/* Sends what is queued, waiting at most timeout_ms (spans still queued then are
 * dropped), stops the exporter and frees everything. Spans ended afterwards are not
 * recorded. Safe without init, and twice. */
void oms_tracer_shutdown(int timeout_ms);
/* 1 when ended spans are being recorded (init done, not disabled, endpoint or manual). */
int oms_tracer_active(void);

typedef struct oms_span oms_span;

/* The attribute that ties spans to an order: the trace store and oms-trace find an
 * order's traces by it. */
#define OMS_ATTR_ORDER_ID "order.id"

/* Starts a span that becomes the thread's current context. parent: the context to
 * continue (e.g. parsed from a traceparent), or NULL for the thread's current one; with
 * neither, a new trace starts. name is copied (names are low-cardinality: routes, not
 * paths). The span is owned by the caller until oms_span_end. Never NULL. */
oms_span *oms_span_start(const char *name, oms_span_kind kind, const oms_trace_ctx *parent);
/* Same, always in a new trace (a request whose traceparent was absent or malformed). */
oms_span *oms_span_start_root(const char *name, oms_span_kind kind);
/* A span that does not become current and restores nothing when it ends. parent NULL:
 * a new trace (not the current context). */
oms_span *oms_span_start_detached(const char *name, oms_span_kind kind,
                                  const oms_trace_ctx *parent);
/* The span the calling thread is in (the last one it started and has not ended, while
 * it is still the current context), or NULL. Borrowed. */
oms_span *oms_span_current(void);
/* The span's ids; valid until oms_span_end. */
const oms_trace_ctx *oms_span_context(const oms_span *s);
/* 1 when the span will be exported. */
int oms_span_recording(const oms_span *s);

/* Attributes (key and value copied; setting a key again replaces it). At most 32 per
 * span, strings cut at 1 KiB; beyond that they are counted as dropped. */
void oms_span_set_str(oms_span *s, const char *key, const char *value);
void oms_span_set_int(oms_span *s, const char *key, long long value);
void oms_span_set_name(oms_span *s, const char *name);
/* An event now, with one optional string attribute (key NULL for none). At most 16. */
void oms_span_add_event(oms_span *s, const char *name, const char *key, const char *value);
/* A link to another span's context (e.g. the request that triggered this work from
 * another trace). Invalid contexts are ignored. At most 8. */
void oms_span_add_link(oms_span *s, const oms_trace_ctx *ctx);
/* msg (copied, may be NULL) is kept for ERROR only, as OTLP prescribes. */
void oms_span_set_status(oms_span *s, oms_span_status status, const char *msg);
/* Ends the span: restores the previous current context (unless detached), hands a
 * recorded span to the export queue, frees the rest. s is invalid afterwards. */
void oms_span_end(oms_span *s);

/* Counters, for tests and logs. */
typedef struct oms_tracer_stats {
    unsigned long long queued;   /* ended spans accepted into the queue */
    unsigned long long dropped;  /* lost: queue full, export failed, shutdown */
    unsigned long long exported; /* accepted by the collector */
    unsigned long long failed_batches;
} oms_tracer_stats;
void oms_tracer_stats_get(oms_tracer_stats *out);

/* Manual mode (tests): takes every queued span and returns the OTLP JSON request body
 * they would be sent as (heap, caller frees), with the number of spans in *n; NULL
 * when none is queued. */
char *oms_tracer_drain_json(size_t *n);

#endif
