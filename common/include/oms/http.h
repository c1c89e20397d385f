/* HTTP server helpers over libmicrohttpd: a route table with {param} path segments,
 * a request body cap (413 beyond it, before reading it when Content-Length says so),
 * JSON error replies {"error": "..."} (generic for 5xx), static files from a
 * directory (no traversal), and a thread pool. Handlers are plain C functions filling
 * an oms_http_resp. */
#ifndef OMS_HTTP_H
#define OMS_HTTP_H

#include <stddef.h>

typedef struct json_t json_t;

#define OMS_HTTP_MAX_PARAMS 4
#define OMS_HTTP_MAX_HEADERS 6

typedef struct oms_http_req {
    const char *method;                      /* "GET" */
    const char *path;                        /* "/api/customers/1/orders" (no query string) */
    const char *params[OMS_HTTP_MAX_PARAMS]; /* {x} segments, in order, URL-decoded */
    int nparams;
    const char *body; /* NUL-terminated copy of the body ("" when none) */
    size_t body_len;
    void *conn; /* struct MHD_Connection *, for oms_http_header/oms_http_query */
    void *ud;   /* the server's user data */
} oms_http_req;

typedef struct oms_http_stream oms_http_stream;

typedef struct oms_http_resp {
    int status;
    const char *content_type; /* static string; default application/json */
    char *body;               /* heap, owned by the response (freed by the server) */
    size_t len;
    const char *hdr_name[OMS_HTTP_MAX_HEADERS]; /* static names */
    char *hdr_value[OMS_HTTP_MAX_HEADERS];      /* heap copies, owned by the response */
    int nhdr;
    oms_http_stream *stream; /* set by oms_http_stream_open: the answer is that stream */
} oms_http_resp;

/* Request header / query argument, or NULL. Valid during the handler. */
const char *oms_http_header(const oms_http_req *req, const char *name);
const char *oms_http_query(const oms_http_req *req, const char *name);

/* The client's address (struct sockaddr_in or _in6), or NULL when unknown. Valid
 * during the handler. */
struct sockaddr;
const struct sockaddr *oms_http_client_addr(const oms_http_req *req);

/* Fill a response. json: takes ownership of j (json_decref'd). */
void oms_http_resp_json(oms_http_resp *r, int status, json_t *j);
/* The same for JSON text the handler wrote itself (oms/json_out.h); takes ownership. */
void oms_http_resp_json_text(oms_http_resp *r, int status, char *body, size_t len);
/* 4xx: {"error":"<formatted message>"}; the message is for the client, so it names
 * the field or the rule. 5xx: the message may hold internal detail (addresses, SQL, a
 * peer's error), so it is logged (error; warn for 503) with the current trace id and
 * the client gets {"error":"<generic text for the status>","traceID":"<32 hex of the
 * current trace, or empty>"}; 503 says "service unavailable, retry later". Headers
 * already added (and added after, e.g. Retry-After) are kept. */
