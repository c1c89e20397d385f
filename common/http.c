/* HTTP server helpers over libmicrohttpd 0.9.75 (oms/http.h).
 *
 * Request life cycle (docs/http.md):
 *   uri_logged      MHD hands us the raw request target; we allocate the per-request
 *                   state here, because it is the only place the path is seen before
 *                   MHD percent-decodes it in place (we need the raw path so that an
 *                   encoded "/" inside a {} segment stays inside that segment).
 *   on_access #1    headers are in; refuse a declared Content-Length over the cap,
 *                   otherwise return MHD_YES without a response (queueing now would make
 *                   0.9.75 close the keep-alive connection).
 *   on_access #2..n body chunks, appended up to the cap, the rest discarded.
 *   on_access last  upload_data_size == 0: route. No route (404, 405, a static file,
 *                   413): answered here. A route: refused at once (503) past the
 *                   in-flight bound, else queued for a worker with the connection
 *                   suspended; the worker runs the handler, keeps the response in the
 *                   state and resumes the connection.
 *   on_access again (after the resume) queue the response the worker made.
 *   on_completed    free the per-request state (every path, including aborted ones).
 * The I/O threads never wait on a handler, so a refusal costs microseconds however
 * busy the workers are, and a slow handler holds up only its own request.
 * All per-request memory (state, decoded params and query values) hangs off the
 * state and is freed in one place, nginx-pool style. */
#include "oms/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "oms/json_out.h"
#include "oms/log.h"
#include "oms/metrics.h"
#include "oms/status.h"
#include "oms/trace.h"
#include "oms/tracer.h"
#include "oms/util.h"
#include "http_guard.h"
#include "http_stream.h"

#define DEFAULT_MAX_BODY (64 * 1024)
#define DEFAULT_THREADS 2
#define DEFAULT_CONN_LIMIT 512
/* One address may hold a quarter of the connections: one client cannot take them all. */
#define DEFAULT_PER_IP_LIMIT 128
#define DEFAULT_TIMEOUT_S 30
#define DEFAULT_MAX_IN_FLIGHT 64
#define DEFAULT_MAX_QUEUE_MS 10
#define DEFAULT_MAX_STREAMS 2000
#define DEFAULT_HEARTBEAT_MS 15000
/* Per-connection pool: request line + headers + read buffer. Headers beyond it are
 * answered by MHD itself (431), before any of our code runs. libmicrohttpd 0.9.75
 * clears the whole pool after every request, so its size is paid per request: at
 * 64 KiB that memset was a quarter of the gateway's instructions (bench/profile.py).
 * Every open event stream keeps its pool too: 12 KiB still takes an 8 KiB header
 * (cookies and a bearer token are ~2 KiB) and keeps 1,000 streams near 14 MiB. */
#define CONN_MEMORY_LIMIT (12 * 1024)

struct oms_http_server {
    struct MHD_Daemon *daemon;
    const oms_http_route *routes;
    size_t nroutes;
    size_t max_body;
    char *static_root; /* realpath of cfg->static_dir, or NULL; owned */
    void *ud;
    http_guard *guard;        /* request deadline against slow clients; owned */
    http_streams *streams;    /* event streams and their heartbeat; owned */
    long long budget_ms;      /* each request's work deadline; 0: none */
    long long max_in_flight;  /* 0: no bound */
    atomic_llong in_flight;   /* routed requests queued or running */
    int64_t max_queue_ns;     /* the oldest waiting request's age that refuses; 0: none */
    atomic_llong *shed_until; /* per route: CLOCK_MONOTONIC ns before which it is 503 */

    /* Handler workers and their queue (req_state.next). */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    struct req_state *qhead, *qtail;
    int stopping; /* under qmu: new requests are refused, the queue is answered 503 */
    pthread_t *workers;
    int nworkers;
};

/* One allocation of the per-request arena; freed with the request. */
typedef struct arena_blk {
    struct arena_blk *next;
    char data[];
} arena_blk;

typedef struct req_state {
    oms_http_req req; /* handed to the handler; oms_http_query finds the state from it */
    oms_http_server *srv;
    char *raw_path; /* request target up to '?', still percent-encoded; owned */
    char *body;     /* NUL-terminated; owned */
    size_t body_len, body_cap;
    int started;  /* first access call seen */
    int too_big;  /* body exceeded max_body: the rest was discarded */
    int answered; /* a response is queued */
    struct timespec start;
    arena_blk *arena;
    /* Handed to a worker: the route, and what the worker leaves for the I/O thread. */
    struct req_state *next; /* in the worker queue */
    const oms_http_route *hit;
    const char *method;
    struct MHD_Connection *conn;
    int queued;        /* suspended, with a worker (or waiting for one) */
    int64_t queued_ns; /* CLOCK_MONOTONIC, when it joined the worker queue */
    int ready;         /* the worker's response is in resp */
    oms_http_resp resp;
    char tp[OMS_TRACEPARENT_LEN + 1];
} req_state;

/* ---- per-request arena and percent-decoding --------------------------------------- */

static char *arena_alloc(req_state *st, size_t n)
{
    arena_blk *b = oms_xmalloc(sizeof(*b) + n);
    b->next = st->arena;
    st->arena = b;
    return b->data;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes n bytes of in (%XX escapes) into out (>= n+1 bytes), NUL-terminated; with
 * out NULL it only validates. Returns OMS_INVALID on a malformed escape or an encoded
 * NUL: such input cannot be a C string without changing its meaning. */
static int pct_decode(const char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= n)
                return OMS_INVALID;
            int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
            if (hi < 0 || lo < 0)
                return OMS_INVALID;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (c == '\0')
            return OMS_INVALID;
        if (out)
            out[o] = c;
        o++;
    }
    if (out)
        out[o] = '\0';
    return OMS_OK;
}

