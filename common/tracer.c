/* Spans, sampling and the OTLP/HTTP JSON exporter (oms/tracer.h).
 *
 * Shape: a span is one heap object with fixed-size attribute, event and link tables
 * (so recording never grows anything after start). oms_span_end either frees it
 * (not recorded) or moves it into a ring of pointers guarded by one mutex; the
 * exporter thread wakes when a batch is full, when the oldest queued span has waited
 * schedule_delay_ms, or at shutdown, takes up to batch_size spans out of the ring,
 * and encodes and POSTs them outside the lock. So the only work a request thread
 * ever does for export is one mutex round trip; when the exporter is slow or the
 * collector is down the ring fills and new spans are dropped and counted.
 *
 * Current span: a thread-local pointer next to trace.c's thread-local context. Each
 * non-detached span remembers the context and span that were current when it started
 * and puts them back when it ends. */
#include "oms/tracer.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "oms/json_out.h"
#include "oms/log.h"
#include "oms/metrics.h"
#include "oms/util.h"

#define MAX_ATTRS 32
#define MAX_EVENTS 16
#define MAX_LINKS 8
#define MAX_STR 1024 /* attribute values and names are cut here */
#define DEFAULT_QUEUE 2048
#define DEFAULT_BATCH 512
#define DEFAULT_DELAY_MS 1000
#define DEFAULT_TIMEOUT_MS 10000
#define MAX_RESOURCE_ATTRS 16

static const char *const sampler_names[] = {
#define OMS_SAMPLER_NAME(name, str) str,
    OMS_SAMPLER_MAP(OMS_SAMPLER_NAME)
#undef OMS_SAMPLER_NAME
};

typedef struct span_attr {
    char *key;
    char *str; /* NULL for an integer attribute */
    long long num;
} span_attr;

typedef struct span_event {
    char *name;
    int64_t time_ns;
    char *key, *value; /* optional single attribute; both NULL when none */
} span_event;

struct oms_span {
    char *name;
    oms_span_kind kind;
    oms_trace_ctx ctx;
    uint8_t parent_span_id[8];
    int has_parent;
    int recording;
    int detached;
    /* What was current before this span started; restored by oms_span_end. */
    oms_trace_ctx prev_ctx;
    struct oms_span *prev_span;
    int64_t start_ns, start_mono_ns, end_ns;
    span_attr attrs[MAX_ATTRS];
    int nattrs, dropped_attrs;
    span_event events[MAX_EVENTS];
    int nevents, dropped_events;
    oms_trace_ctx links[MAX_LINKS];
    int nlinks, dropped_links;
    oms_span_status status;
    char *status_msg;
};

static _Thread_local oms_span *cur_span;

/* ---- tracer state ------------------------------------------------------------------ */

typedef struct resource_attr {
    char *key, *value;
} resource_attr;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* wakes the exporter: a full batch, or stop */
    atomic_int initialised; /* spans are recorded only while 1 */
    int recording;          /* endpoint or manual, and not disabled (immutable while init) */
    oms_sampler sampler;
    double ratio;
    char *service;
    char *endpoint;
    resource_attr res[MAX_RESOURCE_ATTRS];
    int nres;
    int queue_size, batch_size, delay_ms, timeout_ms;
    int manual;
    /* Under mu. */
    oms_span **ring;
    size_t head, count;
    int64_t oldest_mono_ns; /* when the oldest queued span was queued */
    int stop;
    int64_t stop_deadline_mono_ns;
    pthread_t thread;
    int thread_started;
    int curl_initialised;
    /* Counters (atomic: read without the lock). */
    atomic_ullong queued, dropped, exported, failed_batches;
} tr = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int64_t mono_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t real_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- sampling ------------------------------------------------------------------------ */

int oms_sampler_parse(const char *s)
{
    for (size_t i = 0; s && i < OMS_NELEM(sampler_names); i++)
        if (strcmp(s, sampler_names[i]) == 0)
            return (int)i;
    return -1;
}

