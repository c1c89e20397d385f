/* A gRPC client: one long-lived channel per target, shared by all threads, with
 * round-robin over several addresses. Calls are synchronous with a deadline, carry
 * the calling thread's current trace context as `traceparent` metadata, and map the
 * status to our codes (oms_status_from_grpc) with the server's message in err. */
#ifndef OMS_GRPC_CLIENT_H
#define OMS_GRPC_CLIENT_H

#include <protobuf-c/protobuf-c.h>

#include "oms/status.h"

typedef struct oms_grpc_client oms_grpc_client;

/* targets: "127.0.0.1:2002" or a comma list "127.0.0.1:2002,127.0.0.1:2012"
 * (round robin). The channel connects lazily. *out owned by the caller. */
int oms_grpc_client_new(oms_grpc_client **out, const char *targets, oms_error *err);
void oms_grpc_client_free(oms_grpc_client *c);
/* Replaces the client's targets (same syntax as oms_grpc_client_new) atomically: new
 * calls use a new channel, calls in flight finish on the old one. For service
 * discovery (oms/discovery.h), which calls it only when the set of instances changes,
 * so channels stay long-lived. Thread-safe against concurrent calls. */
int oms_grpc_client_set_targets(oms_grpc_client *c, const char *targets, oms_error *err);

/* Calls method ("/api.StockService/ReserveItems"). On OMS_OK *resp is a message of
 * resp_desc owned by the caller (protobuf_c_message_free_unpacked(*resp, NULL)).
 * Otherwise *resp is NULL and err holds the status message; OMS_UNAVAILABLE for
 * connection failures and deadline expiry. The call's deadline is timeout_ms from now
 * or the calling thread's work deadline (oms_work_deadline: the HTTP request's budget,
 * the deadline of the gRPC call being served), whichever is earlier; when that one has
 * already passed the call is not sent at all: OMS_AGAIN (counted in
 * grpc_client_handled_total with code DEADLINE_EXCEEDED). */
int oms_grpc_call(oms_grpc_client *c, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                  int timeout_ms, oms_error *err);

/* OMS_OK when grpc.health.v1.Health/Check answers SERVING within timeout_ms. */
int oms_grpc_client_check_health(oms_grpc_client *c, int timeout_ms, oms_error *err);

#endif