/* 1 when the n raw bytes at raw decode to exactly lit (a route's literal segment). */
static int seg_equals(const char *raw, size_t n, const char *lit, size_t litlen)
{
    size_t j = 0;
    for (size_t i = 0; i < n; i++, j++) {
        char c = raw[i];
        if (c == '%') {
            if (i + 2 >= n)
                return 0;
            int hi = hexval(raw[i + 1]), lo = hexval(raw[i + 2]);
            if (hi < 0 || lo < 0)
                return 0;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (j >= litlen || lit[j] != c)
            return 0;
    }
    return j == litlen;
}

/* Matches the raw path against pattern segment by segment. With st non-NULL the {}
 * segments are decoded into st's arena and stored in st->req.params. Returns 1 on a
 * match. A {} segment that is empty, malformed or decodes to NUL does not match. */
static int route_match(const char *pattern, const char *path, req_state *st)
{
    const char *p = pattern, *u = path;
    int np = 0;
    if (*p != '/' || *u != '/')
        return 0;
    while (*p == '/' && *u == '/') {
        p++;
        u++;
        size_t pl = strcspn(p, "/"), ul = strcspn(u, "/");
        if (pl == 2 && p[0] == '{' && p[1] == '}') {
            if (ul == 0 || np >= OMS_HTTP_MAX_PARAMS)
                return 0;
            if (st) {
                char *v = arena_alloc(st, ul + 1);
                if (pct_decode(u, ul, v) != OMS_OK)
                    return 0;
                st->req.params[np] = v;
            } else if (pct_decode(u, ul, NULL) != OMS_OK) {
                return 0;
            }
            np++;
        } else if (!seg_equals(u, ul, p, pl)) {
            return 0;
        }
        p += pl;
        u += ul;
    }
    if (*p != '\0' || *u != '\0')
        return 0;
    if (st)
        st->req.nparams = np;
    return 1;
}

/* ---- responses ---------------------------------------------------------------------- */

static void resp_set_body(oms_http_resp *r, int status, const char *ctype, char *body, size_t len)
{
    free(r->body);
    r->status = status;
    r->content_type = ctype;
    r->body = body;
    r->len = len;
}

void oms_http_resp_json(oms_http_resp *r, int status, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) {
        /* Only on OOM or a handler passing NULL: say so rather than send nothing. */
        static const char fallback[] = "{\"error\":\"internal error: cannot encode response\"}";
        resp_set_body(r, 500, "application/json", oms_strdup(fallback), sizeof(fallback) - 1);
        return;
    }
    resp_set_body(r, status, "application/json", s, strlen(s));
}

void oms_http_resp_json_text(oms_http_resp *r, int status, char *body, size_t len)
{
    resp_set_body(r, status, "application/json", body, len);
}

/* What a client is told about a server-side failure: the status's generic text. The
 * detail handed to oms_http_resp_error (a peer's error, an internal address, a
 * statement's text) is for operators and goes to the log instead. */
static const char *server_error_text(int status)
{
    switch (status) {
    case 502: return "bad gateway: an upstream service failed";
    case 503: return "service unavailable, retry later";
    case 504: return "gateway timeout: an upstream service did not answer";
    default: return "internal error";
    }
}

/* A 5xx reply: {"error": generic text, "traceID": the current trace or ""}, the
 * detail logged with the same trace id (the logger adds the current trace), so the id
 * a client quotes finds the cause. 503 is a load or dependency condition the client
 * retries, hence warn; the others are errors. */
static void resp_server_error(oms_http_resp *r, int status, const char *detail)
{
    char tid[33] = "", code[16];
    const oms_trace_ctx *tc = oms_trace_current();
    if (tc)
        oms_trace_id_hex(tc, tid);
    snprintf(code, sizeof(code), "%d", status);
    /* A dependency refusing for load says so: the client learns to come back later,
     * and under overload a line per refusal would cost what the refusal saves. */
    int overloaded = status == 503 && strncmp(detail, OMS_OVERLOADED, strlen(OMS_OVERLOADED)) == 0;
    if (overloaded)
        oms_log_debug("http: overloaded reply", "status", code, "detail", detail);
    else if (status == 503)
        oms_log_warn("http: service unavailable reply", "status", code, "detail", detail);
    else
        oms_log_error("http: server error reply", "status", code, "detail", detail);
    const char *text = overloaded ? "service overloaded: retry later" : server_error_text(status);
    json_t *j = json_pack("{s:s,s:s}", "error", text, "traceID", tid);
    if (!j) {
        oms_http_resp_json(r, 500, NULL);
        return;
    }
    oms_http_resp_json(r, status, j);
}

void oms_http_resp_error(oms_http_resp *r, int status, const char *fmt, ...)
{
    char small[512];
    char *msg = small;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        snprintf(small, sizeof(small), "%s", oms_status_text(OMS_ERR));
    } else if ((size_t)n >= sizeof(small)) {
        msg = oms_xmalloc((size_t)n + 1);
        va_start(ap, fmt);
        n = vsnprintf(msg, (size_t)n + 1, fmt, ap);
        va_end(ap);
        if (n < 0)
            snprintf(msg, sizeof(small), "%s", oms_status_text(OMS_ERR));
    }
    if (status >= 500) {
        resp_server_error(r, status, msg);
        if (msg != small)
            free(msg);
        return;
    }
    json_t *obj = json_object();
    json_t *str = oms_json_string_lossy(msg);
    if (msg != small)
        free(msg);
    if (!obj || !str || json_object_set_new(obj, "error", str) != 0) {
        if (!obj)
            json_decref(str); /* set_new consumed str in every other case */
        json_decref(obj);
        oms_http_resp_json(r, 500, NULL);
        return;
    }
    oms_http_resp_json(r, status, obj);
}

void oms_http_resp_text(oms_http_resp *r, int status, const char *content_type, const char *body,
                        size_t len)
{
    char *copy = oms_xmalloc(len + 1);
    if (len)
        memcpy(copy, body, len);
    copy[len] = '\0';
    resp_set_body(r, status, content_type ? content_type : "text/plain; charset=utf-8", copy, len);
}

void oms_http_resp_header(oms_http_resp *r, const char *name, const char *value)
{
    if (r->nhdr >= OMS_HTTP_MAX_HEADERS) {
        oms_log_warn("http: too many response headers; header dropped", "name", name);
        return;
    }
    r->hdr_name[r->nhdr] = name;
    r->hdr_value[r->nhdr] = oms_strdup(value ? value : "");
    r->nhdr++;
}