void oms_http_resp_error(oms_http_resp *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Copies body. */
void oms_http_resp_text(oms_http_resp *r, int status, const char *content_type, const char *body,
                        size_t len);
/* Adds a header (value copied); at most OMS_HTTP_MAX_HEADERS. */
void oms_http_resp_header(oms_http_resp *r, const char *name, const char *value);
/* 303 See Other to location. */
void oms_http_resp_redirect(oms_http_resp *r, const char *location);

typedef void (*oms_http_handler)(const oms_http_req *req, oms_http_resp *resp);

/* pattern: "/api/customers/{}/orders/{}"; {} matches one non-empty segment. Routes are
 * tried in order; a path that matches with another method answers 405. */
typedef struct oms_http_route {
    const char *method;
    const char *pattern;
    oms_http_handler fn;
} oms_http_route;

/* How many connections a server holds and for how long: HTTP_TIMEOUT_S, HTTP_CONN_LIMIT
 * and HTTP_PER_IP_LIMIT, the same for every server of a service (OMS_APP_HTTP_CONFIG
 * fills one from the environment; long long so a config row stores into it). */
typedef struct oms_http_limits {
    long long timeout_s;    /* idle timeout, and the deadline for a whole request; >= 1 */
    long long conn_limit;   /* open connections (split over the pool threads); >= 1 */
    long long per_ip_limit; /* open connections from one address; 0: no limit */
    /* Requests routed to a handler and not yet answered (running or waiting for a
     * worker); one more is answered 503 at once. 0: no bound. Streams do not count. */
    long long max_in_flight;
    long long max_streams;  /* open event streams; one more is 503. 0: 2000 */
    long long heartbeat_ms; /* a comment line on every stream this often; 0: 15000 */
    /* A request is answered 503 at once while the oldest one waiting for a worker has
     * waited this long: what is accepted keeps its latency whatever the bound in
     * requests would allow on a slower day. 0: no such bound. */
    long long max_queue_ms;
} oms_http_limits;

typedef struct oms_http_config {
    const char *addr;             /* "127.0.0.1:8080" */
    const oms_http_route *routes; /* must outlive the server */
    size_t nroutes;
    size_t max_body;        /* bytes; 0 = 64 KiB */
    const char *static_dir; /* GET fallback: files under it ("/" -> index.html); NULL = none */
    int threads;            /* handler workers; 0 = 2 */
    const oms_http_limits *limits; /* borrowed for the call; NULL = 30 s, 512, 128, 64 */
    /* ms a request may take from its arrival: the handler's work deadline
     * (oms_work_deadline), which bounds the gRPC calls it makes. 0: none. */
    long long budget_ms;
    void *ud;
} oms_http_config;

typedef struct oms_http_server oms_http_server;

/* Starts serving in background threads: I/O threads (libmicrohttpd) read requests and
 * write answers and never block; `threads` workers run the route handlers. A request
 * for a route waits for a worker with its connection suspended; when max_in_flight
 * requests are already running or waiting, or the oldest waiting one has waited
 * max_queue_ms, it is answered at once by the I/O thread: 503, Retry-After: 1,
 * {"error": ...}, counted in http_requests_refused_total{reason}.
 * Limits out of range: OMS_INVALID naming the
 * variable. Unknown path: 404 JSON. Body over max_body:
 * 413 JSON. Each request is logged at debug and counted in metrics
 * (http_requests_total{route,method,code}, http_request_duration_seconds). */
int oms_http_start(oms_http_server **out, const oms_http_config *cfg, char *err, size_t errlen);
/* For a handler whose dependency answered that it is overloaded: for the next ms, the
 * request's route is answered 503 (Retry-After: 1) at once by the I/O thread, without
 * a worker or a call that would only be refused again
 * (http_requests_refused_total{reason="upstream"}). */
void oms_http_shed(const oms_http_req *req, long long ms);
/* Stops and frees: waiting requests get 503, running handlers finish, every stream
 * ends (its closed callback runs). NULL is a no-op. */
void oms_http_stop(oms_http_server *s);

/* ---- Server-Sent Events streams (docs/http.md) ----------------------------------------
 * A handler turns its request into a long-lived text/event-stream answer. The stream
 * holds no thread: while it has nothing to send its connection is suspended, and
 * oms_http_stream_send wakes it. Every heartbeat_ms the server sends ": hb" on each
 * stream, which also finds clients that went away. */

/* Called once when the stream ends (client gone, server stopping, client too slow to
 * take what was sent), from a server thread, holding no lock of the server. The stream
 * takes no data afterwards; the owner still drops its reference. */
typedef void (*oms_http_stream_closed)(oms_http_stream *s, void *arg);

/* In a handler: makes resp a 200 text/event-stream answer (no-store, unbuffered) and
 * returns the stream with one reference owned by the caller (release it with
 * oms_http_stream_release), or NULL when the server already holds max_streams streams
 * (resp is then a 503 with Retry-After). Data sent before the handler returns is the
 * first thing the client reads. A handler that writes another answer into resp after
 * opening (an error) ends the stream: on_closed runs. */
oms_http_stream *oms_http_stream_open(const oms_http_req *req, oms_http_resp *resp,
                                      oms_http_stream_closed on_closed, void *arg);
/* Appends len bytes (whole events: "id: ..\nevent: ..\ndata: ..\n\n") for the client;
 * any thread. OMS_OK, or OMS_UNAVAILABLE when the stream has ended. A client that
 * lets 256 KiB pile up is disconnected. */
int oms_http_stream_send(oms_http_stream *s, const char *data, size_t len);
/* Drops the caller's reference. NULL: no-op. */
void oms_http_stream_release(oms_http_stream *s);
/* Open streams of the server (for tests and metrics). */
int oms_http_stream_count(const oms_http_server *srv);
/* The bound TCP port (useful with addr "127.0.0.1:0"), or -1. */
int oms_http_port(const oms_http_server *s);

#endif
