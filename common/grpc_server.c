/* gRPC server on the gRPC core C API (libgrpc 1.51).
 *
 * Shape: one grpc_server, one acceptor thread and `threads` workers. The acceptor keeps
 * a fixed set of call slots requested from the server (grpc_server_request_call), each
 * slot with a completion queue of its own for the call's batches; its notifications
 * arrive on the acceptor's queue. An accepted call goes to the workers' queue, unless
 * max_in_flight calls are already queued or running: then the acceptor answers it at
 * once with RESOURCE_EXHAUSTED "server overloaded: ..." (OMS_GRPC_OVERLOADED). There
 * are max_in_flight + SPARE_SLOTS slots, so gRPC itself never queues calls for lack of
 * a request: the bound is the whole queue. Health checks are answered by the acceptor
 * itself, never refused. A worker serves a call to the end (receive message, run
 * handler, send status) on the slot's queue, then requests a new call with the slot.
 * A separate CQ receives the shutdown notification.
 *
 * Ownership per call: the call, its details and request metadata, the byte buffers
 * and the status-details slice are all freed before the slot is requested again;
 * request and response messages are freed with protobuf_c_message_free_unpacked. */
#include "oms/grpc_server.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "oms/log.h"
#include "oms/metrics.h"
#include "oms/trace.h"
#include "oms/tracer.h"
#include "oms/util.h"

#define HEALTH_CHECK_PATH "/grpc.health.v1.Health/Check"
#define MAX_RECV_MESSAGE (4 * 1024 * 1024)
/* How long one batch may stay pending before the worker cancels the call: a client
 * that opens a stream and never sends its message (or never half-closes) would
 * otherwise pin a worker until the call's deadline, which may be "never". */
#define BATCH_WAIT_MS (30 * 1000)
/* Grace given to calls in flight at stop before they are cancelled. */
#define STOP_GRACE_MS 1000
/* Slots beyond the bound: calls accepted only to be refused (and health checks). */
#define SPARE_SLOTS 8
#define DEFAULT_MAX_IN_FLIGHT 64

/* One requested (then accepted) call and the queue of its batches. */
typedef struct slot {
    struct slot *next; /* in the workers' queue */
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_completion_queue *cq;
} slot;

struct oms_grpc_server {
    grpc_server *server;
    grpc_completion_queue *shutdown_cq; /* receives only the shutdown notification */
    grpc_completion_queue *accept_cq;   /* slot notifications (registered) */
    slot *slots;
    int nslots;
    atomic_int retired; /* slots the server gave back unused (shutting down) */
    pthread_t acceptor;
    int acceptor_started;
    pthread_t *workers;
    int nstarted; /* worker threads running (joined at stop) */
    int started;  /* grpc_server_start was called: shutdown must be requested */
    int max_in_flight;
    atomic_int in_flight; /* calls queued for or held by a worker */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    slot *qhead, *qtail;
    int stopping; /* under qmu: workers exit once the queue is empty */
    const oms_grpc_method *methods;
    size_t nmethods;
    void *ud;
    int port;
    atomic_int serving;
    char addr[128];
};

/* Tags only need to be distinct addresses; the value is never dereferenced. A slot's
 * request is tagged with the slot itself. */
static char tag_batch, tag_shutdown;

