/* gRPC client on the gRPC core C API (libgrpc 1.51).
 *
 * One channel per client, shared by every thread (a channel is thread-safe and
 * expensive to set up: it owns the TCP/HTTP2 connections). Each call is synchronous:
 * its own pluck completion queue, one batch with every op of a unary call, one
 * pluck bounded by the call's deadline. Calls are fail-fast (no wait_for_ready): a
 * server that is down answers UNAVAILABLE at once instead of holding the caller until
 * its deadline. */
#include "oms/grpc_client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "oms/grpc_server.h"
#include "oms/log.h"
#include "oms/metrics.h"
#include "oms/trace.h"
#include "oms/tracer.h"
#include "oms/util.h"

#define HEALTH_CHECK_PATH "/grpc.health.v1.Health/Check"
#define MAX_TARGETS_LEN 1024
/* Extra wait past the deadline for gRPC to report DEADLINE_EXCEEDED itself; if even
 * that passes, the call is cancelled. */
#define PLUCK_MARGIN_MS 5000
/* Reconnect backoff cap: gRPC's default grows to 120 s, which would keep a caller
 * failing for minutes after its server came back. */
#define MAX_RECONNECT_BACKOFF_MS 5000

struct oms_grpc_client {
    grpc_channel *channel;
    char target[MAX_TARGETS_LEN + 1]; /* as given, for error messages */
    /* Guards channel against oms_grpc_client_set_targets swapping it while a call is
     * being created; a created call holds its own reference to its channel. */
    pthread_mutex_t mu;
};

static char tag_call;

static gpr_timespec deadline_after_ms(int64_t ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* Appends one "host:port" of a list to the ipv4: target in out (size cap). gRPC's
 * ipv4: resolver takes only literal addresses, so a name is resolved here, once:
 * a list of names is a static set of instances, not a DNS-balanced service. */
static int append_ipv4(char *out, size_t cap, const char *entry, oms_error *err)
{
    const char *colon = strrchr(entry, ':');
    if (!colon || colon == entry || !colon[1])
        return oms_error_set(err, OMS_INVALID, "grpc: target \"%s\" is not host:port", entry);
    char host[256];
    size_t hlen = (size_t)(colon - entry);
    if (hlen >= sizeof(host))
        return oms_error_set(err, OMS_INVALID, "grpc: host in \"%s\" is too long", entry);
    memcpy(host, entry, hlen);
    host[hlen] = '\0';
    const char *port = colon + 1;

    char ip[INET_ADDRSTRLEN];
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) == 1) {
        if (!inet_ntop(AF_INET, &a, ip, sizeof(ip)))
            return oms_error_set(err, OMS_INVALID, "grpc: cannot format address %s", host);
    } else {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        int gai = getaddrinfo(host, port, &hints, &res);
        if (gai != 0 || !res)
            return oms_error_set(err, OMS_INVALID, "grpc: cannot resolve %s: %s", host,
                                 gai_strerror(gai));
        const struct sockaddr_in *sin = (const struct sockaddr_in *)res->ai_addr;
        const char *p = inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
        freeaddrinfo(res);
        if (!p)
            return oms_error_set(err, OMS_INVALID, "grpc: cannot format the address of %s", host);
    }
    size_t used = strlen(out);
    int n =
        snprintf(out + used, cap - used, "%s%s:%s", used > strlen("ipv4:") ? "," : "", ip, port);
    if (n < 0 || (size_t)n >= cap - used)
        return oms_error_set(err, OMS_INVALID, "grpc: target list is too long");
    return OMS_OK;
}

/* "a:1,b:2" -> "ipv4:A:1,B:2" in out. */
static int build_rr_target(const char *targets, char *out, size_t cap, oms_error *err)
{
    char list[MAX_TARGETS_LEN + 1];
    snprintf(list, sizeof(list), "%s", targets);
    snprintf(out, cap, "ipv4:");
    char *save = NULL;
    int count = 0;
    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        size_t len = strlen(tok);
        while (len && tok[len - 1] == ' ')
            tok[--len] = '\0';
        if (!len)
            continue;
        int rc = append_ipv4(out, cap, tok, err);
        if (rc != OMS_OK)
            return rc;
        count++;
    }
    if (!count)
        return oms_error_set(err, OMS_INVALID, "grpc: no address in target list \"%s\"", targets);
    return OMS_OK;
}