void oms_http_resp_redirect(oms_http_resp *r, const char *location)
{
    resp_set_body(r, 303, "text/plain; charset=utf-8", NULL, 0);
    oms_http_resp_header(r, "Location", location);
}

static void resp_free(oms_http_resp *r)
{
    free(r->body);
    r->body = NULL;
    for (int i = 0; i < r->nhdr; i++)
        free(r->hdr_value[i]);
    r->nhdr = 0;
    if (r->stream) { /* opened but never served */
        http_stream_abandon(r->stream);
        r->stream = NULL;
    }
}

/* ---- request accessors ---------------------------------------------------------------- */

const char *oms_http_header(const oms_http_req *req, const char *name)
{
    if (!req || !req->conn || !name)
        return NULL;
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *oms_http_query(const oms_http_req *req, const char *name)
{
    if (!req || !req->conn || !name)
        return NULL;
    /* MHD has already percent-decoded query arguments (its default unescaper applies
     * to them; only the path is taken raw, in uri_logged). */
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

/* ---- metrics and logging ---------------------------------------------------------------- */

/* The method label is bounded to the known verbs: any token is a valid HTTP method, and
 * a client must not be able to create series at will. */
static const char *method_label(const char *m)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
    for (size_t i = 0; i < OMS_NELEM(known); i++)
        if (m && strcmp(m, known[i]) == 0)
            return known[i];
    return "other";
}

static void account(const req_state *st, const char *method, const char *route, int status)
{
    struct timespec now;
    double secs = 0;
    if (clock_gettime(CLOCK_MONOTONIC, &now) == 0)
        secs = (double)(now.tv_sec - st->start.tv_sec) +
               (double)(now.tv_nsec - st->start.tv_nsec) / 1e9;
    char labels[512] = "", code[16], hl[256] = "";
    snprintf(code, sizeof(code), "%d", status);
    oms_metrics_label(labels, sizeof(labels), "route", route);
    oms_metrics_label(labels, sizeof(labels), "method", method_label(method));
    oms_metrics_label(labels, sizeof(labels), "code", code);
    oms_metrics_counter_add("http_requests_total", "HTTP requests by route, method and status.",
                            labels, 1);
    oms_metrics_label(hl, sizeof(hl), "route", route);
    oms_metrics_observe("http_request_duration_seconds",
                        "HTTP request latency from request line to response, by route.", hl, secs);
    if (oms_log_enabled(OMS_LOG_DEBUG)) {
        char ms[32];
        snprintf(ms, sizeof(ms), "%.3f", secs * 1000);
        oms_log_debug("http request", "method", method, "path", st->raw_path, "route", route,
                      "status", code, "ms", ms);
    }
}

/* ---- answering ------------------------------------------------------------------------ */

/* Queues r (taking its body) with Content-Type, traceparent and the handler's headers.
 * r is emptied either way. */
static enum MHD_Result send_resp(struct MHD_Connection *conn, oms_http_resp *r,
                                 const char *traceparent)
{
    struct MHD_Response *mr;
    int stream = r->stream && r->status == 200;
    if (stream)
        mr = http_stream_response(r->stream);
    else if (r->body)
        mr = MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_MUST_FREE);
    else
        mr = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!mr) {
        oms_log_error("http: cannot create response");
        resp_free(r);
        return MHD_NO;
    }
    enum MHD_Result ret = MHD_YES;
    if (stream) {
        r->stream = NULL; /* the response holds it now */
    } else {
        r->body = NULL; /* MHD frees it with the response */
        if (MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE,
                                    r->content_type ? r->content_type : "application/json") !=
            MHD_YES)
            ret = MHD_NO;
    }
    if (traceparent && *traceparent &&
        MHD_add_response_header(mr, "traceparent", traceparent) != MHD_YES)
        ret = MHD_NO;
    for (int i = 0; i < r->nhdr; i++) {
        /* MHD refuses values with CR/LF; a handler echoing client input must not be able
         * to split the response, so the header is dropped and logged. */
        if (MHD_add_response_header(mr, r->hdr_name[i], r->hdr_value[i]) != MHD_YES)
            oms_log_warn("http: response header refused", "name", r->hdr_name[i]);
    }
    if (ret == MHD_YES)
        ret = MHD_queue_response(conn, (unsigned int)r->status, mr);
    MHD_destroy_response(mr);
    resp_free(r);
    return ret;
}

static const char *content_type_for(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".json", "application/json"},
        {".png", "image/png"},
        {".svg", "image/svg+xml"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash))
        for (size_t i = 0; i < OMS_NELEM(types); i++)
            if (strcasecmp(dot, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

/* Opens the file under the static root for the raw request path. Returns an open fd
 * (caller owns it) and its size and type, or -1 when there is no such file or the path
 * is refused: "..", backslash or NUL in any form (raw or percent-encoded), or a
 * resolved path (symlinks followed) outside the root. */
static int static_open(const oms_http_server *srv, req_state *st, off_t *size, const char **ctype)
{
    const char *raw = st->raw_path;
    size_t rl = strlen(raw);
    char *dec = arena_alloc(st, rl + sizeof("index.html"));
    if (pct_decode(raw, rl, dec) != OMS_OK)
        return -1;
    /* Checked after decoding so "%2e%2e" and "%5c" are caught like their plain forms. */
    if (dec[0] != '/' || strstr(dec, "..") || strchr(dec, '\\'))
        return -1;
    size_t dl = strlen(dec);
    if (dec[dl - 1] == '/')
        memcpy(dec + dl, "index.html", sizeof("index.html"));

    char full[PATH_MAX], real[PATH_MAX];
    int n = snprintf(full, sizeof(full), "%s%s", srv->static_root, dec);
    if (n < 0 || (size_t)n >= sizeof(full))
        return -1;
    if (!realpath(full, real))
        return -1;
    size_t rootlen = strlen(srv->static_root);
    int inside = strncmp(real, srv->static_root, rootlen) == 0 &&
                 (real[rootlen] == '/' || (rootlen == 1 && real[0] == '/'));
    if (!inside)
        return -1;
    /* O_NONBLOCK: a FIFO planted under the root must not hang a pool thread in open();
     * it is refused by the S_ISREG check below. No effect on regular files. */
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -1;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return -1;
    }
    *size = sb.st_size;
    *ctype = content_type_for(real);
    return fd;
}

/* Serves a static file; returns 1 and sets *ret when one was found, 0 otherwise. */
static int serve_static(oms_http_server *srv, req_state *st, struct MHD_Connection *conn,
                        const char *traceparent, enum MHD_Result *ret)
{
    off_t size = 0;
    const char *ctype = NULL;
    int fd = static_open(srv, st, &size, &ctype);
    if (fd < 0)
        return 0;
    struct MHD_Response *mr = MHD_create_response_from_fd((uint64_t)size, fd);
    if (!mr) {
        close(fd); /* MHD owns fd only once the response exists */
        oms_log_error("http: cannot create file response");
        *ret = MHD_NO;
        return 1;
    }
    *ret = MHD_YES;
    if (MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) != MHD_YES ||
        MHD_add_response_header(mr, "traceparent", traceparent) != MHD_YES)
        *ret = MHD_NO;
    if (*ret == MHD_YES)
        *ret = MHD_queue_response(conn, MHD_HTTP_OK, mr);
    MHD_destroy_response(mr);
    return 1;
}