static gpr_timespec deadline_after_ms(int64_t ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* Drains and destroys a CQ created for next(); every pending operation on it must
 * already have completed or been cancelled. */
static void cq_destroy(grpc_completion_queue *cq)
{
    if (!cq)
        return;
    grpc_completion_queue_shutdown(cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
    }
    grpc_completion_queue_destroy(cq);
}

/* Starts ops on call and waits for their completion on cq. A batch still pending
 * after BATCH_WAIT_MS gets the call cancelled, which completes it promptly.
 * Returns OMS_OK when the batch succeeded, OMS_ERR when it failed or the call was
 * cancelled (client gone, deadline passed, server stopping). */
static int run_batch(grpc_completion_queue *cq, grpc_call *call, const grpc_op *ops, size_t n)
{
    grpc_call_error ce = grpc_call_start_batch(call, ops, n, &tag_batch, NULL);
    if (ce != GRPC_CALL_OK) {
        /* No event will be posted for a batch that did not start. */
        oms_log_errorf("grpc: start_batch failed (%d)", (int)ce);
        return OMS_ERR;
    }
    grpc_event ev = grpc_completion_queue_next(cq, deadline_after_ms(BATCH_WAIT_MS), NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        oms_log_warnf("grpc: call stalled for %d ms, cancelling it", BATCH_WAIT_MS);
        grpc_call_cancel(call, NULL);
        ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    }
    if (ev.type != GRPC_OP_COMPLETE || ev.tag != &tag_batch)
        return OMS_ERR;
    return ev.success ? OMS_OK : OMS_ERR;
}

/* The caller's deadline on oms_mono_ms()'s clock, 0 when the call has none. */
static int64_t deadline_to_mono_ms(gpr_timespec deadline)
{
    if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) == 0)
        return 0;
    gpr_timespec dl = gpr_convert_clock_type(deadline, GPR_CLOCK_MONOTONIC);
    gpr_timespec left = gpr_time_sub(dl, gpr_now(GPR_CLOCK_MONOTONIC));
    /* Clamp before multiplying: a deadline years away must not overflow. */
    int64_t sec = left.tv_sec;
    if (sec > 86400LL * 365)
        sec = 86400LL * 365;
    if (sec < -86400LL)
        sec = -86400LL;
    int64_t ms = oms_mono_ms() + sec * 1000 + left.tv_nsec / 1000000;
    return ms > 0 ? ms : 1; /* 0 means "no deadline" */
}

/* The caller's trace context from its traceparent metadata; 0 when it is missing or
 * malformed. */
static int call_traceparent(const grpc_metadata_array *md, oms_trace_ctx *parent)
{
    int have_parent = 0;
    for (size_t i = 0; i < md->count; i++) {
        if (grpc_slice_str_cmp(md->metadata[i].key, "traceparent") != 0)
            continue;
        const grpc_slice v = md->metadata[i].value;
        char buf[256]; /* a future version may append fields; longer is malformed */
        size_t len = GRPC_SLICE_LENGTH(v);
        if (len >= sizeof(buf))
            break;
        memcpy(buf, GRPC_SLICE_START_PTR(v), len);
        buf[len] = '\0';
        have_parent = oms_traceparent_parse(buf, parent) == OMS_OK;
        break;
    }
    return have_parent;
}

/* The method label of a call: its path when it is one we serve (or health), else
 * "unknown", so a client cannot create metric series at will. */
static const char *method_label(const oms_grpc_server *s, const grpc_call_details *details)
{
    if (grpc_slice_str_cmp(details->method, HEALTH_CHECK_PATH) == 0)
        return HEALTH_CHECK_PATH;
    for (size_t i = 0; i < s->nmethods; i++)
        if (grpc_slice_str_cmp(details->method, s->methods[i].path) == 0)
            return s->methods[i].path;
    return "unknown";
}

/* grpc_server_handled_total{method,code} and grpc_server_handling_seconds{method}. */
static void count_call(const char *method, grpc_status_code code, int64_t start_ms)
{
    char labels[384] = "", hl[320] = "";
    oms_metrics_label(labels, sizeof(labels), "method", method);
    oms_metrics_label(labels, sizeof(labels), "code", oms_grpc_code_name((int)code));
    oms_metrics_counter_add("grpc_server_handled_total",
                            "gRPC calls completed by the server, by method and status code", labels,
                            1);
    oms_metrics_label(hl, sizeof(hl), "method", method);
    oms_metrics_observe("grpc_server_handling_seconds",
                        "gRPC server latency from accepted call to status, by method", hl,
                        (double)(oms_mono_ms() - start_ms) / 1000.0);
}

/* The call's SERVER span, named "package.Service/Method" as OpenTelemetry's RPC
 * conventions say: a child of the caller's traceparent, or a new trace when it is
 * missing or malformed; the thread's current context while the handler runs.
 * Health checks get none (every readiness probe would be a trace) but still run
 * without any current context. */