int oms_grpc_client_new(oms_grpc_client **out, const char *targets, oms_error *err)
{
    if (!out || !targets || !targets[0])
        return oms_error_set(err, OMS_INVALID, "grpc: client needs a target");
    *out = NULL;
    if (strlen(targets) > MAX_TARGETS_LEN)
        return oms_error_set(err, OMS_INVALID, "grpc: target list longer than %d chars",
                             MAX_TARGETS_LEN);

    int list = strchr(targets, ',') != NULL;
    char target[2 * MAX_TARGETS_LEN];
    if (list) {
        int rc = build_rr_target(targets, target, sizeof(target), err);
        if (rc != OMS_OK)
            return rc;
    } else {
        /* As-is: gRPC's default resolver (dns:) handles "host:port" and literals. */
        snprintf(target, sizeof(target), "%s", targets);
    }

    grpc_arg args[2];
    size_t nargs = 0;
    memset(args, 0, sizeof(args));
    args[nargs].type = GRPC_ARG_INTEGER;
    args[nargs].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[nargs].value.integer = MAX_RECONNECT_BACKOFF_MS;
    nargs++;
    if (list) {
        args[nargs].type = GRPC_ARG_STRING;
        args[nargs].key = GRPC_ARG_LB_POLICY_NAME;
        args[nargs].value.string = "round_robin";
        nargs++;
    }
    grpc_channel_args chargs = {nargs, args};

    grpc_init(); /* balanced by grpc_shutdown in oms_grpc_client_free */
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    if (!ch) {
        grpc_shutdown();
        return oms_error_set(err, OMS_ERR, "grpc: cannot create a channel to %s", target);
    }

    oms_grpc_client *c = oms_xcalloc(1, sizeof(*c));
    int e = pthread_mutex_init(&c->mu, NULL);
    if (e != 0) {
        grpc_channel_destroy(ch);
        free(c);
        grpc_shutdown();
        return oms_error_set(err, OMS_ERR, "grpc: pthread_mutex_init: %s", strerror(e));
    }
    c->channel = ch;
    snprintf(c->target, sizeof(c->target), "%s", targets);
    *out = c;
    return OMS_OK;
}

void oms_grpc_client_free(oms_grpc_client *c)
{
    if (!c)
        return;
    grpc_channel_destroy(c->channel);
    (void)pthread_mutex_destroy(&c->mu); /* no call can be starting: the owner frees */
    free(c);
    grpc_shutdown();
}

int oms_grpc_client_set_targets(oms_grpc_client *c, const char *targets, oms_error *err)
{
    if (!c)
        return oms_error_set(err, OMS_INVALID, "grpc: set targets without a client");
    /* Build the new channel exactly as a new client would, then trade channels: the
     * temporary client leaves with the old one and frees it. Calls already started on
     * the old channel finish on it (each holds a reference). */
    oms_grpc_client *fresh = NULL;
    int rc = oms_grpc_client_new(&fresh, targets, err);
    if (rc != OMS_OK)
        return rc;
    oms_mutex_lock(&c->mu);
    grpc_channel *old = c->channel;
    c->channel = fresh->channel;
    oms_mutex_unlock(&c->mu);
    fresh->channel = old;
    oms_grpc_client_free(fresh);
    return OMS_OK;
}

/* Maps a non-OK status to our code and message. The server's details are the
 * message (they were written for the client: "stock: not enough Chocolate");
 * transport failures name the target instead. */
