/* libFuzzer target: the W3C traceparent parser, fed by HTTP headers, gRPC metadata and
 * AMQP headers from anyone. The input is used as a C string (what every caller
 * passes); an accepted value must format back to the same 55 characters (the version
 * byte aside: we always emit 00). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oms/status.h"
#include "oms/trace.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size heap copy, so ASan sees any read past the terminating NUL. */
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    oms_trace_ctx ctx;
    int rc = oms_traceparent_parse(s, &ctx);
    if (rc == OMS_OK) {
        char out[OMS_TRACEPARENT_LEN + 1];
        if (!ctx.valid)
            abort();
        oms_traceparent_format(&ctx, out);
        if (strlen(out) != OMS_TRACEPARENT_LEN || memcmp(out + 2, s + 2, OMS_TRACEPARENT_LEN - 2))
            abort();
        /* and the formatted form parses to the same context */
        oms_trace_ctx again;
        if (oms_traceparent_parse(out, &again) != OMS_OK || memcmp(&again, &ctx, sizeof(ctx)))
            abort();
    } else if (rc != OMS_INVALID || ctx.valid) {
        abort();
    }
    free(s);
    return 0;
}