static oms_span *call_span_start(const char *method, const grpc_metadata_array *md,
                                 const char *peer)
{
    oms_trace_ctx parent;
    if (strcmp(method, HEALTH_CHECK_PATH) == 0)
        return NULL;
    int have_parent = call_traceparent(md, &parent);
    const char *name = method[0] == '/' ? method + 1 : method;
    oms_span *span = have_parent ? oms_span_start(name, OMS_SPAN_SERVER, &parent)
                                 : oms_span_start_root(name, OMS_SPAN_SERVER);
    oms_span_set_str(span, "rpc.system", "grpc");
    const char *slash = strchr(name, '/');
    if (slash) {
        char service[256];
        snprintf(service, sizeof(service), "%.*s", (int)(slash - name), name);
        oms_span_set_str(span, "rpc.service", service);
        oms_span_set_str(span, "rpc.method", slash + 1);
    }
    if (peer && *peer)
        oms_span_set_str(span, "network.peer.address", peer);
    return span;
}

/* Ends the call's span with its status; per the RPC conventions a server span is an
 * error only for codes that mean the server failed, not the caller. */
static void call_span_end(oms_span *span, grpc_status_code code)
{
    if (!span)
        return;
    oms_span_set_int(span, "rpc.grpc.status_code", (long long)code);
    switch (code) {
    case GRPC_STATUS_UNKNOWN:
    case GRPC_STATUS_DEADLINE_EXCEEDED:
    case GRPC_STATUS_UNIMPLEMENTED:
    case GRPC_STATUS_INTERNAL:
    case GRPC_STATUS_UNAVAILABLE:
    case GRPC_STATUS_DATA_LOSS:
        oms_span_set_status(span, OMS_SPAN_ERROR, oms_grpc_code_name((int)code));
        break;
    default: break;
    }
    oms_span_end(span);
}

static const oms_grpc_method *find_method(const oms_grpc_server *s, grpc_slice path)
{
    for (size_t i = 0; i < s->nmethods; i++)
        if (grpc_slice_str_cmp(path, s->methods[i].path) == 0)
            return &s->methods[i];
    return NULL;
}

/* Serialises msg into a new byte buffer (owned by the caller). */
static grpc_byte_buffer *pack_message(const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    grpc_slice slice = grpc_slice_malloc(len);
    size_t written = protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *bb = NULL;
    if (written == len)
        bb = grpc_raw_byte_buffer_create(&slice, 1); /* takes its own ref */
    grpc_slice_unref(slice);
    return bb;
}

/* Unpacks a received byte buffer as desc; NULL when it does not parse. The result
 * is owned by the caller (protobuf_c_message_free_unpacked). */
static ProtobufCMessage *unpack_message(grpc_byte_buffer *bb,
                                        const ProtobufCMessageDescriptor *desc)
{
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return NULL; /* undecodable compression */
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    ProtobufCMessage *msg =
        protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    grpc_byte_buffer_reader_destroy(&reader);
    return msg;
}

/* What a call answers: a status with details, and a message when the status is OK. */
typedef struct reply {
    grpc_status_code code;
    char msg[512];
    grpc_byte_buffer *body; /* owned; NULL unless code is OK */
} reply;

static void reply_status(reply *r, grpc_status_code code, const char *msg)
{
    r->code = code;
    snprintf(r->msg, sizeof(r->msg), "%s", msg ? msg : "");
}

/* grpc.health.v1.HealthCheckResponse{status}: field 1 varint, SERVING=1,
 * NOT_SERVING=2. Hand-encoded so no health proto is needed. */
static void answer_health(oms_grpc_server *s, reply *r)
{
    char bytes[2] = {0x08, atomic_load(&s->serving) ? 0x01 : 0x02};
    grpc_slice slice = grpc_slice_from_copied_buffer(bytes, sizeof(bytes));
    r->body = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    reply_status(r, GRPC_STATUS_OK, NULL);
}