static int status_error(const oms_grpc_client *c, const char *method, grpc_status_code status,
                        grpc_slice details, int timeout_ms, oms_error *err)
{
    char *text = grpc_slice_to_c_string(details);
    int code = oms_status_from_grpc((int)status);
    /* A server past its bound is a load condition to retry, not the caller's limit. */
    if (status == GRPC_STATUS_RESOURCE_EXHAUSTED && text &&
        strncmp(text, OMS_GRPC_OVERLOADED, strlen(OMS_GRPC_OVERLOADED)) == 0)
        code = OMS_UNAVAILABLE;
    if (status == GRPC_STATUS_DEADLINE_EXCEEDED)
        oms_error_set(err, code, "grpc: %s on %s: no answer within %d ms", method, c->target,
                      timeout_ms);
    else if (status == GRPC_STATUS_UNAVAILABLE)
        oms_error_set(err, code, "grpc: %s unavailable for %s: %s", c->target, method,
                      text && text[0] ? text : "no connection");
    else if (text && text[0])
        oms_error_set(err, code, "%s", text);
    else
        oms_error_set(err, code, "grpc: %s on %s: %s (status %d)", method, c->target,
                      oms_status_text(code), (int)status);
    gpr_free(text);
    return code;
}

/* The CLIENT span of a call, a child of the caller's current context; its context is
 * what the call carries as traceparent. Health checks get none: readiness probes run
 * every second and would each be a trace. */
static oms_span *client_span_start(const oms_grpc_client *c, const char *method)
{
    if (strcmp(method, HEALTH_CHECK_PATH) == 0)
        return NULL;
    const char *name = method[0] == '/' ? method + 1 : method;
    oms_span *span = oms_span_start(name, OMS_SPAN_CLIENT, NULL);
    oms_span_set_str(span, "rpc.system", "grpc");
    const char *slash = strchr(name, '/');
    if (slash) {
        char service[256];
        snprintf(service, sizeof(service), "%.*s", (int)(slash - name), name);
        oms_span_set_str(span, "rpc.service", service);
        oms_span_set_str(span, "rpc.method", slash + 1);
    }
    oms_span_set_str(span, "server.address", c->target);
    return span;
}

/* Ends the span (any non-OK status is an error for the caller) and counts the call in
 * grpc_client_handled_total{method,code} and grpc_client_handling_seconds{method}. */
static void client_call_done(oms_span *span, const char *method, grpc_status_code status,
                             const oms_error *err, int64_t start_ms)
{
    if (span) {
        oms_span_set_int(span, "rpc.grpc.status_code", (long long)status);
        if (status != GRPC_STATUS_OK)
            oms_span_set_status(span, OMS_SPAN_ERROR,
                                err && err->msg[0] ? err->msg : oms_grpc_code_name((int)status));
        oms_span_end(span);
    }
    char labels[384] = "", hl[320] = "";
    oms_metrics_label(labels, sizeof(labels), "method", method);
    oms_metrics_label(labels, sizeof(labels), "code", oms_grpc_code_name((int)status));
    oms_metrics_counter_add("grpc_client_handled_total",
                            "gRPC calls made by this service, by method and status code", labels,
                            1);
    oms_metrics_label(hl, sizeof(hl), "method", method);
    oms_metrics_observe("grpc_client_handling_seconds",
                        "gRPC client latency from call to status, by method", hl,
                        (double)(oms_mono_ms() - start_ms) / 1000.0);
}

/* One unary call with req_bb as the request. On OMS_OK *resp_bb holds the response
 * message (owned by the caller: grpc_byte_buffer_destroy). req_bb stays the
 * caller's. */