static int ratio_keeps(double ratio, const uint8_t trace_id[16])
{
    if (!(ratio > 0))
        return 0;
    if (ratio >= 1)
        return 1;
    uint64_t v = 0;
    for (int i = 8; i < 16; i++)
        v = v << 8 | trace_id[i];
    /* Compared on 53 bits: ratio * 2^53 is exact in a double, ratio * 2^64 is not. */
    return (v >> 11) < (uint64_t)(ratio * 9007199254740992.0);
}

int oms_sampler_decide(oms_sampler s, double ratio, const oms_trace_ctx *parent,
                       const uint8_t trace_id[16])
{
    int has_parent = parent && parent->valid;
    switch (s) {
    case OMS_SAMPLER_ALWAYS_ON: return 1;
    case OMS_SAMPLER_ALWAYS_OFF: return 0;
    case OMS_SAMPLER_RATIO: return ratio_keeps(ratio, trace_id);
    case OMS_SAMPLER_PB_ALWAYS_ON: return has_parent ? (parent->flags & 1) : 1;
    case OMS_SAMPLER_PB_ALWAYS_OFF: return has_parent ? (parent->flags & 1) : 0;
    case OMS_SAMPLER_PB_RATIO:
        return has_parent ? (parent->flags & 1) : ratio_keeps(ratio, trace_id);
    }
    return 1;
}

/* ---- spans ---------------------------------------------------------------------------- */

