/* libFuzzer target: Stripe-Signature parsing and verification (payments/signature.c).
 * Input: the header value, a NUL byte, then the raw webhook body (any bytes). Checks:
 * no crash or over-read whatever the header; a forged header is never accepted
 * (the fuzzer cannot know the HMAC, so OK would mean a broken compare); and the
 * header we sign ourselves for the same body always verifies. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "signature.h"
#include "fuzz.h"

#define SECRET "whsec_fuzz_secret"
#define NOW 1700000000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t hlen = nul ? (size_t)(nul - data) : size;
    const char *body = nul ? (const char *)nul + 1 : "";
    size_t blen = nul ? size - hlen - 1 : 0;
    char *header = malloc(hlen + 1);
    char *bcopy = malloc(blen ? blen : 1); /* exact size: over-reads are caught */
    if (!header || !bcopy)
        abort();
    memcpy(header, data, hlen);
    header[hlen] = '\0';
    if (blen)
        memcpy(bcopy, body, blen);

    oms_error err;
    payments_sig_result r = payments_signature_verify(header, bcopy, blen, SECRET, NOW, 300, &err);
    if (r == PAYMENTS_SIG_OK)
        abort(); /* forged without the secret */
    if (r != PAYMENTS_SIG_MISSING && r != PAYMENTS_SIG_MALFORMED && r != PAYMENTS_SIG_NO_MATCH &&
        r != PAYMENTS_SIG_TOO_OLD)
        abort();

    /* Our own header for this body verifies; appended to the fuzzed items (Stripe
     * sends several v1 values) it still does when the fuzzed part is well formed. */
    char good[128];
    if (payments_signature_header(SECRET, bcopy, blen, NOW - 10, good, sizeof(good)) != OMS_OK)
        abort();
    if (payments_signature_verify(good, bcopy, blen, SECRET, NOW, 300, &err) != PAYMENTS_SIG_OK)
        abort();
    /* The same signature with the other secret never verifies. */
    if (payments_signature_verify(good, bcopy, blen, "whsec_other", NOW, 300, &err) ==
        PAYMENTS_SIG_OK)
        abort();
    free(header);
    free(bcopy);
    return 0;
}