static int method_matches(const char *route_method, const char *method)
{
    /* HEAD is answered by the GET handler; MHD sends the headers only. */
    return strcmp(route_method, method) == 0 ||
           (strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0);
}

/* Probes and scrapes: answered with a trace context (for the response header and
 * logs) but no span, or every poll of a health check would be a trace. */
static int untraced_path(const char *path)
{
    static const char *const paths[] = {"/healthz", "/readyz", "/metrics"};
    for (size_t i = 0; i < OMS_NELEM(paths); i++)
        if (strcmp(path, paths[i]) == 0)
            return 1;
    return 0;
}

/* The request's SERVER span: a child of its traceparent header, or a new trace when the
 * header is absent or malformed (never trusted half-way). It is the thread's current
 * context until trace_end; its context goes back in the response's traceparent (tp).
 * Named by method only until the route is known (trace_route). NULL for untraced
 * paths, which get a bare current context instead. */
static oms_span *trace_begin(struct MHD_Connection *conn, const char *method, const char *path,
                             char tp[OMS_TRACEPARENT_LEN + 1])
{
    oms_trace_ctx in;
    const char *hdr = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "traceparent");
    int have = oms_traceparent_parse(hdr, &in) == OMS_OK;
    if (untraced_path(path)) {
        if (!have)
            oms_trace_new_root(&in);
        oms_trace_set_current(&in);
        oms_traceparent_format(&in, tp);
        return NULL;
    }
    const char *m = method_label(method);
    oms_span *span =
        have ? oms_span_start(m, OMS_SPAN_SERVER, &in) : oms_span_start_root(m, OMS_SPAN_SERVER);
    oms_span_set_str(span, "http.request.method", m);
    oms_span_set_str(span, "url.path", path);
    oms_span_set_str(span, "url.scheme", "http");
    const char *ua = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "User-Agent");
    if (ua)
        oms_span_set_str(span, "user_agent.original", ua);
    oms_traceparent_format(oms_span_context(span), tp);
    return span;
}

/* Names the span "METHOD /route/{}" once the route is known (low cardinality). */
static void trace_route(oms_span *span, const char *method, const char *pattern)
{
    char name[300];
    snprintf(name, sizeof(name), "%s %s", method_label(method), pattern);
    oms_span_set_name(span, name);
    oms_span_set_str(span, "http.route", pattern);
}

/* Ends the request's span (5xx is a server error; 4xx is the client's) and leaves the
 * pool thread without a current context. */
static void trace_end(oms_span *span, int status)
{
    if (!span) {
        oms_trace_clear_current();
        return;
    }
    oms_span_set_int(span, "http.response.status_code", status);
    if (status >= 500) {
        char msg[32];
        snprintf(msg, sizeof(msg), "HTTP %d", status);
        oms_span_set_status(span, OMS_SPAN_ERROR, msg);
    }
    oms_span_end(span);
    oms_trace_clear_current(); /* a handler that left a span open must not leak it here */
}

/* The route for st's path and method, or NULL; *path_known: some route has the path. */
static const oms_http_route *route_find(const oms_http_server *srv, const req_state *st,
                                        const char *method, int *path_known)
{
    *path_known = 0;
    for (size_t i = 0; i < srv->nroutes; i++) {
        if (!route_match(srv->routes[i].pattern, st->raw_path, NULL))
            continue;
        *path_known = 1;
        if (method_matches(srv->routes[i].method, method))
            return &srv->routes[i];
    }
    return NULL;
}

/* The answers that need no handler, written by the I/O thread: 413, 405, a static
 * file, 404. */