/* Copy of s cut at MAX_STR bytes, never in the middle of a UTF-8 sequence. */
static char *bounded_dup(const char *s)
{
    if (!s)
        s = "";
    size_t n = strnlen(s, MAX_STR + 1);
    if (n > MAX_STR) {
        n = MAX_STR;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    char *out = oms_xmalloc(n + 1);
    memcpy(out, s, n);
    out[n] = '\0';
    return out;
}

static oms_span *span_new(const char *name, oms_span_kind kind, const oms_trace_ctx *parent)
{
    oms_span *s = oms_xcalloc(1, sizeof(*s));
    s->name = bounded_dup(name);
    s->kind = kind;
    if (parent && parent->valid) {
        oms_trace_new_child(parent, &s->ctx);
        memcpy(s->parent_span_id, parent->span_id, 8);
        s->has_parent = 1;
    } else {
        oms_trace_new_root(&s->ctx);
    }
    int init = atomic_load(&tr.initialised);
    /* Before init (unit tests of other modules, tools) the old behaviour holds: roots
     * are sampled, children follow their parent. */
    int sampled = init ? oms_sampler_decide(tr.sampler, tr.ratio, parent, s->ctx.trace_id)
                       : (s->has_parent ? (parent->flags & 1) : 1);
    s->ctx.flags = (uint8_t)((s->ctx.flags & ~1u) | (sampled ? 1u : 0u));
    s->recording = init && tr.recording && sampled;
    s->start_ns = real_ns();
    s->start_mono_ns = mono_ns();
    return s;
}

static void span_make_current(oms_span *s)
{
    const oms_trace_ctx *prev = oms_trace_current();
    if (prev)
        s->prev_ctx = *prev;
    s->prev_span = cur_span;
    oms_trace_set_current(&s->ctx);
    cur_span = s;
}

oms_span *oms_span_start(const char *name, oms_span_kind kind, const oms_trace_ctx *parent)
{
    oms_span *s = span_new(name, kind, parent ? parent : oms_trace_current());
    span_make_current(s);
    return s;
}

oms_span *oms_span_start_root(const char *name, oms_span_kind kind)
{
    oms_span *s = span_new(name, kind, NULL);
    span_make_current(s);
    return s;
}

oms_span *oms_span_start_detached(const char *name, oms_span_kind kind, const oms_trace_ctx *parent)
{
    oms_span *s = span_new(name, kind, parent);
    s->detached = 1;
    return s;
}

oms_span *oms_span_current(void)
{
    const oms_trace_ctx *c = oms_trace_current();
    /* Code that sets the context directly (oms_trace_set_current) leaves cur_span
     * stale; only a span whose ids are the current context counts. */
    if (!cur_span || !c || memcmp(c->span_id, cur_span->ctx.span_id, 8) != 0)
        return NULL;
    return cur_span;
}

const oms_trace_ctx *oms_span_context(const oms_span *s)
{
    return s ? &s->ctx : NULL;
}

int oms_span_recording(const oms_span *s)
{
    return s && s->recording;
}

void oms_span_set_name(oms_span *s, const char *name)
{
    if (!s || !name)
        return;
    free(s->name);
    s->name = bounded_dup(name);
}

/* The slot for key: the existing one (its old value freed) or a new one; NULL when the
 * table is full (counted). */
static span_attr *attr_slot(oms_span *s, const char *key)
{
    for (int i = 0; i < s->nattrs; i++) {
        if (strcmp(s->attrs[i].key, key) == 0) {
            free(s->attrs[i].str);
            s->attrs[i].str = NULL;
            return &s->attrs[i];
        }
    }
    if (s->nattrs >= MAX_ATTRS) {
        s->dropped_attrs++;
        return NULL;
    }
    span_attr *a = &s->attrs[s->nattrs++];
    a->key = bounded_dup(key);
    return a;
}

void oms_span_set_str(oms_span *s, const char *key, const char *value)
{
    if (!s || !s->recording || !key)
        return;
    span_attr *a = attr_slot(s, key);
    if (a)
        a->str = bounded_dup(value);
}

void oms_span_set_int(oms_span *s, const char *key, long long value)
{
    if (!s || !s->recording || !key)
        return;
    span_attr *a = attr_slot(s, key);
    if (a)
        a->num = value;
}

void oms_span_add_event(oms_span *s, const char *name, const char *key, const char *value)
{
    if (!s || !s->recording || !name)
        return;
    if (s->nevents >= MAX_EVENTS) {
        s->dropped_events++;
        return;
    }
    span_event *e = &s->events[s->nevents++];
    e->name = bounded_dup(name);
    e->time_ns = real_ns();
    if (key) {
        e->key = bounded_dup(key);
        e->value = bounded_dup(value);
    }
}

void oms_span_add_link(oms_span *s, const oms_trace_ctx *ctx)
{
    if (!s || !s->recording || !ctx || !ctx->valid)
        return;
    if (s->nlinks >= MAX_LINKS) {
        s->dropped_links++;
        return;
    }
    s->links[s->nlinks++] = *ctx;
}

void oms_span_set_status(oms_span *s, oms_span_status status, const char *msg)
{
    if (!s)
        return;
    s->status = status;
    free(s->status_msg);
    s->status_msg = status == OMS_SPAN_ERROR && msg && *msg ? bounded_dup(msg) : NULL;
}

static void span_free(oms_span *s)
{
    if (!s)
        return;
    free(s->name);
    for (int i = 0; i < s->nattrs; i++) {
        free(s->attrs[i].key);
        free(s->attrs[i].str);
    }
    for (int i = 0; i < s->nevents; i++) {
        free(s->events[i].name);
        free(s->events[i].key);
        free(s->events[i].value);
    }
    free(s->status_msg);
    free(s);
}

static void count_dropped(const char *reason, unsigned long long n)
{
    if (!n)
        return;
    atomic_fetch_add(&tr.dropped, n);
    char labels[64] = "";
    oms_metrics_label(labels, sizeof(labels), "reason", reason);
    oms_metrics_counter_add("otel_spans_dropped_total",
                            "Finished spans not exported: queue full, or the collector failed",
                            labels, (double)n);
}

/* Puts s into the ring; 0 when there was no room (or the tracer is stopping). */
static int enqueue(oms_span *s)
{
    int ok = 0, wake = 0;
    oms_mutex_lock(&tr.mu);
    if (tr.ring && !tr.stop && tr.count < (size_t)tr.queue_size) {
        if (tr.count == 0)
            tr.oldest_mono_ns = mono_ns();
        tr.ring[(tr.head + tr.count) % (size_t)tr.queue_size] = s;
        tr.count++;
        ok = 1;
        /* Waking the exporter for every span would cost a context switch each; it
         * wakes by itself when its delay passes, so only a full batch needs a signal. */
        wake = tr.count == (size_t)tr.batch_size;
    }
    if (wake)
        oms_cond_broadcast(&tr.cv);
    oms_mutex_unlock(&tr.mu);
    return ok;
}

void oms_span_end(oms_span *s)
{
    if (!s)
        return;
    s->end_ns = s->start_ns + (mono_ns() - s->start_mono_ns);
    if (!s->detached) {
        oms_trace_set_current(s->prev_ctx.valid ? &s->prev_ctx : NULL);
        cur_span = s->prev_span;
    }
    if (!s->recording || !atomic_load(&tr.initialised)) {
        span_free(s);
        return;
    }
    if (enqueue(s)) {
        atomic_fetch_add(&tr.queued, 1);
        return;
    }
    span_free(s);
    count_dropped("queue_full", 1);
}

/* ---- OTLP JSON ------------------------------------------------------------------------ */

static void hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* int64 fields are JSON strings in OTLP/JSON (proto3 mapping). */
static json_t *jint64(long long v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%lld", v);
    return json_string(buf);
}

/* {"key":k,"value":{"stringValue":v}} or {"intValue":"n"}. */
static json_t *kv(const char *key, const char *str, long long num)
{
    json_t *val = json_object();
    json_object_set_new(val, str ? "stringValue" : "intValue",
                        str ? oms_json_string_lossy(str) : jint64(num));
    json_t *o = json_object();
    json_object_set_new(o, "key", oms_json_string_lossy(key));
    json_object_set_new(o, "value", val);
    return o;
}

static json_t *span_json(const oms_span *s)
{
    char tid[33], sid[17], pid[17];
    hex(s->ctx.trace_id, 16, tid);
    hex(s->ctx.span_id, 8, sid);
    json_t *o = json_object();
    json_object_set_new(o, "traceId", json_string(tid));
    json_object_set_new(o, "spanId", json_string(sid));
    if (s->has_parent) {
        hex(s->parent_span_id, 8, pid);
        json_object_set_new(o, "parentSpanId", json_string(pid));
    }
    json_object_set_new(o, "name", oms_json_string_lossy(s->name));
    json_object_set_new(o, "kind", json_integer(s->kind));
    json_object_set_new(o, "startTimeUnixNano", jint64(s->start_ns));
    json_object_set_new(o, "endTimeUnixNano", jint64(s->end_ns));
    json_t *attrs = json_array();
    for (int i = 0; i < s->nattrs; i++)
        json_array_append_new(attrs, kv(s->attrs[i].key, s->attrs[i].str, s->attrs[i].num));
    json_object_set_new(o, "attributes", attrs);
    if (s->dropped_attrs)
        json_object_set_new(o, "droppedAttributesCount", json_integer(s->dropped_attrs));
    json_t *events = json_array();
    for (int i = 0; i < s->nevents; i++) {
        const span_event *e = &s->events[i];
        json_t *eo = json_object();
        json_object_set_new(eo, "timeUnixNano", jint64(e->time_ns));
        json_object_set_new(eo, "name", oms_json_string_lossy(e->name));
        json_t *ea = json_array();
        if (e->key)
            json_array_append_new(ea, kv(e->key, e->value, 0));
        json_object_set_new(eo, "attributes", ea);
        json_array_append_new(events, eo);
    }
    json_object_set_new(o, "events", events);
    if (s->dropped_events)
        json_object_set_new(o, "droppedEventsCount", json_integer(s->dropped_events));
    json_t *links = json_array();
    for (int i = 0; i < s->nlinks; i++) {
        char ltid[33], lsid[17];
        hex(s->links[i].trace_id, 16, ltid);
        hex(s->links[i].span_id, 8, lsid);
        json_array_append_new(links, json_pack("{s:s,s:s}", "traceId", ltid, "spanId", lsid));
    }
    json_object_set_new(o, "links", links);
    if (s->dropped_links)
        json_object_set_new(o, "droppedLinksCount", json_integer(s->dropped_links));
    json_t *st = json_object();
    json_object_set_new(st, "code", json_integer(s->status));
    if (s->status_msg)
        json_object_set_new(st, "message", oms_json_string_lossy(s->status_msg));
    json_object_set_new(o, "status", st);
    return o;
}

/* The request body for n spans (heap, caller frees), or NULL on OOM. */
static char *encode_batch(oms_span *const *spans, size_t n)
{
    json_t *rattrs = json_array();
    json_array_append_new(rattrs, kv("service.name", tr.service ? tr.service : "oms", 0));
    json_array_append_new(rattrs, kv("telemetry.sdk.name", "oms", 0));
    json_array_append_new(rattrs, kv("telemetry.sdk.language", "c", 0));
    for (int i = 0; i < tr.nres; i++)
        json_array_append_new(rattrs, kv(tr.res[i].key, tr.res[i].value, 0));
    json_t *jspans = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(jspans, span_json(spans[i]));
    json_t *scope = json_pack("{s:{s:s},s:o}", "scope", "name", "oms", "spans", jspans);
    json_t *root = json_pack("{s:[{s:{s:o},s:[o]}]}", "resourceSpans", "resource", "attributes",
                             rattrs, "scopeSpans", scope);
    if (!root)
        return NULL;
    char *body = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return body;
}

/* ---- exporter ----------------------------------------------------------------------- */

#define EXPORT_RETRIES 3       /* after the first attempt */
#define EXPORT_BACKOFF_MS 250L /* doubled each time: 250, 500, 1000 ms */

static size_t discard_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    return size * nmemb;
}

