/* Customer tokens: verifies `Authorization: Bearer <JWT>` from an OIDC issuer against the
 * issuer's published keys (a JWKS), and says which customer it names.
 *
 * The rules (the shop's identity contract):
 *   - at most GW_JWT_MAX_TOKEN bytes, checked before anything is parsed; exactly three
 *     non-empty base64url parts (no padding, canonical), a JSON-object header without
 *     duplicate members and without "crit";
 *   - "alg" RS256 or ES256, nothing else: never "none", never HS256 (so an HS256 token
 *     whose HMAC key is the issuer's public key fails), and the key it names must be of the
 *     same type (RSA for RS256, EC P-256 for ES256); keys embedded in the header ("jwk",
 *     "jku", "x5c", "x5u") are ignored, only the JWKS is trusted;
 *   - the key is chosen by "kid"; a token without "kid" is tried against every key of the
 *     alg's type;
 *   - the payload (parsed only after the signature verifies) is a JSON object without
 *     duplicate members: "iss" equal to the configured issuer byte for byte; "aud" a string
 *     or an array of strings that holds the configured audience; "exp" required and "nbf"
 *     optional, NumericDates checked with leeway_s of clock skew; "sub" a customer id of
 *     1..GW_JWT_SUB_MAX chars of [A-Za-z0-9_.:-].
 *
 * Keys: from AUTH_JWKS_FILE (a path) or AUTH_JWKS_URL (http/https, fetched with libcurl: no
 * redirects, a 256 KiB cap, fetch_timeout_ms). Only public RS256 (RSA of 2048 bits or more)
 * and ES256 (EC P-256) signing keys are kept; other entries ("use" not "sig", another
 * "alg", oct keys, other curves, malformed ones) are skipped, and private members of a key
 * are never imported. The set is reloaded every refresh_s by a background thread, and at
 * once when a token names a kid the set does not hold (or has no kid and the set no key of
 * its type), at most once per GW_JWT_REFRESH_GAP_S of the caller's clock so a flood of
 * made-up kids cannot hammer the issuer. A load that fails (unreachable, not JSON, no
 * usable key) keeps the previous set.
 *
 * Threading: gw_jwt_verify may be called from any number of threads at once. The key set is
 * immutable and reference-counted: a verification holds the set it started with, a reload
 * swaps in a new one under a mutex, and the old one is freed by whoever drops the last
 * reference. Loads are serialised (one fetch at a time).
 *
 * The process must have called curl_global_init before the first verifier is created
 * (gateway/main.c does). */
#ifndef GATEWAY_JWT_H
#define GATEWAY_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "oms/status.h"

#define GW_JWT_MAX_TOKEN 8192        /* bytes of the compact token */
#define GW_JWT_SUB_MAX 64            /* customer id length */
#define GW_JWT_REFRESH_GAP_S 10      /* at most one unknown-kid reload per this many s */
#define GW_JWT_JWKS_MAX (256 * 1024) /* bytes of a JWKS document */
#define GW_JWT_MAX_KEYS 64           /* usable keys kept from one JWKS */

typedef struct gw_jwt_config {
    const char *issuer;         /* AUTH_ISSUER: "iss" must equal it exactly; copied */
    const char *audience;       /* AUTH_AUDIENCE: "aud" must hold it; copied */
    const char *jwks_file;      /* AUTH_JWKS_FILE, or NULL/"": exactly one of file and url */
    const char *jwks_url;       /* AUTH_JWKS_URL (http:// or https://), or NULL/"" */
    long long refresh_s;        /* periodic reload every refresh_s (0: none); 0..86400 */
    long long leeway_s;         /* clock skew allowed on exp and nbf; 0..600 (60 is usual) */
    long long fetch_timeout_ms; /* whole fetch of AUTH_JWKS_URL; 0 = 5000 */
} gw_jwt_config;

typedef struct gw_jwt_verifier gw_jwt_verifier;

/* Validates cfg, loads the keys once and starts the reload thread (when refresh_s > 0).
 * OMS_INVALID naming the variable (AUTH_ISSUER, AUTH_AUDIENCE, AUTH_JWKS_FILE,
 * AUTH_JWKS_URL, ...) when cfg is wrong or AUTH_JWKS_FILE cannot be loaded; OMS_ERR when a
 * thread or lock cannot be made. A first fetch of AUTH_JWKS_URL that fails is not fatal
 * (the issuer may be down while the shop starts): the verifier starts with no key, refuses
 * every token ("jwks: ..."), and loads on the next token (rate-limited) or reload;
 * gw_jwt_stats tells the caller how many keys it holds, to log it. *out owned by the caller
 * (gw_jwt_verifier_free); cfg is borrowed for the call. */
int gw_jwt_verifier_new(gw_jwt_verifier **out, const gw_jwt_config *cfg, oms_error *err);

/* Stops the reload thread (waiting for a fetch under way, at most fetch_timeout_ms) and
 * frees everything; no gw_jwt_verify may be running or start afterwards. NULL is a no-op. */
void gw_jwt_verifier_free(gw_jwt_verifier *v);

/* Verifies token (the part after "Bearer ", NUL-terminated, borrowed) at now_s (Unix
 * seconds: the caller's time(NULL); tests pass any instant). The same now_s clocks the
 * unknown-kid reload limit. OMS_OK: sub_out (GW_JWT_SUB_MAX + 1 bytes) holds the customer
 * id. OMS_INVALID: refused, sub_out is ""; the caller answers 401 with one generic message
 * and no hint, and logs why (whylen bytes, always NUL-terminated when whylen > 0; may be
 * NULL): it starts with the check that failed ("size", "format", "header", "alg", "kid",
 * "key", "signature", "payload", "iss", "aud", "exp", "nbf", "sub", "jwks") then a colon
 * and detail. Text taken from the token is cut and reduced to printable id characters, so
 * why is safe to log. Thread-safe; it takes no lock for the signature itself, and the one
 * call that wins an unknown-kid reload fetches in the calling thread (at most
 * fetch_timeout_ms) while the others are answered at once. */
int gw_jwt_verify(gw_jwt_verifier *v, const char *token, int64_t now_s, char *sub_out, char *why,
                  size_t whylen);

/* The token in an Authorization header value: "Bearer <token>" (scheme case-insensitive,
 * one or more spaces) -> pointer into authorization; NULL when the header is absent,
 * another scheme, or the token is empty or holds a space. */
const char *gw_jwt_bearer(const char *authorization);

/* Reloads the key set now, whatever the rate limit (an operator's or a test's choice;
 * tokens never reach it). OMS_OK, or OMS_UNAVAILABLE with err saying why (the previous set
 * is kept). Thread-safe. */
int gw_jwt_refresh(gw_jwt_verifier *v, oms_error *err);

typedef struct gw_jwt_stats {
    size_t keys;                            /* usable keys in the current set */
    unsigned long long loads;               /* successful loads, the first included */
    unsigned long long load_failures;       /* loads that kept the previous set */
    unsigned long long unknown_kid_loads;   /* reloads a token's unknown kid caused */
    unsigned long long unknown_kid_limited; /* unknown kids refused without a reload */
} gw_jwt_stats;

/* A consistent snapshot of the counters. Thread-safe. */
void gw_jwt_stats_get(gw_jwt_verifier *v, gw_jwt_stats *out);

#endif