static void run_handler(oms_grpc_server *s, const oms_grpc_method *m, grpc_call *call,
                        const grpc_call_details *details, grpc_byte_buffer *req_bb, reply *r)
{
    ProtobufCMessage *req = unpack_message(req_bb, m->request);
    if (!req) {
        oms_log_warnf("grpc: %s: malformed request message", m->path);
        reply_status(r, GRPC_STATUS_INVALID_ARGUMENT, "malformed request message");
        return;
    }

    oms_grpc_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.method = m->path;
    ctx.deadline_mono_ms = deadline_to_mono_ms(details->deadline);
    ctx.ud = s->ud;
    oms_error_clear(&ctx.err);
    char *peer = grpc_call_get_peer(call);
    if (peer) {
        snprintf(ctx.peer, sizeof(ctx.peer), "%s", peer);
        gpr_free(peer);
    }

    ProtobufCMessage *resp = NULL;
    /* The calls the handler makes get what is left of the caller's deadline. */
    oms_work_deadline_set(ctx.deadline_mono_ms);
    int rc = m->fn(&ctx, req, &resp);
    oms_work_deadline_set(0);
    protobuf_c_message_free_unpacked(req, NULL);

    if (rc == OMS_OK && !resp) {
        /* A handler bug; answer rather than send an empty message of unknown type. */
        oms_log_errorf("grpc: %s: handler returned OK without a response", m->path);
        reply_status(r, GRPC_STATUS_INTERNAL, "internal error: no response");
        return;
    }
    if (rc != OMS_OK) {
        if (resp) /* the contract says no response on error; do not leak one anyway */
            protobuf_c_message_free_unpacked(resp, NULL);
        oms_log_debugf("grpc: %s -> %s: %s", m->path, oms_status_text(rc), ctx.err.msg);
        reply_status(r, (grpc_status_code)oms_status_to_grpc(rc),
                     ctx.err.msg[0] ? ctx.err.msg : oms_status_text(rc));
        return;
    }
    r->body = pack_message(resp);
    protobuf_c_message_free_unpacked(resp, NULL);
    if (!r->body) {
        oms_log_errorf("grpc: %s: cannot serialise the response", m->path);
        reply_status(r, GRPC_STATUS_INTERNAL, "internal error: cannot serialise the response");
        return;
    }
    reply_status(r, GRPC_STATUS_OK, NULL);
}

/* Serves one accepted call from request message to status; returns the status sent
 * (CANCELLED when the call ended before its message arrived). */
static grpc_status_code serve_call(oms_grpc_server *s, grpc_completion_queue *cq, grpc_call *call,
                                   const grpc_call_details *details)
{
    grpc_byte_buffer *req_bb = NULL;
    reply r;
    memset(&r, 0, sizeof(r));

    grpc_op recv;
    memset(&recv, 0, sizeof(recv));
    recv.op = GRPC_OP_RECV_MESSAGE;
    recv.data.recv_message.recv_message = &req_bb;
    if (run_batch(cq, call, &recv, 1) != OMS_OK) {
        r.code = GRPC_STATUS_CANCELLED;
        goto done; /* cancelled before its message arrived: nobody to answer */
    }

    const oms_grpc_method *m = NULL;
    if (grpc_slice_str_cmp(details->method, HEALTH_CHECK_PATH) == 0) {
        answer_health(s, &r);
    } else if (!(m = find_method(s, details->method))) {
        char *path = grpc_slice_to_c_string(details->method);
        char msg[300];
        snprintf(msg, sizeof(msg), "unknown method %.256s", path);
        gpr_free(path);
        oms_log_warnf("grpc: %s", msg);
        reply_status(&r, GRPC_STATUS_UNIMPLEMENTED, msg);
    } else if (!req_bb) {
        /* Half-closed without a message: a unary call always carries one. */
        reply_status(&r, GRPC_STATUS_INVALID_ARGUMENT, "malformed request message");
    } else {
        run_handler(s, m, call, details, req_bb, &r);
    }

    grpc_op ops[4];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    n++;
    if (r.code == GRPC_STATUS_OK && r.body) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = r.body;
        n++;
    }
    grpc_slice status_details = grpc_slice_from_copied_string(r.msg);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = r.code;
    ops[n].data.send_status_from_server.status_details = r.msg[0] ? &status_details : NULL;
    n++;
    int cancelled = 0;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n].data.recv_close_on_server.cancelled = &cancelled;
    n++;
    if (run_batch(cq, call, ops, n) != OMS_OK)
        oms_log_debug("grpc: reply not delivered (client gone or server stopping)");
    grpc_slice_unref(status_details);

