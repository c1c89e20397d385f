/* One small status set for the whole system (nginx's NGX_OK/NGX_ERROR style),
 * mapped once to gRPC codes and HTTP statuses so they cannot drift apart. */
#ifndef OMS_STATUS_H
#define OMS_STATUS_H

#include <stddef.h>

/* XX(name, value, text, grpc code, http status) */
#define OMS_STATUS_MAP(XX)                                                                         \
    XX(OK, 0, "ok", 0, 200)                                                                        \
    XX(ERR, -1, "internal error", 13, 500)                                                         \
    XX(AGAIN, -2, "try again later", 14, 503)                                                      \
    XX(NOTFOUND, -3, "not found", 5, 404)                                                          \
    XX(CONFLICT, -4, "conflict", 9, 409)                                                           \
    XX(DUPLICATE, -5, "already processed", 6, 409)                                                 \
    XX(INVALID, -6, "invalid argument", 3, 400)                                                    \
    XX(UNAVAILABLE, -7, "service unavailable", 14, 503)                                            \
    XX(TOOBIG, -8, "too large", 8, 413)                                                            \
    XX(KEY_REUSED, -9, "idempotency key reused for another request", 6, 422)                       \
    XX(LIMITED, -10, "too many requests", 8, 429)

/* How an overload refusal's message starts (OMS_LIMITED with it is an overload, not a
 * client's limit): a gRPC client maps such a RESOURCE_EXHAUSTED to OMS_UNAVAILABLE,
 * which callers answer 503 with Retry-After, not 429. */
#define OMS_OVERLOADED "server overloaded"

typedef enum {
#define OMS_STATUS_ENUM(name, value, text, grpc, http) OMS_##name = value,
    OMS_STATUS_MAP(OMS_STATUS_ENUM)
#undef OMS_STATUS_ENUM
} oms_status;

/* An error with a human message for the log and the client ("product 2 (Chocolate):
 * 3 requested, 2 left"), never a bare "failed". Caller-allocated; no heap. */
typedef struct oms_error {
    int code;
    char msg[512];
} oms_error;

/* Sets err (if non-NULL) and returns code, so `return oms_error_set(err, OMS_INVALID, ...)`. */
int oms_error_set(oms_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void oms_error_clear(oms_error *err);

const char *oms_status_text(int code);
int oms_status_to_grpc(int code);
int oms_status_from_grpc(int grpc_code);
int oms_status_to_http(int code);
/* gRPC status code name ("OK", "NOT_FOUND", ...; "UNKNOWN" outside 0..16), for metric
 * labels and span attributes. */
const char *oms_grpc_code_name(int grpc_code);

#endif