static int unary_call(oms_grpc_client *c, const char *method, grpc_byte_buffer *req_bb,
                      grpc_byte_buffer **resp_bb, int timeout_ms, oms_error *err)
{
    int rc = OMS_ERR;
    *resp_bb = NULL;
    if (timeout_ms <= 0)
        return oms_error_set(err, OMS_INVALID, "grpc: %s needs a positive timeout", method);

    int64_t start_ms = oms_mono_ms();
    /* The caller's own deadline (its HTTP request's budget, or the deadline of the gRPC
     * call it is serving) bounds this call too: an answer after it is useless, and a
     * call started after it only adds load where the system is already slow. */
    int64_t work_dl = oms_work_deadline();
    if (work_dl) {
        int64_t left = work_dl - start_ms;
        if (left <= 0) {
            oms_error_set(err, OMS_AGAIN,
                          "grpc: %s on %s not started: the deadline passed %lld ms ago", method,
                          c->target, (long long)-left);
            client_call_done(NULL, method, GRPC_STATUS_DEADLINE_EXCEEDED, err, start_ms);
            return OMS_AGAIN;
        }
        if (left < timeout_ms)
            timeout_ms = (int)left;
    }
    oms_span *span = client_span_start(c, method); /* current until the call is done */
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline = deadline_after_ms(timeout_ms);
    grpc_slice method_slice = grpc_slice_from_copied_string(method);
    oms_mutex_lock(&c->mu);
    grpc_call *call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               method_slice, NULL, deadline, NULL);
    oms_mutex_unlock(&c->mu);
    grpc_slice_unref(method_slice); /* only needed through create_call */

    char traceparent[OMS_TRACEPARENT_LEN + 1];
    oms_trace_current_header(traceparent);
    grpc_metadata md;
    memset(&md, 0, sizeof(md));
    md.key = grpc_slice_from_static_string("traceparent");
    md.value = grpc_slice_from_copied_string(traceparent);

    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_byte_buffer *recv_bb = NULL;

    if (!call) {
        oms_error_set(err, OMS_ERR, "grpc: cannot create a call to %s on %s", method, c->target);
        goto done;
    }

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = 0; /* no WAIT_FOR_READY: fail fast when the server is down */
    ops[0].data.send_initial_metadata.count = traceparent[0] ? 1 : 0;
    ops[0].data.send_initial_metadata.metadata = &md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;

    grpc_call_error ce = grpc_call_start_batch(call, ops, 6, &tag_call, NULL);
    if (ce != GRPC_CALL_OK) {
        oms_error_set(err, OMS_ERR, "grpc: cannot start %s on %s (call error %d)", method,
                      c->target, (int)ce);
        goto done;
    }
    grpc_event ev = grpc_completion_queue_pluck(
        cq, &tag_call, deadline_after_ms((int64_t)timeout_ms + PLUCK_MARGIN_MS), NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        /* gRPC enforces the deadline itself; this is the belt to its braces. The
         * cancel makes the batch complete, so the pluck below returns. */
        grpc_call_cancel(call, NULL);
        ev = grpc_completion_queue_pluck(cq, &tag_call, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    }
    if (ev.type != GRPC_OP_COMPLETE) {
        oms_error_set(err, OMS_ERR, "grpc: %s on %s: call did not complete", method, c->target);
        goto done;
    }
    /* RECV_STATUS_ON_CLIENT always succeeds; the status says what happened. */
    if (status != GRPC_STATUS_OK) {
        rc = status_error(c, method, status, details, timeout_ms, err);
        goto done;
    }
    if (!recv_bb) {
        oms_error_set(err, OMS_ERR, "grpc: %s on %s: OK without a response message", method,
                      c->target);
        goto done;
    }
    *resp_bb = recv_bb;
    recv_bb = NULL;
    rc = OMS_OK;

done:
    if (recv_bb)
        grpc_byte_buffer_destroy(recv_bb);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_slice_unref(md.value);
    if (call)
        grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    /* A call that never got a status (not created, not started) counts as UNKNOWN. */
    client_call_done(span, method, status, err, start_ms);
    return rc;
}

/* The received message as one contiguous slice (owned by the caller). */
static int read_all(grpc_byte_buffer *bb, grpc_slice *out)
{
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return OMS_ERR; /* undecodable compression */
    *out = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    return OMS_OK;
}