done:
    if (r.body)
        grpc_byte_buffer_destroy(r.body);
    if (req_bb)
        grpc_byte_buffer_destroy(req_bb);
    return r.code;
}

/* Asks the server for the next call into sl (notification on the acceptor's queue).
 * A refusal (server shutting down) counts the slot as back at once. */
static void slot_request(oms_grpc_server *s, slot *sl)
{
    if (sl->call) {
        grpc_call_unref(sl->call);
        sl->call = NULL;
    }
    grpc_call_details_destroy(&sl->details);
    grpc_metadata_array_destroy(&sl->md);
    grpc_call_details_init(&sl->details);
    grpc_metadata_array_init(&sl->md);
    grpc_call_error ce = grpc_server_request_call(s->server, &sl->call, &sl->details, &sl->md,
                                                  sl->cq, s->accept_cq, sl);
    if (ce != GRPC_CALL_OK) {
        oms_log_errorf("grpc: request_call failed (%d); slot retired", (int)ce);
        atomic_fetch_add(&s->retired, 1);
    }
}

/* Serves one accepted call with its span and metrics. */
static void serve_slot(oms_grpc_server *s, slot *sl)
{
    int64_t start_ms = oms_mono_ms();
    const char *method = method_label(s, &sl->details);
    char *peer = grpc_call_get_peer(sl->call);
    oms_span *span = call_span_start(method, &sl->md, peer);
    gpr_free(peer);
    grpc_status_code code = serve_call(s, sl->cq, sl->call, &sl->details);
    call_span_end(span, code); /* restores the thread's empty context */
    count_call(method, code, start_ms);
}

/* Past the bound: RESOURCE_EXHAUSTED at once, without reading the request. */
static void refuse_slot(oms_grpc_server *s, slot *sl)
{
    int64_t start_ms = oms_mono_ms();
    const char *method = method_label(s, &sl->details);
    char msg[160];
    snprintf(msg, sizeof(msg), "%s: %d calls in flight (GRPC_MAX_IN_FLIGHT), retry later",
             OMS_GRPC_OVERLOADED, s->max_in_flight);
    grpc_slice details = grpc_slice_from_copied_string(msg);
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    int cancelled = 0;
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[1].data.send_status_from_server.status = GRPC_STATUS_RESOURCE_EXHAUSTED;
    ops[1].data.send_status_from_server.status_details = &details;
    ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[2].data.recv_close_on_server.cancelled = &cancelled;
    (void)run_batch(sl->cq, sl->call, ops, 3);
    grpc_slice_unref(details);
    oms_metrics_counter_add("grpc_server_refused_total",
                            "gRPC calls answered RESOURCE_EXHAUSTED at once because "
                            "GRPC_MAX_IN_FLIGHT calls were queued or running",
                            "", 1);
    count_call(method, GRPC_STATUS_RESOURCE_EXHAUSTED, start_ms);
}

static void *acceptor_main(void *arg)
{
    oms_grpc_server *s = arg;
    /* Until every slot is retired (only at shutdown); the timeout re-checks that in
     * case one was retired by a worker without an event here. */
    while (atomic_load(&s->retired) < s->nslots) {
        grpc_event ev = grpc_completion_queue_next(s->accept_cq, deadline_after_ms(200), NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT)
            continue;
        if (ev.type != GRPC_OP_COMPLETE)
            break; /* the queue was shut down */
        slot *sl = ev.tag;
        if (!ev.success) { /* the server is shutting down */
            atomic_fetch_add(&s->retired, 1);
            continue;
        }
        if (grpc_slice_str_cmp(sl->details.method, HEALTH_CHECK_PATH) == 0) {
            serve_slot(s, sl);
            slot_request(s, sl);
            continue;
        }
        if (atomic_fetch_add(&s->in_flight, 1) >= s->max_in_flight) {
            atomic_fetch_sub(&s->in_flight, 1);
            refuse_slot(s, sl);
            slot_request(s, sl);
            continue;
        }
        oms_mutex_lock(&s->qmu);
        sl->next = NULL;
        if (s->qtail)
            s->qtail->next = sl;
        else
            s->qhead = sl;
        s->qtail = sl;
        oms_cond_signal(&s->qcv);
        oms_mutex_unlock(&s->qmu);
    }
    return NULL;
}