/* POSTs body; OMS_OK on a 2xx answer. As the OTLP/HTTP spec says, network trouble and
 * 429/502/503/504 are worth a retry (OMS_AGAIN); any other answer is final (OMS_ERR).
 * The reason is in err. */
static int post_batch(CURL *curl, struct curl_slist *hdrs, const char *body, long timeout_ms,
                      oms_error *err)
{
    curl_easy_setopt(curl, CURLOPT_URL, tr.endpoint);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 1L);
    CURLcode cc = curl_easy_perform(curl);
    if (cc != CURLE_OK)
        return oms_error_set(err, OMS_AGAIN, "%s: %s", tr.endpoint, curl_easy_strerror(cc));
    long status = 0;
    cc = curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (cc == CURLE_OK && status >= 200 && status <= 299)
        return OMS_OK;
    int again = cc != CURLE_OK || status == 429 || status == 502 || status == 503 || status == 504;
    return oms_error_set(err, again ? OMS_AGAIN : OMS_ERR, "%s: HTTP status %ld", tr.endpoint,
                         status);
}

/* Waits ms before another attempt; returns 1 at once when the tracer is stopping (the
 * shutdown flush has its own deadline and makes no retries). */
static int backoff_or_stop(long ms)
{
    struct timespec until;
    if (oms_deadline_after_ns(CLOCK_MONOTONIC, ms * 1000000LL, &until) != OMS_OK)
        return 1;
    oms_mutex_lock(&tr.mu);
    int e = 0;
    while (!tr.stop && e != ETIMEDOUT)
        e = oms_cond_timedwait(&tr.cv, &tr.mu, &until);
    int stopping = tr.stop;
    oms_mutex_unlock(&tr.mu);
    return stopping;
}