int oms_grpc_call(oms_grpc_client *c, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                  int timeout_ms, oms_error *err)
{
    if (resp)
        *resp = NULL;
    if (!c || !method || !req || !resp_desc || !resp)
        return oms_error_set(err, OMS_INVALID, "grpc: bad call arguments (method %s)",
                             method ? method : "(null)");

    size_t len = protobuf_c_message_get_packed_size(req);
    grpc_slice body = grpc_slice_malloc(len);
    size_t written = protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(body));
    if (written != len) {
        grpc_slice_unref(body);
        return oms_error_set(err, OMS_ERR, "grpc: %s: cannot serialise the request", method);
    }
    grpc_byte_buffer *req_bb = grpc_raw_byte_buffer_create(&body, 1); /* takes its own ref */
    grpc_slice_unref(body);

    grpc_byte_buffer *resp_bb = NULL;
    int rc = unary_call(c, method, req_bb, &resp_bb, timeout_ms, err);
    grpc_byte_buffer_destroy(req_bb);
    if (rc != OMS_OK)
        return rc;

    grpc_slice all;
    rc = read_all(resp_bb, &all);
    grpc_byte_buffer_destroy(resp_bb);
    if (rc != OMS_OK)
        return oms_error_set(err, OMS_ERR, "grpc: %s on %s: cannot decode the response", method,
                             c->target);
    *resp = protobuf_c_message_unpack(resp_desc, NULL, GRPC_SLICE_LENGTH(all),
                                      GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (!*resp)
        return oms_error_set(err, OMS_ERR, "grpc: %s on %s: malformed response message", method,
                             c->target);
    oms_error_clear(err);
    return OMS_OK;
}

/* Reads a base-128 varint at *p (bounded by end). Returns 0 when truncated. */
static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 1;
    }
    return 0;
}

/* HealthCheckResponse.status (field 1, varint) from the raw message, 0 (UNKNOWN)
 * when absent, -1 when the bytes are not a protobuf message. */
static int health_status(const uint8_t *p, size_t len)
{
    const uint8_t *end = p + len;
    int status = 0;
    while (p < end) {
        uint64_t key, v;
        if (!read_varint(&p, end, &key))
            return -1;
        switch (key & 7) {
        case 0: /* varint */
            if (!read_varint(&p, end, &v))
                return -1;
            if (key >> 3 == 1)
                status = (int)(v & 0xff);
            break;
        case 1: /* 64-bit */
            if (end - p < 8)
                return -1;
            p += 8;
            break;
        case 2: /* length-delimited */
            if (!read_varint(&p, end, &v) || v > (uint64_t)(end - p))
                return -1;
            p += v;
            break;
        case 5: /* 32-bit */
            if (end - p < 4)
                return -1;
            p += 4;
            break;
        default: return -1;
        }
    }
    return status;
}

int oms_grpc_client_check_health(oms_grpc_client *c, int timeout_ms, oms_error *err)
{
    if (!c)
        return oms_error_set(err, OMS_INVALID, "grpc: health check without a client");
    /* HealthCheckRequest{service=""} encodes as zero bytes: "the whole server". */
    grpc_byte_buffer *req_bb = grpc_raw_byte_buffer_create(NULL, 0);
    grpc_byte_buffer *resp_bb = NULL;
    int rc = unary_call(c, HEALTH_CHECK_PATH, req_bb, &resp_bb, timeout_ms, err);
    grpc_byte_buffer_destroy(req_bb);
    if (rc != OMS_OK)
        return rc;

    grpc_slice all;
    rc = read_all(resp_bb, &all);
    grpc_byte_buffer_destroy(resp_bb);
    if (rc != OMS_OK)
        return oms_error_set(err, OMS_ERR, "grpc: health of %s: cannot decode the response",
                             c->target);
    int status = health_status(GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all));
    grpc_slice_unref(all);
    if (status == 1) {
        oms_error_clear(err);
        return OMS_OK;
    }
    if (status < 0)
        return oms_error_set(err, OMS_ERR, "grpc: health of %s: malformed response", c->target);
    return oms_error_set(err, OMS_UNAVAILABLE, "grpc: %s is %s", c->target,
                         status == 2 ? "NOT_SERVING" : "not serving (status unknown)");
}
