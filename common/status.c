#include "oms/status.h"

#include <stdarg.h>
#include <stdio.h>

#include "oms/util.h"

int oms_error_set(oms_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

void oms_error_clear(oms_error *err)
{
    if (err) {
        err->code = OMS_OK;
        err->msg[0] = '\0';
    }
}

const char *oms_status_text(int code)
{
    switch (code) {
#define OMS_STATUS_TEXT(name, value, text, grpc, http)                                             \
    case value: return text;
        OMS_STATUS_MAP(OMS_STATUS_TEXT)
#undef OMS_STATUS_TEXT
    }
    return "unknown";
}

int oms_status_to_grpc(int code)
{
    switch (code) {
#define OMS_STATUS_GRPC(name, value, text, grpc, http)                                             \
    case value: return grpc;
        OMS_STATUS_MAP(OMS_STATUS_GRPC)
#undef OMS_STATUS_GRPC
    }
    return 2; /* UNKNOWN */
}

int oms_status_from_grpc(int grpc_code)
{
    switch (grpc_code) {
    case 0: return OMS_OK;
    case 3:                      /* INVALID_ARGUMENT */
    case 11: return OMS_INVALID; /* OUT_OF_RANGE */
    case 5: return OMS_NOTFOUND;
    case 6: return OMS_KEY_REUSED; /* ALREADY_EXISTS: only CreateOrder's key check sends it */
    case 9: return OMS_CONFLICT;   /* FAILED_PRECONDITION */
    case 8: return OMS_LIMITED;    /* RESOURCE_EXHAUSTED: a limit per customer */
    case 4:                        /* DEADLINE_EXCEEDED */
    case 14: return OMS_UNAVAILABLE;
    default: return OMS_ERR;
    }
}

int oms_status_to_http(int code)
{
    switch (code) {
#define OMS_STATUS_HTTP(name, value, text, grpc, http)                                             \
    case value: return http;
        OMS_STATUS_MAP(OMS_STATUS_HTTP)
#undef OMS_STATUS_HTTP
    }
    return 500;
}

const char *oms_grpc_code_name(int grpc_code)
{
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if (grpc_code < 0 || (size_t)grpc_code >= OMS_NELEM(names))
        return "UNKNOWN";
    return names[grpc_code];
}