/* Frees every span still in the ring; returns how many. Caller holds mu. */
static size_t ring_clear(void)
{
    size_t n = tr.count;
    while (tr.count > 0) {
        span_free(tr.ring[tr.head]);
        tr.head = (tr.head + 1) % (size_t)tr.queue_size;
        tr.count--;
    }
    return n;
}

/* Takes up to batch_size spans out of the ring; caller holds mu. */
static size_t take_batch(oms_span **out, size_t max)
{
    size_t n = 0;
    while (n < max && tr.count > 0) {
        out[n++] = tr.ring[tr.head];
        tr.head = (tr.head + 1) % (size_t)tr.queue_size;
        tr.count--;
    }
    if (tr.count > 0)
        tr.oldest_mono_ns = mono_ns(); /* close enough: the rest waits one more delay */
    return n;
}

static void *exporter_main(void *arg)
{
    oms_thread_background();
    CURL *curl = curl_easy_init();
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    oms_span **batch = oms_xcalloc((size_t)tr.batch_size, sizeof(*batch));
    int failing = 0;
    if (curl) {
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for timeouts */
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard_body);
        curl_easy_setopt(curl, CURLOPT_USERAGENT, "oms-otlp/1");
    } else {
        oms_log_error("tracer: curl_easy_init failed; spans will be dropped");
    }

    oms_mutex_lock(&tr.mu);
    for (;;) {
        /* Wait until a batch is full, the oldest span has waited long enough, or stop. */
        while (!tr.stop && tr.count < (size_t)tr.batch_size) {
            int64_t wait_ns = (int64_t)tr.delay_ms * 1000000LL;
            if (tr.count > 0) {
                int64_t due = tr.oldest_mono_ns + wait_ns - mono_ns();
                if (due <= 0)
                    break;
                wait_ns = due;
            }
            struct timespec until;
            if (oms_deadline_after_ns(CLOCK_MONOTONIC, wait_ns, &until) != OMS_OK)
                break; /* no clock: export now rather than wait forever */
            (void)oms_cond_timedwait(&tr.cv, &tr.mu, &until);
        }
        if (tr.stop && (tr.count == 0 || mono_ns() >= tr.stop_deadline_mono_ns))
            break;
        size_t n = take_batch(batch, (size_t)tr.batch_size);
        long timeout_ms = tr.timeout_ms;
        if (tr.stop) {
            /* Shutdown flush: never past the caller's deadline. */
            long left = (long)((tr.stop_deadline_mono_ns - mono_ns()) / 1000000LL);
            if (left < timeout_ms)
                timeout_ms = left;
        }
        oms_mutex_unlock(&tr.mu);

        if (n > 0) {
            oms_error err;
            oms_error_clear(&err);
            char *body = curl ? encode_batch(batch, n) : NULL;
            int rc = body ? post_batch(curl, hdrs, body, timeout_ms, &err)
                          : oms_error_set(&err, OMS_ERR, "cannot encode or send spans");
            /* A collector restarting or overloaded gets a few more tries, with backoff;
             * new spans meanwhile wait in the bounded queue. */
            for (int attempt = 0; rc == OMS_AGAIN && attempt < EXPORT_RETRIES; attempt++) {
                if (backoff_or_stop(EXPORT_BACKOFF_MS << attempt))
                    break;
                oms_metrics_counter_add("otel_export_retries_total",
                                        "Span batches sent again after a retryable failure", NULL,
                                        1);
                oms_error_clear(&err);
                rc = post_batch(curl, hdrs, body, timeout_ms, &err);
            }
            free(body);
            for (size_t i = 0; i < n; i++)
                span_free(batch[i]);
            if (rc == OMS_OK) {
                atomic_fetch_add(&tr.exported, n);
                oms_metrics_counter_add("otel_spans_exported_total",
                                        "Spans accepted by the OTLP collector", NULL, (double)n);
                if (failing)
                    oms_log_info("tracer: span export resumed", "endpoint", tr.endpoint);
                failing = 0;
            } else {
                atomic_fetch_add(&tr.failed_batches, 1);
                oms_metrics_counter_add("otel_export_failures_total",
                                        "Span batches the OTLP collector did not accept", NULL, 1);
                count_dropped("export_failed", n);
                /* Once per outage, not once per batch. */
                if (!failing)
                    oms_log_warn("tracer: span export failed after retries; dropping spans "
                                 "until it works",
                                 "error", err.msg);
                failing = 1;
            }
        }

        oms_mutex_lock(&tr.mu);
    }
    /* Whatever is left after the deadline is lost; say how much. */
    size_t left = ring_clear();
    oms_mutex_unlock(&tr.mu);
    count_dropped("shutdown", left);

    free(batch);
    curl_slist_free_all(hdrs);
    if (curl)
        curl_easy_cleanup(curl);
    return NULL;
}

