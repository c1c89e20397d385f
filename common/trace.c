#include "oms/trace.h"

#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>

#include "oms/status.h"
#include "oms/util.h"

static _Thread_local oms_trace_ctx current;

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* uppercase is invalid per W3C */
}

static int parse_hex(const char *s, uint8_t *out, size_t n)
{
    uint8_t any = 0;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]);
        if (hi < 0)
            return OMS_INVALID;
        int lo = hexval(s[2 * i + 1]);
        if (lo < 0)
            return OMS_INVALID;
        out[i] = (uint8_t)(hi << 4 | lo);
        any |= out[i];
    }
    return any ? OMS_OK : OMS_INVALID; /* all-zero ids are invalid */
}

int oms_traceparent_parse(const char *s, oms_trace_ctx *out)
{
    oms_trace_ctx c;
    memset(&c, 0, sizeof(c));
    if (out)
        memset(out, 0, sizeof(*out));
    if (!s)
        return OMS_INVALID;
    /* strnlen bounds the read: a shorter string stops at its NUL. */
    size_t len = strnlen(s, OMS_TRACEPARENT_LEN + 1);
    if (len < OMS_TRACEPARENT_LEN)
        return OMS_INVALID;
    int vh = hexval(s[0]), vl = hexval(s[1]);
    if (vh < 0 || vl < 0)
        return OMS_INVALID;
    int version = vh << 4 | vl;
    if (version == 0xff)
        return OMS_INVALID;
    /* Version 00 is exactly 55 chars; a future version may append "-..." fields. */
    if (version == 0 && len != OMS_TRACEPARENT_LEN)
        return OMS_INVALID;
    if (version != 0 && len > OMS_TRACEPARENT_LEN && s[OMS_TRACEPARENT_LEN] != '-')
        return OMS_INVALID;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return OMS_INVALID;
    if (parse_hex(s + 3, c.trace_id, 16) != OMS_OK)
        return OMS_INVALID;
    if (parse_hex(s + 36, c.span_id, 8) != OMS_OK)
        return OMS_INVALID;
    int hi = hexval(s[53]), lo = hexval(s[54]);
    if (hi < 0 || lo < 0)
        return OMS_INVALID;
    c.flags = (uint8_t)(hi << 4 | lo);
    c.valid = 1;
    if (out)
        *out = c;
    return OMS_OK;
}

static void to_hex(const uint8_t *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void oms_traceparent_format(const oms_trace_ctx *ctx, char *out)
{
    memcpy(out, "00-", 3);
    to_hex(ctx->trace_id, 16, out + 3);
    out[35] = '-';
    to_hex(ctx->span_id, 8, out + 36);
    out[52] = '-';
    to_hex(&ctx->flags, 1, out + 53);
}

/* Trace and span ids need to be unique, not secret: a per-thread xoshiro256** seeded
 * once from getrandom(2) replaces a getrandom call per span (some 20 per order). */
static _Thread_local uint64_t rng[4];
static _Thread_local int rng_seeded;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(void)
{
    if (!rng_seeded) {
        if (getrandom(rng, sizeof(rng), 0) != (ssize_t)sizeof(rng)) {
            /* Practically never; a clock- and address-derived seed still differs per
             * thread and per start. */
            uint64_t t = (uint64_t)oms_now_ms() ^ ((uint64_t)oms_mono_ms() << 20);
            rng[0] = t ^ (uint64_t)(uintptr_t)&rng;
            rng[1] = 0x9E3779B97F4A7C15ULL ^ t;
            rng[2] = 0xBF58476D1CE4E5B9ULL + (uint64_t)(uintptr_t)&rng_seeded;
            rng[3] = 0x94D049BB133111EBULL;
        }
        if (!(rng[0] | rng[1] | rng[2] | rng[3]))
            rng[0] = 1; /* the all-zero state is the generator's only fixed point */
        rng_seeded = 1;
    }
    uint64_t result = rotl(rng[1] * 5, 7) * 9;
    uint64_t t = rng[1] << 17;
    rng[2] ^= rng[0];
    rng[3] ^= rng[1];
    rng[1] ^= rng[2];
    rng[0] ^= rng[3];
    rng[2] ^= t;
    rng[3] = rotl(rng[3], 45);
    return result;
}

static void random_bytes(uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = rng_next();
        size_t k = n - i < 8 ? n - i : 8;
        memcpy(out + i, &v, k);
    }
    out[0] |= 1; /* never all zero */
}

void oms_trace_new_root(oms_trace_ctx *out)
{
    memset(out, 0, sizeof(*out));
    random_bytes(out->trace_id, 16);
    random_bytes(out->span_id, 8);
    out->flags = 1;
    out->valid = 1;
}

void oms_trace_new_child(const oms_trace_ctx *parent, oms_trace_ctx *out)
{
    if (!parent || !parent->valid) {
        oms_trace_new_root(out);
        return;
    }
    oms_trace_ctx c = *parent;
    random_bytes(c.span_id, 8);
    *out = c;
}

void oms_trace_id_hex(const oms_trace_ctx *ctx, char out[33])
{
    to_hex(ctx->trace_id, 16, out);
}

void oms_span_id_hex(const oms_trace_ctx *ctx, char out[17])
{
    to_hex(ctx->span_id, 8, out);
}

void oms_trace_set_current(const oms_trace_ctx *ctx)
{
    if (ctx)
        current = *ctx;
    else
        memset(&current, 0, sizeof(current));
}

const oms_trace_ctx *oms_trace_current(void)
{
    return current.valid ? &current : NULL;
}

void oms_trace_clear_current(void)
{
    memset(&current, 0, sizeof(current));
}

void oms_trace_current_header(char *out)
{
    if (current.valid)
        oms_traceparent_format(&current, out);
    else
        out[0] = '\0';
}
