#include "signature.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "oms/util.h"

#define SIG_HEX_LEN 64 /* SHA-256 as lowercase hex */
#define MAX_T_DIGITS 12

/* hex(HMAC-SHA256(secret, "<t>." body)) into out[65]. The prefix and the body are fed
 * separately so a large body is never copied. */
static int sign(const char *secret, int64_t t, const char *body, size_t len, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    char prefix[32];
    int n = snprintf(prefix, sizeof(prefix), "%" PRId64 ".", t);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    int ok = 0;
    HMAC_CTX *ctx = NULL;
    if (n < 0 || (size_t)n >= sizeof(prefix))
        return OMS_ERR;
        /* HMAC_CTX is deprecated in OpenSSL 3 but its replacement (EVP_MAC) is far
         * wordier for one fixed algorithm; silence the warning locally. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    ctx = HMAC_CTX_new();
    if (ctx && HMAC_Init_ex(ctx, secret, (int)strlen(secret), EVP_sha256(), NULL) == 1 &&
        HMAC_Update(ctx, (const unsigned char *)prefix, (size_t)n) == 1 &&
        (len == 0 || HMAC_Update(ctx, (const unsigned char *)body, len) == 1) &&
        HMAC_Final(ctx, mac, &maclen) == 1 && maclen == 32)
        ok = 1;
    HMAC_CTX_free(ctx);
#pragma GCC diagnostic pop
    if (!ok)
        return OMS_ERR;
    for (unsigned i = 0; i < maclen; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[SIG_HEX_LEN] = '\0';
    return OMS_OK;
}

int payments_signature_header(const char *secret, const char *body, size_t len, int64_t t,
                              char *out, size_t outlen)
{
    char sig[SIG_HEX_LEN + 1];
    if (sign(secret, t, body, len, sig) != OMS_OK)
        return OMS_ERR;
    int n = snprintf(out, outlen, "t=%" PRId64 ",v1=%s", t, sig);
    return n < 0 || (size_t)n >= outlen ? OMS_ERR : OMS_OK;
}

const char *payments_sig_result_str(payments_sig_result r)
{
    switch (r) {
    case PAYMENTS_SIG_OK: return "ok";
    case PAYMENTS_SIG_MISSING: return "missing_signature";
    case PAYMENTS_SIG_MALFORMED: return "malformed_signature";
    case PAYMENTS_SIG_NO_MATCH: return "bad_signature";
    case PAYMENTS_SIG_TOO_OLD: return "stale_timestamp";
    }
    return "unknown";
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The parsed header: the timestamp and where the v1 values are (inside the header). */
typedef struct sig_header {
    int64_t t;
    int have_t;
    const char *v1[16];
    size_t v1len[16];
    int nv1;
} sig_header;

static payments_sig_result fail(payments_sig_result r, oms_error *err, const char *why)
{
    oms_error_set(err, OMS_INVALID, "%s", why);
    return r;
}

/* Splits on ',' then on the first '='. Unknown schemes (v0, future ones) are skipped,
 * as Stripe specifies; what we use is checked strictly. */
static payments_sig_result parse_header(const char *h, sig_header *out, oms_error *err)
{
    memset(out, 0, sizeof(*out));
    const char *p = h;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (!eq || eq == p)
            return fail(PAYMENTS_SIG_MALFORMED, err,
                        "malformed Stripe-Signature header: expected key=value items");
        size_t klen = (size_t)(eq - p), vlen = n - klen - 1;
        const char *v = eq + 1;
        if (klen == 1 && p[0] == 't') {
            if (out->have_t || vlen == 0 || vlen > MAX_T_DIGITS)
                return fail(PAYMENTS_SIG_MALFORMED, err,
                            "malformed Stripe-Signature header: bad or repeated timestamp");
            int64_t t = 0;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return fail(PAYMENTS_SIG_MALFORMED, err,
                                "malformed Stripe-Signature header: timestamp is not a number");
                t = t * 10 + (v[i] - '0');
            }
            out->t = t;
            out->have_t = 1;
        } else if (klen == 2 && p[0] == 'v' && p[1] == '1') {
            if (vlen == 0 || vlen % 2 != 0)
                return fail(PAYMENTS_SIG_MALFORMED, err,
                            "malformed Stripe-Signature header: v1 is not a hex signature");
            for (size_t i = 0; i < vlen; i++)
                if (!is_hex(v[i]))
                    return fail(PAYMENTS_SIG_MALFORMED, err,
                                "malformed Stripe-Signature header: v1 is not a hex signature");
            if (out->nv1 == (int)OMS_NELEM(out->v1))
                return fail(PAYMENTS_SIG_MALFORMED, err,
                            "malformed Stripe-Signature header: too many v1 signatures");
            out->v1[out->nv1] = v;
            out->v1len[out->nv1] = vlen;
            out->nv1++;
        }
        p = end ? end + 1 : p + n;
    }
    if (!out->have_t)
        return fail(PAYMENTS_SIG_MALFORMED, err,
                    "malformed Stripe-Signature header: no timestamp (t=)");
    if (out->nv1 == 0)
        return fail(PAYMENTS_SIG_MALFORMED, err,
                    "malformed Stripe-Signature header: no v1 signature");
    return PAYMENTS_SIG_OK;
}

payments_sig_result payments_signature_verify(const char *header, const char *body, size_t len,
                                              const char *secret, int64_t now, int64_t tolerance_s,
                                              oms_error *err)
{
    if (!header || !header[0])
        return fail(PAYMENTS_SIG_MISSING, err, "no Stripe-Signature header");
    if (strnlen(header, PAYMENTS_SIGNATURE_HEADER_MAX + 1) > PAYMENTS_SIGNATURE_HEADER_MAX)
        return fail(PAYMENTS_SIG_MALFORMED, err, "malformed Stripe-Signature header: too long");
    if (!secret || !secret[0])
        return fail(PAYMENTS_SIG_NO_MATCH, err, "no webhook secret configured");
    sig_header sh;
    payments_sig_result r = parse_header(header, &sh, err);
    if (r != PAYMENTS_SIG_OK)
        return r;
    char expected[SIG_HEX_LEN + 1];
    if (sign(secret, sh.t, body, len, expected) != OMS_OK)
        return fail(PAYMENTS_SIG_NO_MATCH, err, "cannot compute the expected signature");
    /* Every candidate is compared in full (no early exit) so timing says nothing about
     * which one matched or how much of it. */
    int match = 0;
    for (int i = 0; i < sh.nv1; i++)
        if (sh.v1len[i] == SIG_HEX_LEN)
            match |= oms_ct_equal(sh.v1[i], expected, SIG_HEX_LEN);
    if (!match)
        return fail(PAYMENTS_SIG_NO_MATCH, err,
                    "no signatures found matching the expected signature for payload");
    int64_t age = now - sh.t;
    if (age > tolerance_s || age < -tolerance_s)
        return fail(PAYMENTS_SIG_TOO_OLD, err, "timestamp outside the tolerance zone");
    return PAYMENTS_SIG_OK;
}