/* ---- configuration and life cycle ------------------------------------------------------ */

int oms_tracer_endpoint_url(const char *traces_endpoint, const char *endpoint, char *out,
                            size_t outlen)
{
    const char *base = traces_endpoint && *traces_endpoint ? traces_endpoint : endpoint;
    int as_is = base == traces_endpoint;
    if (outlen == 0)
        return OMS_INVALID;
    out[0] = '\0';
    if (!base || !*base)
        return OMS_OK;
    const char *scheme = strstr(base, "://");
    if (scheme && strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0)
        return OMS_INVALID;
    size_t bl = strlen(base);
    /* One trailing slash of a base URL is not doubled ("http://h:4318/" + "v1/traces"). */
    if (!as_is && bl > 0 && base[bl - 1] == '/')
        bl--;
    int n = snprintf(out, outlen, "%s%.*s%s", scheme ? "" : "http://", (int)bl, base,
                     as_is ? "" : "/v1/traces");
    if (n < 0 || (size_t)n >= outlen) {
        out[0] = '\0';
        return OMS_INVALID;
    }
    return OMS_OK;
}

/* OTEL_RESOURCE_ATTRIBUTES: "k=v,k2=v2"; malformed members are skipped (the spec says
 * to discard them) and service.name is left to OTEL_SERVICE_NAME. */
