/* oms-tracestore: a small offline trace store for laptops and CI, where no Jaeger can
 * be installed. It speaks the receiving half of OTLP/HTTP with JSON bodies
 * (POST /v1/traces, the request the services' exporters send), keeps the spans in
 * SQLite, and serves them back:
 *
 *   GET /api/traces?order_id=X   every trace with a span tagged order.id = X
 *   GET /api/traces              the 20 latest traces that concern an order (summaries)
 *   GET /api/traces/{traceId}    one trace
 *   GET /trace.html?order_id=X   a waterfall page over the above (plain HTML and JS)
 *
 * Traces are answered as {"traces":[{"traceId", "startTimeUnixNano", "durationMs",
 * "services":[...], "spans":[{traceId, spanId, parentSpanId, service, name, kind,
 * startTimeUnixNano, endTimeUnixNano, status:{code, message}, attributes, events,
 * links}]}]}, spans in start order. Only JSON bodies are accepted (protobuf: 415).
 *
 * Everything is bounded, since any process on the machine can post to it and a
 * runaway trace (a retry loop) must not eat the disk or make a page unloadable:
 *  - a request body: MAX_BODY (413 beyond it, before it is parsed);
 *  - spans kept: MAX_TRACE_SPANS per trace and TRACESTORE_MAX_SPANS in all, the
 *    oldest (first arrived) dropped first;
 *  - spans answered: MAX_TRACE_SPANS per trace, RESULT_TRACES traces and RESULT_SPANS
 *    spans per answer, the newest traces kept; an answer (or a trace) that left
 *    something out says "truncated": true. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "oms/admin.h"
#include "oms/config.h"
#include "oms/db.h"
#include "oms/http.h"
#include "oms/log.h"
#include "oms/util.h"

/* One export batch: the default 512 spans are well under 1 MiB; even the largest
 * batch an exporter is likely configured for fits, anything bigger is not a batch. */
#define MAX_BODY (4u << 20)
#define MAX_TRACE_SPANS 5000 /* one order's trace has a few dozen */
#define RESULT_TRACES 50     /* traces of one order in one answer */
#define RESULT_SPANS 20000   /* spans in one answer, all its traces together */
#define RECENT_TRACES 20

static struct {
    char *addr;
    char *db_url;
    long long max_spans;
    char *log_level;
    char *log_format;
} cfg;

static const oms_cfg_def config_table[] = {
    {"TRACESTORE_ADDR", OMS_CFG_ADDR, "127.0.0.1:4318", 0, 0, NULL, &cfg.addr, NULL,
     "listen address (4318 is the OTLP/HTTP port)"},
    {"TRACESTORE_DB", OMS_CFG_STR, "var/traces.db", 0, 0, NULL, &cfg.db_url, NULL,
     "SQLite file of the spans"},
    {"TRACESTORE_MAX_SPANS", OMS_CFG_INT, "200000", 100, 100000000, NULL, &cfg.max_spans, NULL,
     "spans kept; the oldest go first"},
    {"LOG_LEVEL", OMS_CFG_ENUM, "info", 0, 0, "debug|info|warn|error", &cfg.log_level, NULL,
     "lowest level logged"},
    {"LOG_FORMAT", OMS_CFG_ENUM, "json", 0, 0, "json|console", &cfg.log_format, NULL,
     "json lines, or console for humans"},
};
#define CONFIG_COUNT OMS_NELEM(config_table)

static const oms_db_migration migrations[] = {
    {"spans_v1",
     "CREATE TABLE spans ("
     " id INTEGER PRIMARY KEY,"
     " trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_span_id TEXT,"
     " service TEXT NOT NULL, name TEXT NOT NULL, kind INTEGER NOT NULL,"
     " start_ns BIGINT NOT NULL, end_ns BIGINT NOT NULL,"
     " status_code INTEGER NOT NULL, status_message TEXT, order_id TEXT,"
     " attributes TEXT NOT NULL, events TEXT NOT NULL, links TEXT NOT NULL,"
     " UNIQUE (trace_id, span_id));"
     "CREATE INDEX spans_trace ON spans (trace_id);"
     "CREATE INDEX spans_order ON spans (order_id);",
     NULL},
};

static oms_db *db;

/* ---- receiving -------------------------------------------------------------------- */

