/* A gRPC server on the gRPC core C API, wrapped once so a service registers plain C
 * handlers in a table: {method path, request descriptor, handler}. Requests are
 * unpacked with protobuf-c; the handler returns a response message or an error.
 * Also answers grpc.health.v1.Health/Check (SERVING / NOT_SERVING).
 *
 * Threads: an acceptor and `threads` workers, each worker handling one call at a time
 * from its message to its status; calls beyond the bound are refused (below). The handler runs with
 * the caller's trace context (traceparent metadata) set as the thread's current context. */
#ifndef OMS_GRPC_SERVER_H
#define OMS_GRPC_SERVER_H

#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "oms/status.h"

typedef struct oms_grpc_ctx {
    const char *method;       /* "/api.OrderService/GetOrder" */
    int64_t deadline_mono_ms; /* the caller's deadline on oms_mono_ms()'s clock; 0 = none */
    char peer[64];
    oms_error err; /* the handler fills this when it returns an error */
    void *ud;      /* the server's user data */
} oms_grpc_ctx;

/* Returns OMS_OK with *resp set (owned by the server afterwards and freed with
 * protobuf_c_message_free_unpacked(resp, NULL), so build it with malloc'd strings,
 * arrays and sub-messages; protobuf_c_empty_string may be left in place), or an
 * OMS_* error with ctx->err.msg set (sent as the status message; code mapped by
 * oms_status_to_grpc). req is owned by the server. */
typedef int (*oms_grpc_handler)(oms_grpc_ctx *ctx, const ProtobufCMessage *req,
                                ProtobufCMessage **resp);

typedef struct oms_grpc_method {
    const char *path;
    const ProtobufCMessageDescriptor *request;
    oms_grpc_handler fn;
} oms_grpc_method;

typedef struct oms_grpc_server oms_grpc_server;

/* Binds addr ("127.0.0.1:2000"; port 0 picks a free one) and starts serving. methods
 * must outlive the server. Request messages larger than 4 MiB are refused by gRPC
 * itself. A port already in use or a bad address fails with OMS_ERR "grpc: cannot
 * bind ADDR" (SO_REUSEPORT is off, so two servers never share a port). On OMS_OK *out
 * is owned by the caller until oms_grpc_server_stop. */
int oms_grpc_server_start(oms_grpc_server **out, const char *addr, const oms_grpc_method *methods,
                          size_t nmethods, int threads, void *ud, oms_error *err);
/* As oms_grpc_server_start (which bounds at 64), with at most max_in_flight (>= 1) calls
 * queued for or held by the workers (GRPC_MAX_IN_FLIGHT); one more is answered at once
 * with RESOURCE_EXHAUSTED and a message starting with OMS_GRPC_OVERLOADED, counted in
 * grpc_server_refused_total. Health checks are never refused. */
int oms_grpc_server_start_bounded(oms_grpc_server **out, const char *addr,
                                  const oms_grpc_method *methods, size_t nmethods, int threads,
                                  int max_in_flight, void *ud, oms_error *err);
/* The gRPC server's refusals start so (oms/status.h). */
#define OMS_GRPC_OVERLOADED OMS_OVERLOADED
/* The TCP port the server is bound to: the one asked for, or the one the kernel
 * picked for "host:0" (tests bind 127.0.0.1:0). */
int oms_grpc_server_port(const oms_grpc_server *s);
/* What grpc.health.v1.Health/Check reports (starts SERVING). */
void oms_grpc_server_set_serving(oms_grpc_server *s, int serving);
/* Stops accepting, cancels calls in flight after a short grace, joins the workers and
 * frees everything. NULL is a no-op. */
void oms_grpc_server_stop(oms_grpc_server *s);

#endif