static void parse_resource_attrs(const char *s)
{
    if (!s)
        return;
    char *copy = oms_strdup(s);
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && tr.nres < MAX_RESOURCE_ATTRS;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok)
            continue;
        *eq = '\0';
        if (strcmp(tok, "service.name") == 0)
            continue;
        tr.res[tr.nres].key = bounded_dup(tok);
        tr.res[tr.nres].value = bounded_dup(eq + 1);
        tr.nres++;
    }
    free(copy);
}

static void state_free(void)
{
    free(tr.service);
    free(tr.endpoint);
    for (int i = 0; i < tr.nres; i++) {
        free(tr.res[i].key);
        free(tr.res[i].value);
    }
    free(tr.ring);
    tr.service = tr.endpoint = NULL;
    tr.ring = NULL;
    tr.nres = 0;
    tr.head = tr.count = 0;
    if (tr.curl_initialised)
        curl_global_cleanup();
    tr.curl_initialised = 0;
}

int oms_tracer_init(const oms_tracer_config *cfg, oms_error *err)
{
    if (!cfg)
        return oms_error_set(err, OMS_INVALID, "tracer: no configuration");
    if (atomic_load(&tr.initialised))
        return oms_error_set(err, OMS_INVALID, "tracer: already initialised");
    int e = oms_cond_init_monotonic(&tr.cv);
    if (e != 0)
        return oms_error_set(err, OMS_ERR, "tracer: cond init: %s", strerror(e));

    tr.sampler = cfg->sampler;
    tr.ratio = cfg->ratio;
    tr.service = oms_strdup(cfg->service_name && *cfg->service_name ? cfg->service_name : "oms");
    tr.endpoint = oms_strdup(cfg->endpoint ? cfg->endpoint : "");
    parse_resource_attrs(cfg->resource_attrs);
    tr.queue_size = cfg->queue_size > 0 ? cfg->queue_size : DEFAULT_QUEUE;
    tr.batch_size = cfg->batch_size > 0 ? cfg->batch_size : DEFAULT_BATCH;
    if (tr.batch_size > tr.queue_size)
        tr.batch_size = tr.queue_size;
    tr.delay_ms = cfg->schedule_delay_ms > 0 ? cfg->schedule_delay_ms : DEFAULT_DELAY_MS;
    tr.timeout_ms = cfg->export_timeout_ms > 0 ? cfg->export_timeout_ms : DEFAULT_TIMEOUT_MS;
    tr.manual = cfg->manual;
    tr.stop = 0;
    tr.recording = !cfg->disabled && (cfg->manual || tr.endpoint[0]);
    atomic_store(&tr.queued, 0);
    atomic_store(&tr.dropped, 0);
    atomic_store(&tr.exported, 0);
    atomic_store(&tr.failed_batches, 0);

    /* Zero series, so a scrape shows them before anything happened. */
    static const char *const reasons[] = {"queue_full", "export_failed"};
    for (size_t i = 0; i < OMS_NELEM(reasons); i++) {
        char labels[64] = "";
        oms_metrics_label(labels, sizeof(labels), "reason", reasons[i]);
        oms_metrics_counter_add("otel_spans_dropped_total",
                                "Finished spans not exported: queue full, or the collector failed",
                                labels, 0);
    }
    oms_metrics_counter_add("otel_spans_exported_total", "Spans accepted by the OTLP collector",
                            NULL, 0);
    oms_metrics_counter_add("otel_export_failures_total",
                            "Span batches the OTLP collector did not accept", NULL, 0);

    if (tr.recording) {
        tr.ring = oms_xcalloc((size_t)tr.queue_size, sizeof(*tr.ring));
        if (!tr.manual) {
            if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                state_free();
                pthread_cond_destroy(&tr.cv);
                return oms_error_set(err, OMS_ERR, "tracer: curl_global_init failed");
            }
            tr.curl_initialised = 1;
            e = pthread_create(&tr.thread, NULL, exporter_main, NULL);
            if (e != 0) {
                state_free();
                pthread_cond_destroy(&tr.cv);
                return oms_error_set(err, OMS_ERR, "tracer: cannot start the exporter: %s",
                                     strerror(e));
            }
            tr.thread_started = 1;
        }
    }
    atomic_store(&tr.initialised, 1);
    if (tr.recording && !tr.manual)
        oms_log_info("tracer: exporting spans", "endpoint", tr.endpoint, "service", tr.service,
                     "sampler", sampler_names[tr.sampler]);
    return OMS_OK;
}