static enum MHD_Result answer_here(oms_http_server *srv, req_state *st, struct MHD_Connection *conn,
                                   const char *method, const oms_http_route *hit, int path_known)
{
    char tp[OMS_TRACEPARENT_LEN + 1];
    oms_span *span = trace_begin(conn, method, st->raw_path, tp);
    oms_http_resp resp;
    memset(&resp, 0, sizeof(resp));
    const char *route = "none";
    enum MHD_Result ret;
    int status;

    if (hit) {
        route = hit->pattern;
        trace_route(span, method, route);
    }
    if (st->too_big) {
        oms_http_resp_error(&resp, 413, "request body too large (limit %zu bytes)", srv->max_body);
    } else if (path_known) {
        char allow[128] = "";
        size_t al = 0;
        for (size_t i = 0; i < srv->nroutes; i++) {
            const char *m = srv->routes[i].method;
            if (!route_match(srv->routes[i].pattern, st->raw_path, NULL))
                continue;
            /* Each method once, even if several routes share it. */
            int dup = 0;
            for (size_t j = 0; j < i && !dup; j++)
                dup = strcmp(srv->routes[j].method, m) == 0 &&
                      route_match(srv->routes[j].pattern, st->raw_path, NULL);
            if (dup)
                continue;
            int n = snprintf(allow + al, sizeof(allow) - al, "%s%s", al ? ", " : "", m);
            if (n < 0 || (size_t)n >= sizeof(allow) - al)
                break;
            al += (size_t)n;
        }
        oms_http_resp_error(&resp, 405, "method %s not allowed on %s", method, st->raw_path);
        oms_http_resp_header(&resp, "Allow", allow);
    } else if (srv->static_root && (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) &&
               serve_static(srv, st, conn, tp, &ret)) {
        st->answered = 1;
        account(st, method, "static", MHD_HTTP_OK);
        trace_end(span, MHD_HTTP_OK);
        return ret;
    } else {
        oms_http_resp_error(&resp, 404, "no such route: %s %s", method, st->raw_path);
    }

    status = resp.status;
    ret = send_resp(conn, &resp, tp);
    st->answered = 1;
    account(st, method, route, status);
    trace_end(span, status);
    return ret;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#define REFUSED_HELP                                                                               \
    "HTTP requests answered 503 at once: HTTP_MAX_IN_FLIGHT requests were in flight "              \
    "(reason=in_flight), the oldest waiting one had waited HTTP_MAX_QUEUE_MS "                     \
    "(reason=queue_wait), the route's dependency had said it was overloaded "                      \
    "(reason=upstream), or the server was stopping (reason=stopping)."

typedef enum {
    REFUSE_IN_FLIGHT,
    REFUSE_QUEUE_WAIT,
    REFUSE_UPSTREAM,
    REFUSE_STOPPING
} refuse_reason;

/* Past a bound: 503 at once, without a trace or a log line (under overload they would
 * cost what the refusal saves). */
static enum MHD_Result refuse(req_state *st, struct MHD_Connection *conn, const char *method,
                              const oms_http_route *hit, refuse_reason why)
{
    static const char in_flight[] =
        "{\"error\":\"service overloaded: too many requests in flight, retry later\"}";
    static const char queue_wait[] =
        "{\"error\":\"service overloaded: requests wait too long for a worker, retry later\"}";
    static const char upstream[] = "{\"error\":\"service overloaded: retry later\"}";
    static const char stopping[] = "{\"error\":\"server stopping\"}";
    static const char *const labels[] = {"reason=\"in_flight\"", "reason=\"queue_wait\"",
                                         "reason=\"upstream\"", "reason=\"stopping\""};
    static const char *const bodies[] = {in_flight, queue_wait, upstream, stopping};
    const char *body = bodies[why];
    oms_http_resp resp;
    memset(&resp, 0, sizeof(resp));
    oms_http_resp_text(&resp, 503, "application/json", body, strlen(body));
    oms_http_resp_header(&resp, "Retry-After", "1");
    oms_metrics_counter_add("http_requests_refused_total", REFUSED_HELP, labels[why], 1);
    enum MHD_Result ret = send_resp(conn, &resp, NULL);
    st->answered = 1;
    account(st, method, hit->pattern, 503);
    return ret;
}

/* Runs st's handler on a worker thread and leaves the response in st->resp. */
static void run_handler(oms_http_server *srv, req_state *st, int stopping)
{
    struct MHD_Connection *conn = st->conn;
    const char *method = st->method;
    const oms_http_route *hit = st->hit;
    oms_span *span = trace_begin(conn, method, st->raw_path, st->tp);
    trace_route(span, method, hit->pattern);
    oms_http_resp *resp = &st->resp;
    memset(resp, 0, sizeof(*resp));
    if (stopping) {
        oms_http_resp_error(resp, 503, "server stopping");
        oms_http_resp_header(resp, "Retry-After", "1");
    } else if (!route_match(hit->pattern, st->raw_path, st)) {
        /* Captured again, this time into the arena (the scan only validated). */
        oms_http_resp_error(resp, 500, "route matching is inconsistent");
    } else {
        st->req.method = method;
        st->req.path = st->raw_path;
        st->req.body = st->body ? st->body : "";
        st->req.body_len = st->body_len;
        st->req.conn = conn;
        st->req.ud = srv->ud;
        if (srv->budget_ms > 0) {
            int64_t arrived = (int64_t)st->start.tv_sec * 1000 + st->start.tv_nsec / 1000000;
            oms_work_deadline_set(arrived + srv->budget_ms);
        }
        hit->fn(&st->req, resp);
        oms_work_deadline_set(0);
        if (resp->status < 100 || resp->status > 599) {
            oms_log_error("http: handler left no valid status", "route", hit->pattern);
            oms_http_resp_error(resp, 500, "handler produced no response");
        }
    }
    account(st, method, hit->pattern, resp->status);
    trace_end(span, resp->status);
}

static void *worker_main(void *arg)
{
    oms_http_server *srv = arg;
    oms_mutex_lock(&srv->qmu);
    for (;;) {
        while (!srv->qhead && !srv->stopping)
            oms_cond_wait(&srv->qcv, &srv->qmu);
        req_state *st = srv->qhead;
        if (!st)
            break; /* stopping, and nothing left to answer */
        srv->qhead = st->next;
        if (!srv->qhead)
            srv->qtail = NULL;
        int stopping = srv->stopping;
        oms_mutex_unlock(&srv->qmu);

        run_handler(srv, st, stopping);
        atomic_fetch_sub(&srv->in_flight, 1);
        /* The resume orders these writes before the I/O thread's next look at st. */
        st->ready = 1;
        MHD_resume_connection(st->conn);

        oms_mutex_lock(&srv->qmu);
    }
    oms_mutex_unlock(&srv->qmu);
    return NULL;
}

/* A request for a route: refused past the bound, else queued for a worker with its
 * connection suspended (the I/O thread goes on with other connections). */
static enum MHD_Result dispatch(oms_http_server *srv, req_state *st, struct MHD_Connection *conn,
                                const char *method, const oms_http_route *hit)
{
    int64_t now = mono_ns();
    if (atomic_load(&srv->shed_until[hit - srv->routes]) > now)
        return refuse(st, conn, method, hit, REFUSE_UPSTREAM);
    long long n = atomic_fetch_add(&srv->in_flight, 1);
    if (srv->max_in_flight > 0 && n >= srv->max_in_flight) {
        atomic_fetch_sub(&srv->in_flight, 1);
        return refuse(st, conn, method, hit, REFUSE_IN_FLIGHT);
    }
    st->hit = hit;
    st->method = method;
    st->conn = conn;
    st->queued_ns = now;
    oms_mutex_lock(&srv->qmu);
    /* The head of the queue has waited longest: if that is already too long, this one
     * would wait longer still (the workers are all busy, or it would not be waiting). */
    int stopping = srv->stopping;
    int too_long =
        srv->max_queue_ns > 0 && srv->qhead && now - srv->qhead->queued_ns >= srv->max_queue_ns;
    if (stopping || too_long) {
        oms_mutex_unlock(&srv->qmu);
        atomic_fetch_sub(&srv->in_flight, 1);
        return refuse(st, conn, method, hit, stopping ? REFUSE_STOPPING : REFUSE_QUEUE_WAIT);
    }
    st->queued = 1;
    /* Suspended before a worker can see it: the worker's resume must find it so. */
    MHD_suspend_connection(conn);
    st->next = NULL;
    if (srv->qtail)
        srv->qtail->next = st;
    else
        srv->qhead = st;
    srv->qtail = st;
    oms_cond_signal(&srv->qcv);
    oms_mutex_unlock(&srv->qmu);
    return MHD_YES;
}

/* Liveness probes and metric scrapes: handlers that never block. They run on the I/O
 * thread, never queued behind the workers nor refused: an overloaded server must not
 * look dead to whatever restarts dead ones, and its metrics matter most then. (/readyz
 * checks its dependencies, which can take time: it goes to a worker.) */
static int io_thread_path(const char *path)
{
    return strcmp(path, "/healthz") == 0 || strcmp(path, "/metrics") == 0;
}

static enum MHD_Result answer(oms_http_server *srv, req_state *st, struct MHD_Connection *conn,
                              const char *method)
{
    int path_known = 0;
    const oms_http_route *hit = route_find(srv, st, method, &path_known);
    if (!hit || st->too_big)
        return answer_here(srv, st, conn, method, hit, path_known);
    if (io_thread_path(st->raw_path)) {
        st->hit = hit;
        st->method = method;
        st->conn = conn;
        run_handler(srv, st, 0);
        st->answered = 1;
        return send_resp(conn, &st->resp, st->tp);
    }
    return dispatch(srv, st, conn, method, hit);
}

/* Appends a body chunk up to the cap; beyond it remembers and drops the rest, so the
 * connection stays in sync and the 413 goes out once the client has finished. */
static void body_append(req_state *st, const char *data, size_t n, size_t max)
{
    if (st->too_big)
        return;
    if (n > max - st->body_len) {
        st->too_big = 1;
        free(st->body);
        st->body = NULL;
        st->body_len = st->body_cap = 0;
        return;
    }
    if (st->body_len + n + 1 > st->body_cap) {
        size_t cap = st->body_cap ? st->body_cap : 1024;
        while (cap < st->body_len + n + 1)
            cap *= 2;
        if (cap > max + 1)
            cap = max + 1;
        st->body = oms_xrealloc(st->body, cap);
        st->body_cap = cap;
    }
    memcpy(st->body + st->body_len, data, n);
    st->body_len += n;
    st->body[st->body_len] = '\0';
}

static req_state *state_new(oms_http_server *srv, const char *uri)
{
    req_state *st = oms_xcalloc(1, sizeof(*st));
    st->srv = srv;
    size_t n = uri ? strcspn(uri, "?") : 0;
    st->raw_path = oms_xmalloc(n + 1);
    if (n)
        memcpy(st->raw_path, uri, n);
    st->raw_path[n] = '\0';
    if (clock_gettime(CLOCK_MONOTONIC, &st->start) != 0)
        memset(&st->start, 0, sizeof(st->start));
    return st;
}

static void state_free(req_state *st)
{
    if (!st)
        return;
    while (st->arena) {
        arena_blk *next = st->arena->next;
        free(st->arena);
        st->arena = next;
    }
    resp_free(&st->resp); /* a worker's answer that was never sent */
    free(st->raw_path);
    free(st->body);
    free(st);
}

/* MHD_OPTION_URI_LOG_CALLBACK: its return value becomes the request's *con_cls. */
static void *uri_logged(void *cls, const char *uri, struct MHD_Connection *conn)
{
    return state_new(cls, uri);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    state_free(*con_cls);
    *con_cls = NULL;
    http_guard_request_done(conn);
}

/* 1 when the request declares a Content-Length above max. */
static int declared_too_big(struct MHD_Connection *conn, size_t max)
{
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl)
        return 0;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(cl, &end, 10);
    /* A malformed value was already refused by MHD; overflow means "huge". */
    if (errno == ERANGE)
        return 1;
    return end != cl && v > max;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    oms_http_server *srv = cls;
    req_state *st = *con_cls;
    if (!st) {
        /* Not expected (uri_logged always runs first), but the decoded url is better
         * than refusing the request. */
        st = state_new(srv, url);
        *con_cls = st;
    }
    if (!st->started) {
        st->started = 1;
        if (declared_too_big(conn, srv->max_body)) {
            /* Answer before the body is read: queueing now makes MHD skip the body and
             * close the connection, which is what an unread body requires anyway. */
            st->too_big = 1;
            http_guard_request_read(conn);
            return answer(srv, st, conn, method);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        body_append(st, upload_data, *upload_data_size, srv->max_body);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (st->answered)
        return MHD_YES;
    if (st->queued) {
        if (!st->ready)
            return MHD_YES; /* not expected: a suspended connection is not polled */
        st->answered = 1;
        return send_resp(conn, &st->resp, st->tp);
    }
    http_guard_request_read(conn);
    return answer(srv, st, conn, method);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (n < 0)
        return;
    /* MHD messages end with a newline; a log record is one line. */
    size_t len = strlen(msg);
    while (len && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
        msg[--len] = '\0';
    oms_log_warn("libmicrohttpd", "detail", msg);
}

/* "host:port" (port 0 = any free port) into sin. host "" or "*" means all interfaces;
 * names are resolved (IPv4 only, as sockaddr_in). */
static int parse_bind_addr(const char *addr, struct sockaddr_in *sin, char *err, size_t errlen)
{
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    if (!colon) {
        snprintf(err, errlen, "http: address \"%s\": expected host:port", addr ? addr : "");
        return OMS_INVALID;
    }
    const char *ps = colon + 1;
    char *end = NULL;
    errno = 0;
    unsigned long port = strtoul(ps, &end, 10);
    if (*ps < '0' || *ps > '9' || *end != '\0' || errno == ERANGE || port > 65535) {
        snprintf(err, errlen, "http: address \"%s\": expected a port in 0..65535", addr);
        return OMS_INVALID;
    }
    sin->sin_port = htons((uint16_t)port);
    char host[256];
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof(host)) {
        snprintf(err, errlen, "http: address \"%s\": host too long", addr);
        return OMS_INVALID;
    }
    memcpy(host, addr, hl);
    host[hl] = '\0';
    if (hl == 0 || strcmp(host, "*") == 0) {
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        return OMS_OK;
    }
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1)
        return OMS_OK;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "http: address \"%s\": cannot resolve host: %s", addr,
                 rc ? gai_strerror(rc) : "no address");
        if (res)
            freeaddrinfo(res);
        return OMS_INVALID;
    }
    sin->sin_addr = ((struct sockaddr_in *)(void *)res->ai_addr)->sin_addr;
    freeaddrinfo(res);
    return OMS_OK;
}