static void *worker_main(void *arg)
{
    oms_grpc_server *s = arg;
    oms_mutex_lock(&s->qmu);
    for (;;) {
        while (!s->qhead && !s->stopping)
            oms_cond_wait(&s->qcv, &s->qmu);
        slot *sl = s->qhead;
        if (!sl)
            break;
        s->qhead = sl->next;
        if (!s->qhead)
            s->qtail = NULL;
        oms_mutex_unlock(&s->qmu);
        serve_slot(s, sl);
        atomic_fetch_sub(&s->in_flight, 1);
        slot_request(s, sl);
        oms_mutex_lock(&s->qmu);
    }
    oms_mutex_unlock(&s->qmu);
    return NULL;
}

int oms_grpc_server_start(oms_grpc_server **out, const char *addr, const oms_grpc_method *methods,
                          size_t nmethods, int threads, void *ud, oms_error *err)
{
    return oms_grpc_server_start_bounded(out, addr, methods, nmethods, threads,
                                         DEFAULT_MAX_IN_FLIGHT, ud, err);
}

int oms_grpc_server_start_bounded(oms_grpc_server **out, const char *addr,
                                  const oms_grpc_method *methods, size_t nmethods, int threads,
                                  int max_in_flight, void *ud, oms_error *err)
{
    if (!out || !addr || (nmethods && !methods) || threads < 1 || max_in_flight < 1)
        return oms_error_set(err, OMS_INVALID, "grpc: bad server arguments (addr %s, threads %d)",
                             addr ? addr : "(null)", threads);
    *out = NULL;
    for (size_t i = 0; i < nmethods; i++)
        if (!methods[i].path || !methods[i].request || !methods[i].fn)
            return oms_error_set(err, OMS_INVALID, "grpc: method table entry %zu is incomplete", i);

    grpc_init(); /* balanced by grpc_shutdown in stop (or on failure below) */
    oms_grpc_server *s = oms_xcalloc(1, sizeof(*s));
    s->methods = methods;
    s->nmethods = nmethods;
    s->ud = ud;
    s->max_in_flight = max_in_flight;
    atomic_init(&s->serving, 1);
    atomic_init(&s->in_flight, 0);
    atomic_init(&s->retired, 0);
    s->qmu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    s->qcv = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
    oms_metrics_counter_add("grpc_server_refused_total",
                            "gRPC calls answered RESOURCE_EXHAUSTED at once because "
                            "GRPC_MAX_IN_FLIGHT calls were queued or running",
                            "", 0);
    snprintf(s->addr, sizeof(s->addr), "%s", addr);

    /* SO_REUSEPORT is on by default in gRPC on Linux; off, a second instance on the
     * same port fails to bind instead of silently sharing the port. */
    grpc_arg args[2];
    memset(args, 0, sizeof(args));
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_ALLOW_REUSEPORT;
    args[0].value.integer = 0;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[1].value.integer = MAX_RECV_MESSAGE;
    grpc_channel_args chargs = {2, args};
    s->server = grpc_server_create(&chargs, NULL);
    if (!s->server) {
        oms_error_set(err, OMS_ERR, "grpc: cannot create a server for %s", addr);
        goto fail;
    }

    s->shutdown_cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->shutdown_cq, NULL);
    s->accept_cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->accept_cq, NULL);
    s->nslots = max_in_flight + SPARE_SLOTS;
    s->slots = oms_xcalloc((size_t)s->nslots, sizeof(*s->slots));
    for (int i = 0; i < s->nslots; i++) {
        s->slots[i].cq = grpc_completion_queue_create_for_next(NULL);
        grpc_call_details_init(&s->slots[i].details);
        grpc_metadata_array_init(&s->slots[i].md);
    }
    s->workers = oms_xcalloc((size_t)threads, sizeof(*s->workers));

    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    s->port = grpc_server_add_http2_port(s->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (s->port <= 0) {
        oms_error_set(err, OMS_ERR, "grpc: cannot bind %s", addr);
        goto fail;
    }

    grpc_server_start(s->server);
    s->started = 1;
    for (int i = 0; i < s->nslots; i++)
        slot_request(s, &s->slots[i]);
    int aerr = pthread_create(&s->acceptor, NULL, acceptor_main, s);
    if (aerr) {
        oms_error_set(err, OMS_ERR, "grpc: cannot start the acceptor thread: %s", strerror(aerr));
        goto fail;
    }
    s->acceptor_started = 1;
    for (int i = 0; i < threads; i++) {
        int perr = pthread_create(&s->workers[i], NULL, worker_main, s);
        if (perr) {
            oms_error_set(err, OMS_ERR, "grpc: cannot start worker thread %d of %d: %s", i + 1,
                          threads, strerror(perr));
            goto fail;
        }
        s->nstarted++;
    }

    oms_log_infof("grpc: serving on %s (port %d, %d threads, at most %d calls in flight)", addr,
                  s->port, threads, max_in_flight);
    *out = s;
    return OMS_OK;

fail:
    oms_grpc_server_stop(s); /* undoes whatever part was set up, grpc_shutdown included */
    return OMS_ERR;
}