/* A string field, or "" when absent or not a string. Borrowed from j. */
static const char *str_field(const json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

/* Nanoseconds: OTLP/JSON sends int64 as a string, some encoders as a number. */
static long long nanos_field(const json_t *j, const char *key)
{
    const json_t *v = json_object_get(j, key);
    if (json_is_integer(v))
        return (long long)json_integer_value(v);
    const char *s = json_string_value(v);
    if (!s)
        return 0;
    char *end = NULL;
    long long n = strtoll(s, &end, 10);
    return end && *end == '\0' ? n : 0;
}

/* The string value of attribute key in an OTLP attribute list, or NULL. */
static const char *attr_string(const json_t *attrs, const char *key)
{
    size_t i;
    const json_t *a;
    json_array_foreach(attrs, i, a)
    {
        if (strcmp(str_field(a, "key"), key) == 0)
            return json_string_value(json_object_get(json_object_get(a, "value"), "stringValue"));
    }
    return NULL;
}

/* A field as compact JSON text (heap), "[]" when absent. */
static char *json_text(const json_t *j, const char *key)
{
    const json_t *v = json_object_get(j, key);
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    return s ? s : oms_strdup("[]");
}

/* 1 when s is n lowercase hex digits (ids are stored and queried in this form). */
static int is_hex_id(const char *s, size_t n)
{
    if (strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static int store_span(oms_db_tx *tx, const char *service, const json_t *sp, oms_error *err)
{
    const char *tid = str_field(sp, "traceId"), *sid = str_field(sp, "spanId");
    const char *pid = str_field(sp, "parentSpanId");
    if (!is_hex_id(tid, 32) || !is_hex_id(sid, 16))
        return oms_error_set(err, OMS_INVALID, "span without a hex traceId/spanId");
    const json_t *attrs = json_object_get(sp, "attributes");
    const char *order_id = attr_string(attrs, "order.id");
    const json_t *status = json_object_get(sp, "status");
    char *a = json_text(sp, "attributes"), *e = json_text(sp, "events"),
         *l = json_text(sp, "links");
    const char *smsg = str_field(status, "message");
    oms_db_param p[] = {
        OMS_DB_S(tid),
        OMS_DB_S(sid),
        is_hex_id(pid, 16) ? OMS_DB_S(pid) : OMS_DB_NULLP,
        OMS_DB_S(service),
        OMS_DB_S(str_field(sp, "name")),
        OMS_DB_I(json_integer_value(json_object_get(sp, "kind"))),
        OMS_DB_I(nanos_field(sp, "startTimeUnixNano")),
        OMS_DB_I(nanos_field(sp, "endTimeUnixNano")),
        OMS_DB_I(json_integer_value(json_object_get(status, "code"))),
        *smsg ? OMS_DB_S(smsg) : OMS_DB_NULLP,
        order_id && *order_id ? OMS_DB_S(order_id) : OMS_DB_NULLP,
        OMS_DB_S(a),
        OMS_DB_S(e),
        OMS_DB_S(l),
    };
    int rc =
        oms_db_exec(tx,
                    "INSERT INTO spans (trace_id, span_id, parent_span_id, service, name, kind,"
                    " start_ns, end_ns, status_code, status_message, order_id, attributes,"
                    " events, links) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)"
                    " ON CONFLICT (trace_id, span_id) DO NOTHING",
                    p, 14, NULL, err);
    free(a);
    free(e);
    free(l);
    return rc;
}

/* Drops the oldest spans of each trace in touched (an object used as a set of trace
 * ids) beyond MAX_TRACE_SPANS. */
static int evict_per_trace(oms_db_tx *tx, json_t *touched, oms_error *err)
{
    const char *tid;
    const json_t *unused;
    json_object_foreach(touched, tid, unused)
    {
        oms_db_param p[] = {OMS_DB_S(tid), OMS_DB_I(MAX_TRACE_SPANS)};
        /* The id of the newest span that no longer fits; NULL (nothing deleted) while
         * the trace is within the cap. */
        int rc = oms_db_exec(tx,
                             "DELETE FROM spans WHERE trace_id = $1 AND id <= (SELECT id FROM spans"
                             " WHERE trace_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
                             p, 2, NULL, err);
        if (rc != OMS_OK)
            return rc;
    }
    return OMS_OK;
}

/* Stores every span of an ExportTraceServiceRequest in one transaction; spans without
 * valid ids are skipped and counted in *rejected. Then trims each trace it touched and
 * the whole store to their caps. */
static int store_request(const json_t *req, long long *stored, long long *rejected, oms_error *err)
{
    oms_db_tx *tx = NULL;
    int rc = oms_db_begin(db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    json_t *touched = json_object();
    if (!touched) {
        oms_db_rollback(tx);
        return oms_error_set(err, OMS_ERR, "out of memory");
    }
    size_t i, j, k;
    const json_t *rs, *ss, *sp;
    json_array_foreach(json_object_get(req, "resourceSpans"), i, rs)
    {
        const char *service = attr_string(
            json_object_get(json_object_get(rs, "resource"), "attributes"), "service.name");
        if (!service || !*service)
            service = "unknown";
        json_array_foreach(json_object_get(rs, "scopeSpans"), j, ss)
        {
            json_array_foreach(json_object_get(ss, "spans"), k, sp)
            {
                oms_error serr;
                oms_error_clear(&serr);
                int src = store_span(tx, service, sp, &serr);
                if (src == OMS_INVALID) {
                    (*rejected)++;
                    continue;
                }
                if (src != OMS_OK) {
                    *err = serr;
                    json_decref(touched);
                    oms_db_rollback(tx);
                    return src;
                }
                (*stored)++;
                /* The value is irrelevant; a failed set only means one trace is not
                 * trimmed now (its next batch trims it). */
                (void)json_object_set_new(touched, str_field(sp, "traceId"), json_true());
            }
        }
    }
    /* Bounded store: drop the oldest rows beyond the caps (ids grow with arrival). */
    rc = evict_per_trace(tx, touched, err);
    json_decref(touched);
    oms_db_param cap[] = {OMS_DB_I(cfg.max_spans)};
    if (rc == OMS_OK)
        rc = oms_db_exec(tx, "DELETE FROM spans WHERE id <= (SELECT max(id) FROM spans) - $1", cap,
                         1, NULL, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        return rc;
    }
    return oms_db_commit(tx, err);
}

static void post_traces(const oms_http_req *req, oms_http_resp *resp)
{
    const char *ctype = oms_http_header(req, "Content-Type");
    if (!ctype || strncasecmp(ctype, "application/json", 16) != 0) {
        oms_http_resp_error(resp, 415, "only OTLP/HTTP with JSON bodies (application/json)");
        return;
    }
    json_error_t jerr;
    json_t *body = json_loadb(req->body, req->body_len, 0, &jerr);
    if (!body || !json_is_array(json_object_get(body, "resourceSpans"))) {
        oms_http_resp_error(resp, 400, "not an OTLP ExportTraceServiceRequest: %s",
                            body ? "resourceSpans missing" : jerr.text);
        json_decref(body);
        return;
    }
    long long stored = 0, rejected = 0;
    oms_error err;
    oms_error_clear(&err);
    int rc = store_request(body, &stored, &rejected, &err);
    json_decref(body);
    if (rc != OMS_OK) {
        oms_log_warn("spans not stored", "error", err.msg);
        oms_http_resp_error(resp, 503, "spans not stored: %s", err.msg);
        return;
    }
    if (rejected > 0) {
        /* OTLP's way to say "some were refused" while accepting the rest. */
        oms_http_resp_json(resp, 200,
                           json_pack("{s:{s:I,s:s}}", "partialSuccess", "rejectedSpans",
                                     (json_int_t)rejected, "errorMessage",
                                     "spans without hex traceId/spanId"));
        return;
    }
    oms_http_resp_text(resp, 200, "application/json", "{}", 2);
}

/* ---- answering ---------------------------------------------------------------------- */

/* Parses stored JSON text back into a value (new reference); [] when unreadable. */
static json_t *parsed(const char *text)
{
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    return j ? j : json_array();
}

typedef struct trace_acc {
    json_t *spans;    /* array being filled */
    json_t *services; /* array of distinct names */
    long long start, end;
    long long n, limit; /* spans taken, and at most */
    int cut;            /* the trace has more spans than limit */
} trace_acc;

static int span_row(const oms_db_row *row, void *ud)
{
    trace_acc *t = ud;
    if (t->n >= t->limit) { /* the one row fetched past the limit */
        t->cut = 1;
        return OMS_OK;
    }
    t->n++;
    char start[24], end[24];
    long long s = oms_db_row_int(row, 6), e = oms_db_row_int(row, 7);
    snprintf(start, sizeof(start), "%lld", s);
    snprintf(end, sizeof(end), "%lld", e);
    const char *service = oms_db_row_text(row, 3);
    json_t *status = json_pack("{s:I}", "code", (json_int_t)oms_db_row_int(row, 8));
    if (!oms_db_row_isnull(row, 9))
        json_object_set_new(status, "message", json_string(oms_db_row_text(row, 9)));
    json_t *sp = json_pack(
        "{s:s,s:s,s:s,s:s,s:I,s:s,s:s,s:o,s:o,s:o,s:o}", "traceId", oms_db_row_text(row, 0),
        "spanId", oms_db_row_text(row, 1), "service", service, "name", oms_db_row_text(row, 4),
        "kind", (json_int_t)oms_db_row_int(row, 5), "startTimeUnixNano", start, "endTimeUnixNano",
        end, "status", status, "attributes", parsed(oms_db_row_text(row, 10)), "events",
        parsed(oms_db_row_text(row, 11)), "links", parsed(oms_db_row_text(row, 12)));
    if (!sp)
        return OMS_ERR;
    if (!oms_db_row_isnull(row, 2))
        json_object_set_new(sp, "parentSpanId", json_string(oms_db_row_text(row, 2)));
    json_array_append_new(t->spans, sp);
    int known = 0;
    size_t i;
    json_t *v;
    json_array_foreach(t->services, i, v) known |= strcmp(json_string_value(v), service) == 0;
    if (!known)
        json_array_append_new(t->services, json_string(service));
    if (t->start == 0 || s < t->start)
        t->start = s;
    if (e > t->end)
        t->end = e;
    return OMS_OK;
}

/* One trace as JSON (new reference, at most limit spans, included when with_spans),
 * or NULL with err set; OMS_NOTFOUND when it has no span. */
static int load_trace(oms_db_tx *tx, const char *trace_id, int with_spans, long long limit,
                      json_t **out, oms_error *err)
{
    trace_acc t = {json_array(), json_array(), 0, 0, 0, limit, 0};
    /* One row past the limit tells whether the trace was cut. */
    oms_db_param p[] = {OMS_DB_S(trace_id), OMS_DB_I(limit + 1)};
    long long n = 0;
    int rc = oms_db_query(tx,
                          "SELECT trace_id, span_id, parent_span_id, service, name, kind, start_ns,"
                          " end_ns, status_code, status_message, attributes, events, links"
                          " FROM spans WHERE trace_id = $1 ORDER BY start_ns, id LIMIT $2",
                          p, 2, span_row, &t, &n, err);
    n = t.n;
    if (rc == OMS_OK && n == 0)
        rc = oms_error_set(err, OMS_NOTFOUND, "no trace %s", trace_id);
    if (rc != OMS_OK) {
        json_decref(t.spans);
        json_decref(t.services);
        return rc;
    }
    char start[24];
    snprintf(start, sizeof(start), "%lld", t.start);
    json_t *j = json_pack("{s:s,s:s,s:f,s:I,s:o}", "traceId", trace_id, "startTimeUnixNano", start,
                          "durationMs", (double)(t.end - t.start) / 1e6, "spanCount", (json_int_t)n,
                          "services", t.services);
    if (j && t.cut)
        json_object_set_new(j, "truncated", json_true());
    if (j && with_spans)
        json_object_set_new(j, "spans", t.spans);
    else
        json_decref(t.spans);
    if (!j)
        return oms_error_set(err, OMS_ERR, "out of memory");
    *out = j;
    return OMS_OK;
}

static int id_row(const oms_db_row *row, void *ud)
{
    json_array_append_new(ud, json_string(oms_db_row_text(row, 0)));
    return OMS_OK;
}

/* The traces whose ids the query yields, newest first; the query's last parameter is
 * its LIMIT, which this sets to one past max_traces to learn whether there were more.
 * Traces are taken until max_traces or RESULT_SPANS is reached (*cut set when anything
 * was left out) and answered oldest first when oldest_first, else in the query's
 * order. */
static int load_traces(const char *sql, oms_db_param *p, int np, int with_spans, int max_traces,
                       int oldest_first, json_t **out, int *cut, oms_error *err)
{
    oms_db_tx *tx = NULL;
    json_t *ids = json_array(), *traces = json_array();
    *cut = 0;
    int rc = oms_db_begin(db, &tx, err);
    if (rc != OMS_OK)
        goto fail;
    p[np - 1] = OMS_DB_I(max_traces + 1);
    rc = oms_db_query(tx, sql, p, np, id_row, ids, NULL, err);
    long long budget = RESULT_SPANS;
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id)
    {
        if (rc != OMS_OK)
            break;
        if (i >= (size_t)max_traces || budget <= 0) {
            *cut = 1;
            break;
        }
        json_t *t = NULL;
        long long limit = budget < MAX_TRACE_SPANS ? budget : MAX_TRACE_SPANS;
        rc = load_trace(tx, json_string_value(id), with_spans, limit, &t, err);
        if (rc != OMS_OK)
            break;
        if (with_spans)
            budget -= (long long)json_integer_value(json_object_get(t, "spanCount"));
        if (json_is_true(json_object_get(t, "truncated")))
            *cut = 1;
        if (oldest_first)
            json_array_insert_new(traces, 0, t);
        else
            json_array_append_new(traces, t);
    }
    oms_db_rollback(tx); /* read only */
    if (rc != OMS_OK)
        goto fail;
    json_decref(ids);
    *out = traces;
    return OMS_OK;
fail:
    json_decref(ids);
    json_decref(traces);
    return rc;
}

static void get_traces(const oms_http_req *req, oms_http_resp *resp)
{
    const char *order_id = oms_http_query(req, "order_id");
    json_t *traces = NULL;
    oms_error err;
    oms_error_clear(&err);
    int rc, cut = 0;
    if (order_id) {
        if (!oms_valid_id(order_id)) {
            oms_http_resp_error(resp, 400,
                                "order_id: must be 1 to 64 characters of A-Z a-z 0-9 _ . : -");
            return;
        }
        oms_db_param p[] = {OMS_DB_S(order_id), OMS_DB_NULLP};
        rc = load_traces("SELECT trace_id FROM spans WHERE order_id = $1 GROUP BY trace_id"
                         " ORDER BY min(start_ns) DESC LIMIT $2",
                         p, 2, 1, RESULT_TRACES, 1, &traces, &cut, &err);
    } else {
        oms_db_param p[] = {OMS_DB_NULLP};
        rc = load_traces("SELECT trace_id FROM spans WHERE order_id IS NOT NULL GROUP BY trace_id"
                         " ORDER BY max(id) DESC LIMIT $1",
                         p, 1, 0, RECENT_TRACES, 0, &traces, &cut, &err);
        cut = 0; /* a list of the latest is never "all of them" */
    }
    if (rc != OMS_OK) {
        oms_http_resp_error(resp, 503, "trace store unavailable: %s", err.msg);
        return;
    }
    json_t *j = json_pack("{s:o}", "traces", traces);
    if (j && order_id)
        json_object_set_new(j, "orderID", json_string(order_id));
    if (j && cut)
        json_object_set_new(j, "truncated", json_true());
    oms_http_resp_json(resp, 200, j);
}

static void get_trace(const oms_http_req *req, oms_http_resp *resp)
{
    const char *tid = req->params[0];
    if (!is_hex_id(tid, 32)) {
        oms_http_resp_error(resp, 400, "traceId: expected 32 lowercase hex digits");
        return;
    }
    oms_db_tx *tx = NULL;
    json_t *t = NULL;
    oms_error err;
    oms_error_clear(&err);
    int rc = oms_db_begin(db, &tx, &err);
    if (rc == OMS_OK) {
        rc = load_trace(tx, tid, 1, MAX_TRACE_SPANS, &t, &err);
        oms_db_rollback(tx);
    }
    if (rc == OMS_NOTFOUND) {
        oms_http_resp_error(resp, 404, "no trace %s", tid);
        return;
    }
    if (rc != OMS_OK) {
        oms_http_resp_error(resp, 503, "trace store unavailable: %s", err.msg);
        return;
    }
    oms_http_resp_json(resp, 200, json_pack("{s:[o]}", "traces", t));
}

/* ---- the page ------------------------------------------------------------------------ */

static const char trace_page[] =
    "<!doctype html><html><head><meta charset=\"utf-8\"><title>OMS trace</title>\n"
    "<style>\n"
    "body{font:13px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\n"
    "h1{font-size:1.3em}h2{font-size:1.05em;margin-top:2em}\n"
    "form input{font:inherit;width:22em}\n"
    ".row{display:flex;align-items:center;border-bottom:1px solid #eee;min-height:22px}\n"
    ".label{width:42%;flex:none;box-sizing:border-box;white-space:nowrap;overflow:hidden;"
    "text-overflow:ellipsis}\n"
    ".svc{display:inline-block;min-width:5.5em;font-weight:600}\n"
    ".lane{position:relative;flex:1;height:14px;background:#fafafa}\n"
    ".bar{position:absolute;height:14px;border-radius:2px;min-width:2px}\n"
    ".ms{width:7em;text-align:right;color:#555;font-variant-numeric:tabular-nums}\n"
    ".err{outline:2px solid #c00}.muted{color:#777}\n"
    "</style></head><body>\n"
    "<h1>OMS trace</h1>\n"
    "<form><input name=\"order_id\" id=\"oid\" placeholder=\"order id\"> <button>show</button>"
    " <span class=\"muted\">or <a href=\"?\">latest orders</a></span></form>\n"
    "<div id=\"out\"></div>\n"
    "<script>\n"
    "const colors={gateway:'#4e79a7',orders:'#f28e2b',stock:'#59a14f',payments:'#e15759',"
    "kitchen:'#b07aa1'};\n"
    "const kinds={1:'internal',2:'server',3:'client',4:'producer',5:'consumer'};\n"
    "const out=document.getElementById('out');\n"
    "function el(tag,cls,text){const e=document.createElement(tag);if(cls)e.className=cls;"
    "if(text!==undefined)e.textContent=text;return e;}\n"
    "function attrs(s){return (s.attributes||[]).map(a=>a.key+'='+"
    "(a.value.stringValue!==undefined?a.value.stringValue:a.value.intValue)).join('\\n');}\n"
    "function ns(x){return Number(BigInt(x)/1000n)/1000;}\n"
    "function render(t){\n"
    " const h=el('h2',null,'trace '+t.traceId+' \\u2014 '+t.spans.length+' spans, '+"
    "t.services.join(', ')+', '+t.durationMs.toFixed(1)+' ms');out.appendChild(h);\n"
    " const t0=ns(t.startTimeUnixNano),total=Math.max(t.durationMs,0.001);\n"
    " const ids=new Set(t.spans.map(s=>s.spanId)),kids={};\n"
    " t.spans.forEach(s=>{const p=s.parentSpanId&&ids.has(s.parentSpanId)?s.parentSpanId:'';"
    "(kids[p]=kids[p]||[]).push(s);});\n"
    " function walk(p,depth){(kids[p]||[]).forEach(s=>{\n"
    "  const st=ns(s.startTimeUnixNano)-t0,d=ns(s.endTimeUnixNano)-ns(s.startTimeUnixNano);\n"
    "  const r=el('div','row');const l=el('div','label');l.style.paddingLeft=(depth*14)+'px';\n"
    "  l.appendChild(el('span','svc',s.service));l.appendChild(document.createTextNode(' '+s.name+"
    "' ('+(kinds[s.kind]||s.kind)+')'));\n"
    "  const lane=el('div','lane');const b=el('div','bar'+(s.status&&s.status.code==2?' "
    "err':''));\n"
    "  b.style.left=(100*st/total)+'%';b.style.width=(100*d/total)+'%';"
    "b.style.background=colors[s.service]||'#999';\n"
    "  b.title=s.name+'\\n'+d.toFixed(3)+' "
    "ms'+(s.status&&s.status.message?'\\n'+s.status.message:'')+"
    "'\\n'+attrs(s);lane.appendChild(b);\n"
    "  r.appendChild(l);r.appendChild(lane);r.appendChild(el('div','ms',st.toFixed(1)+' +'+"
    "d.toFixed(1)));out.appendChild(r);walk(s.spanId,depth+1);});}\n"
    " walk('',0);\n"
    "}\n"
    "async function main(){\n"
    " const q=new URLSearchParams(location.search),oid=q.get('order_id'),tid=q.get('trace_id');\n"
    " if(oid)document.getElementById('oid').value=oid;\n"
    " const url=tid?'api/traces/'+encodeURIComponent(tid):oid?'api/traces?order_id='+"
    "encodeURIComponent(oid):'api/traces';\n"
    " const r=await fetch(url);const j=await r.json();\n"
    " if(!r.ok){out.appendChild(el('p','err',j.error||r.statusText));return;}\n"
    " if(!oid&&!tid){const ul=el('ul');j.traces.forEach(t=>{const li=el('li');"
    "const a=el('a',null,t.traceId);a.href='?trace_id='+t.traceId;li.appendChild(a);"
    "li.appendChild(document.createTextNode(' '+t.services.join(', ')+', '+t.spanCount+' spans'));"
    "ul.appendChild(li);});out.appendChild(el('p',null,'Latest traces that concern an order:'));"
    "out.appendChild(ul);return;}\n"
    " if(!j.traces.length){out.appendChild(el('p','muted','No spans stored for this order yet "
    "(they arrive within a second or two).'));return;}\n"
    " j.traces.sort((a,b)=>b.services.length-a.services.length||"
    "(BigInt(a.startTimeUnixNano)<BigInt(b.startTimeUnixNano)?-1:1));\n"
    " j.traces.forEach(render);\n"
    "}\n"
    "main().catch(e=>out.appendChild(el('p','err',String(e))));\n"
    "</script></body></html>\n";

static void page(const oms_http_req *req, oms_http_resp *resp)
{
    oms_http_resp_text(resp, 200, "text/html; charset=utf-8", trace_page, sizeof(trace_page) - 1);
}

static void root(const oms_http_req *req, oms_http_resp *resp)
{
    oms_http_resp_redirect(resp, "/trace.html");
}

static const oms_http_route routes[] = {
    {"POST", "/v1/traces", post_traces},
    {"GET", "/api/traces", get_traces},
    {"GET", "/api/traces/{}", get_trace},
    {"GET", "/trace.html", page},
    {"GET", "/", root},
    OMS_ADMIN_ROUTES,
};

int main(int argc, char **argv)
{
    oms_signals_block();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("oms-tracestore: OTLP/HTTP JSON receiver and trace viewer; configured by "
                   "environment variables only:\n");
            oms_config_print_help(config_table, CONFIG_COUNT);
            return 0;
        }
        fprintf(stderr, "oms-tracestore: unexpected argument %s (see --help)\n", argv[i]);
        return 2;
    }
    char cerr[512];
    if (oms_config_load(config_table, CONFIG_COUNT, cerr, sizeof(cerr)) != OMS_OK) {
        fprintf(stderr, "oms-tracestore: %s\n", cerr);
        return 2;
    }
    int level = oms_log_level_parse(cfg.log_level);
    oms_log_init("tracestore", level < 0 ? OMS_LOG_INFO : (oms_log_level)level,
                 strcmp(cfg.log_format, "console") == 0);
    int exit_code = 1;
    oms_http_server *http = NULL;
    oms_error err;
    oms_error_clear(&err);
    if (oms_db_open(&db, cfg.db_url, migrations, OMS_NELEM(migrations), &err) != OMS_OK) {
        char shown[512]; /* TRACESTORE_DB may be a postgres:// url with a password */
        oms_url_redact(cfg.db_url, shown, sizeof(shown));
        oms_log_error("cannot open the span database", "url", shown, "error", err.msg);
        goto out;
    }
    oms_http_config hc = {
        .addr = cfg.addr, .routes = routes, .nroutes = OMS_NELEM(routes), .max_body = MAX_BODY};
    char herr[256];
    if (oms_http_start(&http, &hc, herr, sizeof(herr)) != OMS_OK) {
        oms_log_error("cannot start HTTP", "addr", cfg.addr, "error", herr);
        goto out;
    }
    char shown[512];
    oms_url_redact(cfg.db_url, shown, sizeof(shown));
    oms_log_info("trace store ready", "addr", cfg.addr, "db", shown);
    int sig = oms_signals_wait();
    oms_log_infof("stopping on signal %d", sig);
    exit_code = 0;
out:
    oms_http_stop(http);
    if (db)
        oms_db_close(db);
    oms_config_free(config_table, CONFIG_COUNT);
    return exit_code;
}