/* Answers what is queued (503), lets running handlers finish and joins the workers;
 * also for a server that never started them. */
static void workers_stop(oms_http_server *s)
{
    if (!s->workers)
        return;
    oms_mutex_lock(&s->qmu);
    s->stopping = 1;
    oms_cond_broadcast(&s->qcv);
    oms_mutex_unlock(&s->qmu);
    for (int i = 0; i < s->nworkers; i++)
        oms_thread_join(s->workers[i]);
    free(s->workers);
    s->workers = NULL;
    pthread_cond_destroy(&s->qcv);
    pthread_mutex_destroy(&s->qmu);
}

oms_http_stream *oms_http_stream_open(const oms_http_req *req, oms_http_resp *resp,
                                      oms_http_stream_closed on_closed, void *arg)
{
    /* req is the first member of its request's state. */
    req_state *st = (req_state *)(void *)req;
    oms_http_stream *s = http_stream_new(st->srv->streams, st->conn, on_closed, arg);
    if (!s) {
        oms_http_resp_error(resp, 503, "too many open event streams (HTTP_MAX_STREAMS)");
        oms_http_resp_header(resp, "Retry-After", "1");
        return NULL;
    }
    if (resp->stream) /* a second open in one handler replaces the first */
        http_stream_abandon(resp->stream);
    resp_set_body(resp, 200, "text/event-stream", NULL, 0);
    resp->stream = s;
    return s;
}

