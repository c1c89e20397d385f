/* W3C trace context (traceparent) and the calling thread's current span.
 * Spans are exported by oms/tracer.h (docs/tracing.md); this part only carries ids. */
#ifndef OMS_TRACE_H
#define OMS_TRACE_H

#include <stdint.h>

typedef struct oms_trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags; /* bit 0: sampled */
    int valid;     /* 0: no context */
} oms_trace_ctx;

#define OMS_TRACEPARENT_LEN 55 /* "00-" 32 "-" 16 "-" 2 */

/* Strict parse of a traceparent header value: version 00 (or a future version with
 * the same prefix), lowercase hex, non-zero ids. Returns OMS_OK or OMS_INVALID;
 * never reads past s's NUL. */
int oms_traceparent_parse(const char *s, oms_trace_ctx *out);
/* out >= OMS_TRACEPARENT_LEN + 1 bytes. */
void oms_traceparent_format(const oms_trace_ctx *ctx, char *out);
/* A new root context (random trace id and span id, sampled). */
void oms_trace_new_root(oms_trace_ctx *out);
/* A child of parent: same trace id and flags, new span id; a new root when parent
 * is NULL or invalid. */
void oms_trace_new_child(const oms_trace_ctx *parent, oms_trace_ctx *out);
/* Hex forms for logs: trace 33 bytes, span 17 bytes. */
void oms_trace_id_hex(const oms_trace_ctx *ctx, char out[33]);
void oms_span_id_hex(const oms_trace_ctx *ctx, char out[17]);

/* The calling thread's current context (thread-local). set copies; clear unsets. */
void oms_trace_set_current(const oms_trace_ctx *ctx);
const oms_trace_ctx *oms_trace_current(void); /* NULL when none */
void oms_trace_clear_current(void);
/* Writes the current context as a traceparent into out (>= 56 bytes), or "" when none. */
void oms_trace_current_header(char *out);

#endif