int oms_grpc_server_port(const oms_grpc_server *s)
{
    return s ? s->port : 0;
}

void oms_grpc_server_set_serving(oms_grpc_server *s, int serving)
{
    if (s)
        atomic_store(&s->serving, serving ? 1 : 0);
}

void oms_grpc_server_stop(oms_grpc_server *s)
{
    if (!s)
        return;
    if (s->started) {
        /* Stop accepting; calls in flight get STOP_GRACE_MS to finish, then are
         * cancelled so their pending batches complete and the workers can exit. */
        grpc_server_shutdown_and_notify(s->server, s->shutdown_cq, &tag_shutdown);
        grpc_event ev =
            grpc_completion_queue_next(s->shutdown_cq, deadline_after_ms(STOP_GRACE_MS), NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            oms_log_warnf("grpc: %s (port %d): calls still running after %d ms, cancelling them",
                          s->addr, s->port, STOP_GRACE_MS);
            grpc_server_cancel_all_calls(s->server);
            ev = grpc_completion_queue_next(s->shutdown_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                            NULL);
        }
    }
    /* Shutdown fails every pending request_call, so every slot comes back to the
     * acceptor, which then returns; the workers drain their queue and return. */
    if (s->acceptor_started)
        oms_thread_join(s->acceptor);
    if (s->workers) {
        oms_mutex_lock(&s->qmu);
        s->stopping = 1;
        oms_cond_broadcast(&s->qcv);
        oms_mutex_unlock(&s->qmu);
    }
    for (int i = 0; i < s->nstarted; i++) {
        int perr = pthread_join(s->workers[i], NULL);
        if (perr)
            oms_log_errorf("grpc: joining worker %d: %s", i, strerror(perr));
    }
    if (s->server)
        grpc_server_destroy(s->server);
    for (int i = 0; i < s->nslots; i++) {
        if (s->slots[i].call)
            grpc_call_unref(s->slots[i].call);
        grpc_call_details_destroy(&s->slots[i].details);
        grpc_metadata_array_destroy(&s->slots[i].md);
        cq_destroy(s->slots[i].cq);
    }
    free(s->slots);
    cq_destroy(s->accept_cq);
    cq_destroy(s->shutdown_cq);
    pthread_cond_destroy(&s->qcv);
    pthread_mutex_destroy(&s->qmu);
    if (s->started)
        oms_log_infof("grpc: stopped serving on %s (port %d)", s->addr, s->port);
    free(s->workers);
    free(s);
    grpc_shutdown(); /* balances grpc_init in start */
}