int oms_http_stream_count(const oms_http_server *srv)
{
    return srv ? http_streams_count(srv->streams) : 0;
}

int oms_http_start(oms_http_server **out, const oms_http_config *cfg, char *err, size_t errlen)
{
    int rc = OMS_ERR;
    char dummy[1];
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    *out = NULL;
    oms_http_server *s = oms_xcalloc(1, sizeof(*s));
    struct sockaddr_in sin;
    rc = parse_bind_addr(cfg->addr, &sin, err, errlen);
    if (rc != OMS_OK)
        goto fail;
    rc = OMS_INVALID;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const oms_http_route *r = &cfg->routes[i];
        if (!r->method || !r->pattern || r->pattern[0] != '/' || !r->fn) {
            snprintf(err, errlen,
                     "http: route %zu: needs a method, a pattern starting with / "
                     "and a handler",
                     i);
            goto fail;
        }
    }
    s->routes = cfg->routes;
    s->nroutes = cfg->nroutes;
    s->shed_until = oms_xcalloc(cfg->nroutes ? cfg->nroutes : 1, sizeof(*s->shed_until));
    s->max_body = cfg->max_body ? cfg->max_body : DEFAULT_MAX_BODY;
    s->ud = cfg->ud;
    if (cfg->static_dir) {
        char real[PATH_MAX];
        struct stat sb;
        errno = 0; /* so a directory check failing below is not blamed on a stale errno */
        if (!realpath(cfg->static_dir, real) || stat(real, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            snprintf(err, errlen, "http: static directory \"%s\": %s", cfg->static_dir,
                     errno ? strerror(errno) : "not a directory");
            goto fail;
        }
        s->static_root = oms_strdup(real);
    }
    unsigned threads = cfg->threads > 0 ? (unsigned)cfg->threads : DEFAULT_THREADS;
    /* The defaults are OMS_APP_HTTP_CONFIG's, for a server started without the table
     * (tests, tools); the table bounds the values, this only refuses what MHD cannot
     * take. */
    oms_http_limits lim = {DEFAULT_TIMEOUT_S,     DEFAULT_CONN_LIMIT,  DEFAULT_PER_IP_LIMIT,
                           DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_STREAMS, DEFAULT_HEARTBEAT_MS,
                           DEFAULT_MAX_QUEUE_MS};
    if (cfg->limits)
        lim = *cfg->limits;
    if (lim.max_streams == 0)
        lim.max_streams = DEFAULT_MAX_STREAMS;
    if (lim.heartbeat_ms == 0)
        lim.heartbeat_ms = DEFAULT_HEARTBEAT_MS;
    const char *bad = lim.timeout_s < 1 || lim.timeout_s > UINT_MAX         ? "HTTP_TIMEOUT_S"
                      : lim.conn_limit < 1 || lim.conn_limit > UINT_MAX     ? "HTTP_CONN_LIMIT"
                      : lim.per_ip_limit < 0 || lim.per_ip_limit > UINT_MAX ? "HTTP_PER_IP_LIMIT"
                      : lim.max_in_flight < 0                               ? "HTTP_MAX_IN_FLIGHT"
                      : lim.max_queue_ms < 0 || lim.max_queue_ms > 600000   ? "HTTP_MAX_QUEUE_MS"
                      : lim.max_streams < 1 || lim.max_streams > INT_MAX    ? "HTTP_MAX_STREAMS"
                      : lim.heartbeat_ms < 1                        ? "HTTP_SSE_HEARTBEAT_MS"
                      : lim.conn_limit + lim.max_streams > UINT_MAX ? "HTTP_CONN_LIMIT"
                                                                    : NULL;
    if (bad) {
        snprintf(err, errlen,
                 "http: %s out of range (timeout %lld s, %lld connections, %lld "
                 "per address)",
                 bad, lim.timeout_s, lim.conn_limit, lim.per_ip_limit);
        goto fail;
    }
    unsigned timeout = (unsigned)lim.timeout_s;
    unsigned per_ip = (unsigned)lim.per_ip_limit;
    /* The I/O threads only move bytes; the workers wait on handlers. */
    unsigned io_threads = threads >= 4 ? 2 : 1;
    /* MHD splits the limit across pool threads; streams have their own bound on top
     * (HTTP_MAX_STREAMS), so that idle streams cannot take the slots requests need. */
    unsigned limit = lim.conn_limit < io_threads ? io_threads : (unsigned)lim.conn_limit;
    limit += (unsigned)lim.max_streams;
    s->max_in_flight = lim.max_in_flight;
    s->max_queue_ns = lim.max_queue_ms * 1000000;
    s->budget_ms = cfg->budget_ms > 0 ? cfg->budget_ms : 0;
    atomic_init(&s->in_flight, 0);
    oms_metrics_counter_add("http_requests_refused_total", REFUSED_HELP, "reason=\"in_flight\"", 0);
    oms_metrics_counter_add("http_requests_refused_total", REFUSED_HELP, "reason=\"queue_wait\"",
                            0);
    oms_metrics_counter_add("http_requests_refused_total", REFUSED_HELP, "reason=\"upstream\"", 0);

    /* The idle timeout alone never drops a client that trickles bytes (slowloris):
     * the guard bounds each request's arrival by the same number of seconds. */
    s->guard = http_guard_new(timeout);
    if (!s->guard) {
        snprintf(err, errlen, "http: cannot start the request deadline thread");
        rc = OMS_ERR;
        goto fail;
    }
    s->streams = http_streams_new(lim.max_streams, lim.heartbeat_ms);
    if (!s->streams) {
        snprintf(err, errlen, "http: cannot start the stream heartbeat thread");
        rc = OMS_ERR;
        goto fail;
    }
    if (pthread_mutex_init(&s->qmu, NULL) != 0 || pthread_cond_init(&s->qcv, NULL) != 0) {
        snprintf(err, errlen, "http: cannot create the worker queue");
        rc = OMS_ERR;
        goto fail;
    }
    s->workers = oms_xcalloc(threads, sizeof(*s->workers));
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&s->workers[i], NULL, worker_main, s) != 0) {
            snprintf(err, errlen, "http: cannot start worker threads");
            rc = OMS_ERR;
            goto fail;
        }
        s->nworkers++;
    }
    /* One I/O thread is MHD's own polling thread: a "pool" of one is refused. */
    struct MHD_OptionItem pool[] = {
        {io_threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, io_threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    s->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
            MHD_ALLOW_SUSPEND_RESUME,
        0, NULL, NULL, on_access, s,
        /* The logger goes first so that MHD's option parsing already uses it. */
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&sin,
        MHD_OPTION_ARRAY, pool, MHD_OPTION_CONNECTION_LIMIT, limit,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip, MHD_OPTION_CONNECTION_TIMEOUT, timeout,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)CONN_MEMORY_LIMIT, /* no LISTENING_ADDRESS_REUSE: SO_REUSEPORT would let a second
                                    * instance share the port silently; MHD's default SO_REUSEADDR
                                    * is enough */
        MHD_OPTION_URI_LOG_CALLBACK, uri_logged, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, http_guard_notify, s->guard, MHD_OPTION_END);
    if (!s->daemon) {
        snprintf(err, errlen, "http: cannot listen on %s (in use, or not a local address?)",
                 cfg->addr);
        rc = OMS_ERR;
        goto fail;
    }
    oms_log_info("http server listening", "addr", cfg->addr);
    *out = s;
    return OMS_OK;

