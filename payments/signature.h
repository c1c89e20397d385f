/* Stripe webhook signatures (https://docs.stripe.com/webhooks#verify-manually):
 * header "t=<unix>,v1=<hex>[,v1=<hex>...][,v0=...]", expected v1 = hex
 * HMAC-SHA256(secret, "<t>.<raw body>"). Accepted when any v1 matches (constant-time
 * compare) and the timestamp is within the tolerance of now. */
#ifndef PAYMENTS_SIGNATURE_H
#define PAYMENTS_SIGNATURE_H

#include <stddef.h>
#include <stdint.h>

#include "oms/status.h"

#define PAYMENTS_SIGNATURE_TOLERANCE_S 300
#define PAYMENTS_SIGNATURE_HEADER_MAX 8192 /* a real header is ~150 bytes */

typedef enum {
    PAYMENTS_SIG_OK = 0,
    PAYMENTS_SIG_MISSING,   /* no header (NULL or empty) */
    PAYMENTS_SIG_MALFORMED, /* not "t=...,v1=..." */
    PAYMENTS_SIG_NO_MATCH,  /* no v1 matches */
    PAYMENTS_SIG_TOO_OLD,   /* |now - t| > tolerance */
} payments_sig_result;

/* Verifies header against body[0..len) with secret at time now (unix seconds).
 * Returns PAYMENTS_SIG_OK or the reason; err (optional) gets a message for the client
 * (OMS_INVALID). Never reads past header's NUL; body may hold any bytes. */
payments_sig_result payments_signature_verify(const char *header, const char *body, size_t len,
                                              const char *secret, int64_t now, int64_t tolerance_s,
                                              oms_error *err);

/* Writes "t=<t>,v1=<hex>" for body into out (size >= 96). Returns OMS_OK or OMS_ERR. */
int payments_signature_header(const char *secret, const char *body, size_t len, int64_t t,
                              char *out, size_t outlen);

/* Short label of a result for metrics/logs ("ok", "missing", ...). */
const char *payments_sig_result_str(payments_sig_result r);

#endif