int oms_tracer_active(void)
{
    return atomic_load(&tr.initialised) && tr.recording;
}

void oms_tracer_shutdown(int timeout_ms)
{
    if (!atomic_load(&tr.initialised))
        return;
    /* From here on oms_span_end frees spans instead of queueing them. */
    atomic_store(&tr.initialised, 0);
    oms_mutex_lock(&tr.mu);
    tr.stop = 1;
    tr.stop_deadline_mono_ns = mono_ns() + (int64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000LL;
    oms_cond_broadcast(&tr.cv);
    oms_mutex_unlock(&tr.mu);
    if (tr.thread_started) {
        int e = pthread_join(tr.thread, NULL);
        if (e != 0)
            oms_log_errorf("tracer: joining the exporter: %s", strerror(e));
        tr.thread_started = 0;
    }
    oms_mutex_lock(&tr.mu);
    /* Manual mode has no exporter to empty the ring. */
    size_t left = ring_clear();
    state_free();
    oms_mutex_unlock(&tr.mu);
    count_dropped("shutdown", left);
    pthread_cond_destroy(&tr.cv);
}

void oms_tracer_stats_get(oms_tracer_stats *out)
{
    out->queued = atomic_load(&tr.queued);
    out->dropped = atomic_load(&tr.dropped);
    out->exported = atomic_load(&tr.exported);
    out->failed_batches = atomic_load(&tr.failed_batches);
}

char *oms_tracer_drain_json(size_t *n)
{
    *n = 0;
    oms_mutex_lock(&tr.mu);
    size_t count = tr.count;
    if (!tr.ring || count == 0) {
        oms_mutex_unlock(&tr.mu);
        return NULL;
    }
    oms_span **spans = oms_xcalloc(count, sizeof(*spans));
    take_batch(spans, count);
    oms_mutex_unlock(&tr.mu);
    char *body = encode_batch(spans, count);
    for (size_t i = 0; i < count; i++)
        span_free(spans[i]);
    free(spans);
    *n = count;
    return body;
}