fail:
    workers_stop(s);
    http_streams_free(s->streams);
    http_guard_free(s->guard);
    free(s->static_root);
    free(s->shed_until);
    free(s);
    return rc;
}

int oms_http_port(const oms_http_server *s)
{
    if (!s || !s->daemon)
        return -1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? (int)info->port : -1;
}

void oms_http_stop(oms_http_server *s)
{
    if (!s)
        return;
    /* Requests still waiting for a worker are answered 503 and running handlers
     * finish; streams end, so that no connection is suspended when the daemon stops
     * (libmicrohttpd refuses to stop with one). */
    workers_stop(s);
    http_streams_end_all(s->streams);
    /* Joins the pool threads; open requests get on_completed, freeing their state. */
    MHD_stop_daemon(s->daemon);
    http_streams_free(s->streams);
    http_guard_free(s->guard);
    free(s->static_root);
    free(s->shed_until);
    free(s);
}

void oms_http_shed(const oms_http_req *req, long long ms)
{
    /* req is the first member of its request's state. */
    const req_state *st = (const req_state *)(const void *)req;
    if (!st->hit || ms <= 0)
        return;
    atomic_llong *until = &st->srv->shed_until[st->hit - st->srv->routes];
    long long want = mono_ns() + ms * 1000000, cur = atomic_load(until);
    while (cur < want && !atomic_compare_exchange_weak(until, &cur, want)) {
    }
}

const struct sockaddr *oms_http_client_addr(const oms_http_req *req)
{
    const union MHD_ConnectionInfo *ci =
        req->conn ? MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS) : NULL;
    return ci ? ci->client_addr : NULL;
}
