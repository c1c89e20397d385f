/* Customer token verification (jwt.h has the contract).
 *
 * Order of the checks, and why:
 *   1. size, then the three parts' shape and strict base64url, before any parser runs:
 *      cjose's own decoder asserts on some malformed input ("A===") and silently accepts
 *      padding and a fourth part, so it only ever sees text that passed here;
 *   2. the header, decoded and parsed here with duplicates refused, and "alg" checked
 *      against RS256/ES256 before cjose_jws_import: cjose imports "none" and HS256 tokens
 *      happily, and leaks the object when "alg" is missing;
 *   3. the signature's length (64 bytes for ES256; the key's modulus size for RS256):
 *      cjose's EC verifier splits whatever it gets in two halves, so a truncated signature
 *      is refused here, by name, before a key is looked for;
 *   4. the key, by kid, of the alg's own type only, then cjose_jws_verify; an unknown kid
 *      reloads the JWKS once (rate-limited) and looks again;
 *   5. only then the payload: parsed from the verified bytes, duplicates refused, the
 *      claims compared with their lengths (jansson refuses a "\u0000" in a string; were it
 *      let through, it still could not cut "iss" or "sub" short).
 *
 * The key set is an immutable array with an atomic reference count. gw_jwt_verify takes a
 * reference under v->mu (a pointer copy and an increment, nothing slow), verifies without
 * any lock, and drops it; a load builds a whole new set outside the lock and swaps the
 * pointer in. cjose_jwk_t objects are shared read-only between threads: their own
 * (non-atomic) retain count is never touched after the set is built. Loads are serialised
 * by v->load_mu; one that waited for another's finishes without fetching again. */
#include "jwt.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjose/cjose.h>
#include <curl/curl.h>
#include <jansson.h>

#include "oms/log.h"
#include "oms/util.h"

#define JWT_KID_MAX 256           /* longest kid kept from a JWKS or read from a token */
#define JWT_RSA_MIN_BITS 2048     /* smaller RSA keys are skipped */
#define JWT_RSA_MAX_BITS 16384    /* larger ones too (a verification would be slow) */
#define JWT_FETCH_TIMEOUT_MS 5000 /* default fetch_timeout_ms */
#define JWT_SHOW_MAX 48           /* chars of token text shown in a reason */

typedef enum { JWT_RS256, JWT_ES256 } jwt_alg;
static const char *const jwt_alg_name[] = {"RS256", "ES256"};
static const char *const jwt_kty_name[] = {"RSA", "EC P-256"};

typedef struct jwt_key {
    char *kid;        /* NULL when the JWKS entry has none */
    jwt_alg alg;      /* the one alg this key verifies */
    size_t sig_len;   /* the exact length of its signatures */
    cjose_jwk_t *jwk; /* public members only */
} jwt_key;

typedef struct jwt_keyset {
    atomic_uint refs; /* the verifier's own, plus one per verification using it */
    size_t n;
    jwt_key keys[GW_JWT_MAX_KEYS];
} jwt_keyset;

struct gw_jwt_verifier {
    char *issuer;
    char *audience;
    char *jwks_file; /* exactly one of file and url is set */
    char *jwks_url;
    char source[256]; /* the file, or the URL without its password, for messages */
    int64_t refresh_s;
    int64_t leeway_s;
    long timeout_ms;

    pthread_mutex_t mu;  /* guards the members below up to load_mu */
    jwt_keyset *keys;    /* never NULL: an empty set until the first load */
    uint64_t generation; /* bumped by every successful load */
    int on_demand_used;  /* an unknown-kid load happened, at on_demand_s */
    int64_t on_demand_s;
    gw_jwt_stats stats; /* keys is filled in by gw_jwt_stats_get */
    int stopping;
    pthread_cond_t wake; /* signals stopping to the reload thread; CLOCK_MONOTONIC */

    pthread_mutex_t load_mu; /* held for a whole load: one fetch at a time */
    pthread_t thread;
    int thread_started;
};

/* ---- small helpers ------------------------------------------------------------------- */

/* Sets why (when given) and returns OMS_INVALID, for `return refuse(why, ...)`. */
static int refuse(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(char *why, size_t whylen, const char *fmt, ...)
{
    if (why && whylen > 0) {
        va_list ap;
        va_start(ap, fmt);
        (void)vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return OMS_INVALID;
}

/* Token text (untrusted) made fit for a log line: the characters of an id kept, any other
 * byte shown as '?', cut to JWT_SHOW_MAX chars with "..." after. */
static void show(const char *s, size_t len, char out[JWT_SHOW_MAX + 4])
{
    size_t n = len < JWT_SHOW_MAX ? len : JWT_SHOW_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == ':' || c == '-' || c == '/';
        out[i] = ok ? (char)c : '?';
    }
    if (len > JWT_SHOW_MAX) {
        memcpy(out + n, "...", 4);
        return;
    }
    out[n] = '\0';
}

/* show() for a JSON value: its string, or its type. */
static void show_json(const json_t *j, char out[JWT_SHOW_MAX + 4])
{
    if (json_is_string(j)) {
        show(json_string_value(j), json_string_length(j), out);
        return;
    }
    snprintf(out, JWT_SHOW_MAX + 4, "%s",
             json_is_number(j)                     ? "(a number)"
             : json_is_array(j)                    ? "(an array)"
             : json_is_object(j)                   ? "(an object)"
             : json_is_true(j) || json_is_false(j) ? "(a boolean)"
                                                   : "(null)");
}

/* What jansson found wrong, in words that hold no text of the input (its own message quotes
 * the token, which may hold anything). */
static const char *json_fault(const json_error_t *je)
{
    switch (json_error_code(je)) {
    case json_error_duplicate_key: return "a duplicate member";
    case json_error_null_character: return "a \\u0000";
    default: return "a syntax error";
    }
}

/* 1 when j is a JSON string equal to want, byte for byte and of the same length. */
static int json_str_is(const json_t *j, const char *want)
{
    if (!json_is_string(j))
        return 0;
    size_t n = strlen(want);
    return json_string_length(j) == n && memcmp(json_string_value(j), want, n) == 0;
}

/* 1 when j is a string of 1..max bytes with no NUL inside. */
static int json_str_plain(const json_t *j, size_t max)
{
    if (!json_is_string(j))
        return 0;
    size_t n = json_string_length(j);
    return n >= 1 && n <= max && strlen(json_string_value(j)) == n;
}

static int b64u_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Strict base64url (RFC 7515 §2): the URL alphabet only, no padding, no length that leaves
 * 6 lone bits, and the unused low bits of the last char zero (one text per value). Writes
 * the bytes into out when non-NULL (room for len * 3 / 4); returns their number, or -1 when
 * in is not such text. */
static long b64u_decode(const char *in, size_t len, unsigned char *out)
{
    if (len % 4 == 1)
        return -1;
    uint32_t acc = 0;
    int bits = 0;
    long n = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64u_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (out)
                out[n] = (unsigned char)(acc >> bits);
            n++;
        }
        acc &= (1u << bits) - 1;
    }
    return acc == 0 ? n : -1;
}

/* Compares the NumericDate d with t: <0, 0, >0. Integer or real (jansson has no NaN). */
static int numeric_date_cmp(const json_t *d, int64_t t)
{
    if (json_is_integer(d)) {
        json_int_t v = json_integer_value(d);
        return v < t ? -1 : v > t;
    }
    double v = json_real_value(d);
    double tt = (double)t;
    return v < tt ? -1 : v > tt;
}

static int64_t sat_add(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

/* ---- key sets ------------------------------------------------------------------------ */

static jwt_keyset *keyset_new(void)
{
    jwt_keyset *ks = oms_xcalloc(1, sizeof(*ks));
    atomic_init(&ks->refs, 1);
    return ks;
}

/* Drops one reference; the last one frees the set and its keys. NULL is a no-op. */
static void keyset_release(jwt_keyset *ks)
{
    if (!ks || atomic_fetch_sub_explicit(&ks->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < ks->n; i++) {
        cjose_jwk_release(ks->keys[i].jwk);
        free(ks->keys[i].kid);
    }
    free(ks);
}

/* The current set with a reference the caller drops (keyset_release), and the load
 * generation it came from. */
static jwt_keyset *keyset_acquire(gw_jwt_verifier *v, uint64_t *generation)
{
    oms_mutex_lock(&v->mu);
    jwt_keyset *ks = v->keys;
    atomic_fetch_add_explicit(&ks->refs, 1, memory_order_relaxed);
    if (generation)
        *generation = v->generation;
    oms_mutex_unlock(&v->mu);
    return ks;
}

/* One JWKS entry into *out: OMS_OK, or OMS_NOTFOUND when the entry is not a public
 * RS256/ES256 signing key we accept (skipped, not an error of the whole set). Only the
 * public members are handed to cjose, so a JWKS that carries "d" by mistake never puts a
 * private key in this process. */
static int key_import(const json_t *k, jwt_key *out)
{
    int rc = OMS_NOTFOUND;
    json_t *pub = NULL;
    char *text = NULL;
    cjose_jwk_t *jwk = NULL;
    cjose_err cerr;
    jwt_alg alg;

    if (!json_is_object(k))
        goto done;
    const json_t *kty = json_object_get(k, "kty");
    const json_t *use = json_object_get(k, "use");
    const json_t *kalg = json_object_get(k, "alg");
    const json_t *kid = json_object_get(k, "kid");
    const json_t *ops = json_object_get(k, "key_ops");
    if (use && !json_str_is(use, "sig"))
        goto done;
    if (kid && !json_str_plain(kid, JWT_KID_MAX))
        goto done;
    if (ops) {
        size_t i;
        const json_t *op;
        int verify = 0;
        if (!json_is_array(ops))
            goto done;
        json_array_foreach(ops, i, op) verify |= json_str_is(op, "verify");
        if (!verify)
            goto done;
    }
    if (json_str_is(kty, "RSA")) {
        const json_t *n = json_object_get(k, "n"), *e = json_object_get(k, "e");
        if (!json_is_string(n) || !json_is_string(e))
            goto done;
        alg = JWT_RS256;
        pub = json_pack("{s:s, s:O, s:O}", "kty", "RSA", "n", n, "e", e);
    } else if (json_str_is(kty, "EC")) {
        const json_t *x = json_object_get(k, "x"), *y = json_object_get(k, "y");
        if (!json_str_is(json_object_get(k, "crv"), "P-256") || !json_is_string(x) ||
            !json_is_string(y))
            goto done;
        alg = JWT_ES256;
        pub = json_pack("{s:s, s:s, s:O, s:O}", "kty", "EC", "crv", "P-256", "x", x, "y", y);
    } else {
        goto done; /* oct (an HMAC secret has no place in a JWKS we verify with),
                      OKP, ... */
    }
    if (kalg && !json_str_is(kalg, jwt_alg_name[alg]))
        goto done;
    if (!pub)
        goto done;
    text = json_dumps(pub, JSON_COMPACT);
    if (!text)
        goto done;
    jwk = cjose_jwk_import(text, strlen(text), &cerr);
    if (!jwk)
        goto done;
    if (alg == JWT_RS256) {
        size_t bits = cjose_jwk_get_keysize(jwk, &cerr);
        if (cjose_jwk_get_kty(jwk, &cerr) != CJOSE_JWK_KTY_RSA || bits < JWT_RSA_MIN_BITS ||
            bits > JWT_RSA_MAX_BITS)
            goto done;
        out->sig_len = bits / 8;
    } else {
        if (cjose_jwk_get_kty(jwk, &cerr) != CJOSE_JWK_KTY_EC ||
            cjose_jwk_EC_get_curve(jwk, &cerr) != CJOSE_JWK_EC_P_256)
            goto done;
        out->sig_len = 64;
    }
    out->alg = alg;
    out->kid = kid ? oms_strdup(json_string_value(kid)) : NULL;
    out->jwk = jwk;
    jwk = NULL;
    rc = OMS_OK;
done:
    if (jwk)
        cjose_jwk_release(jwk);
    free(text);
    json_decref(pub);
    return rc;
}

/* A JWKS document into a new set (*out, one reference, the caller's): OMS_OK, or
 * OMS_INVALID with why when it is not JSON, has no "keys" array, or no usable key. */
static int keyset_parse(const char *body, size_t len, jwt_keyset **out, char *why, size_t whylen)
{
    int rc = OMS_INVALID;
    json_error_t je;
    jwt_keyset *ks = NULL;
    size_t skipped = 0, i;
    const json_t *k;

    *out = NULL;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        refuse(why, whylen, "not JSON (line %d: %s)", je.line, je.text);
        goto done;
    }
    const json_t *keys = json_object_get(doc, "keys");
    if (!json_is_array(keys)) {
        refuse(why, whylen, "no \"keys\" array");
        goto done;
    }
    ks = keyset_new();
    json_array_foreach(keys, i, k)
    {
        if (ks->n == GW_JWT_MAX_KEYS || key_import(k, &ks->keys[ks->n]) != OMS_OK)
            skipped++;
        else
            ks->n++;
    }
    if (ks->n == 0) {
        refuse(why, whylen, "no usable key (RS256 RSA >= %d bits or ES256 P-256; %zu skipped)",
               JWT_RSA_MIN_BITS, skipped);
        goto done;
    }
    *out = ks;
    ks = NULL;
    rc = OMS_OK;
done:
    keyset_release(ks);
    json_decref(doc);
    return rc;
}

/* ---- reading the JWKS ---------------------------------------------------------------- */

typedef struct capbuf {
    char *data;
    size_t len;
    int toobig;
} capbuf;

/* libcurl write callback: appends up to GW_JWT_JWKS_MAX bytes, then stops the transfer. */
static size_t capbuf_write(char *p, size_t size, size_t n, void *ud)
{
    capbuf *b = ud;
    size_t add = size * n;
    if (add > GW_JWT_JWKS_MAX - b->len) {
        b->toobig = 1;
        return 0;
    }
    b->data = oms_xrealloc(b->data, b->len + add + 1);
    memcpy(b->data + b->len, p, add);
    b->len += add;
    b->data[b->len] = '\0';
    return add;
}

static int jwks_fetch_url(const gw_jwt_verifier *v, capbuf *b, char *why, size_t whylen)
{
    int rc = OMS_UNAVAILABLE;
    long status = 0;
    struct curl_slist *hdrs = NULL;
    CURL *c = curl_easy_init();
    if (!c) {
        refuse(why, whylen, "cannot create an HTTP client");
        goto done;
    }
    hdrs = curl_slist_append(NULL, "Accept: application/json");
    if (!hdrs || curl_easy_setopt(c, CURLOPT_URL, v->jwks_url) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK || /* threads: no SIGALRM */
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, v->timeout_ms) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, v->timeout_ms) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, capbuf_write) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_WRITEDATA, b) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_USERAGENT, "oms-gateway/1") != CURLE_OK) {
        refuse(why, whylen, "cannot set up the HTTP client");
        goto done;
    }
    CURLcode cc = curl_easy_perform(c);
    if (b->toobig) {
        refuse(why, whylen, "%s: larger than %d bytes", v->source, GW_JWT_JWKS_MAX);
        goto done;
    }
    if (cc != CURLE_OK) {
        refuse(why, whylen, "%s: %s", v->source, curl_easy_strerror(cc));
        goto done;
    }
    if (curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status != 200) {
        refuse(why, whylen, "%s: answered HTTP %ld", v->source, status);
        goto done;
    }
    rc = OMS_OK;
done:
    curl_slist_free_all(hdrs);
    if (c)
        curl_easy_cleanup(c);
    return rc;
}

static int jwks_read_file(const gw_jwt_verifier *v, capbuf *b, char *why, size_t whylen)
{
    int rc = OMS_UNAVAILABLE;
    FILE *f = fopen(v->jwks_file, "rb");
    if (!f) {
        refuse(why, whylen, "%s: %s", v->source, strerror(errno));
        goto done;
    }
    b->data = oms_xmalloc(GW_JWT_JWKS_MAX + 2);
    b->len = fread(b->data, 1, GW_JWT_JWKS_MAX + 1, f);
    if (ferror(f)) {
        refuse(why, whylen, "%s: read error", v->source);
        goto done;
    }
    if (b->len > GW_JWT_JWKS_MAX) {
        refuse(why, whylen, "%s: larger than %d bytes", v->source, GW_JWT_JWKS_MAX);
        goto done;
    }
    b->data[b->len] = '\0';
    rc = OMS_OK;
done:
    if (f && fclose(f) != 0 && rc == OMS_OK)
        rc = refuse(why, whylen, "%s: close: %s", v->source, strerror(errno));
    return rc;
}

/* Reads, parses and swaps in the JWKS. The caller holds load_mu. OMS_OK, or OMS_UNAVAILABLE
 * with why (the current set stays). */
static int jwks_load_locked(gw_jwt_verifier *v, char *why, size_t whylen)
{
    capbuf b = {0};
    jwt_keyset *ks = NULL, *old = NULL;
    char perr[200];
    int rc = v->jwks_url ? jwks_fetch_url(v, &b, why, whylen) : jwks_read_file(v, &b, why, whylen);
    if (rc == OMS_OK && keyset_parse(b.data, b.len, &ks, perr, sizeof(perr)) != OMS_OK) {
        refuse(why, whylen, "%s: %s", v->source, perr);
        rc = OMS_UNAVAILABLE;
    }
    oms_mutex_lock(&v->mu);
    if (rc == OMS_OK) {
        old = v->keys;
        v->keys = ks;
        v->generation++;
        v->stats.loads++;
    } else {
        v->stats.load_failures++;
    }
    oms_mutex_unlock(&v->mu);
    keyset_release(old);
    free(b.data);
    return rc;
}

/* A load, unless one finished since the caller saw generation `seen` (then that one's set
 * is as fresh as ours would be). */
static int jwks_load(gw_jwt_verifier *v, const uint64_t *seen, char *why, size_t whylen)
{
    oms_mutex_lock(&v->load_mu);
    int rc = OMS_OK;
    oms_mutex_lock(&v->mu);
    int fresh = seen && v->generation != *seen;
    oms_mutex_unlock(&v->mu);
    if (!fresh)
        rc = jwks_load_locked(v, why, whylen);
    oms_mutex_unlock(&v->load_mu);
    return rc;
}

/* Claims the unknown-kid load slot at now_s: 1 when no such load happened in the last
 * GW_JWT_REFRESH_GAP_S (a clock that went backwards counts as elapsed). */
static int on_demand_claim(gw_jwt_verifier *v, int64_t now_s)
{
    oms_mutex_lock(&v->mu);
    int ok = !v->on_demand_used || now_s < v->on_demand_s ||
             now_s - v->on_demand_s >= GW_JWT_REFRESH_GAP_S;
    if (ok) {
        v->on_demand_used = 1;
        v->on_demand_s = now_s;
        v->stats.unknown_kid_loads++;
    } else {
        v->stats.unknown_kid_limited++;
    }
    oms_mutex_unlock(&v->mu);
    return ok;
}

static void *reload_thread(void *arg)
{
    gw_jwt_verifier *v = arg;
    oms_thread_background();
    oms_mutex_lock(&v->mu);
    while (!v->stopping) {
        struct timespec until;
        int wrc = 0;
        if (oms_deadline_after_ns(CLOCK_MONOTONIC, v->refresh_s * 1000000000LL, &until) != OMS_OK)
            break;
        while (!v->stopping && wrc != ETIMEDOUT)
            wrc = pthread_cond_timedwait(&v->wake, &v->mu, &until);
        if (v->stopping)
            break;
        oms_mutex_unlock(&v->mu);
        char why[512];
        if (jwks_load(v, NULL, why, sizeof(why)) != OMS_OK)
            oms_log_warn("customer token keys: reload failed, the previous keys stay", "reason",
                         why);
        oms_mutex_lock(&v->mu);
    }
    oms_mutex_unlock(&v->mu);
    return NULL;
}

/* ---- verification -------------------------------------------------------------------- */

typedef enum { PICK_OK, PICK_NOKEY, PICK_BAD } pick_result;

/* Verifies jws with the keys of ks that kid (NULL: any) names and that serve alg. */
static pick_result keyset_verify(const jwt_keyset *ks, cjose_jws_t *jws, jwt_alg alg,
                                 const char *kid, size_t sig_len, char *why, size_t whylen)
{
    size_t tried = 0, other_type = 0, other_len = 0, want_len = 0;
    char shown[JWT_SHOW_MAX + 4] = "";
    if (kid)
        show(kid, strlen(kid), shown);
    for (size_t i = 0; i < ks->n; i++) {
        const jwt_key *k = &ks->keys[i];
        if (kid && (!k->kid || strcmp(k->kid, kid) != 0))
            continue;
        if (k->alg != alg) {
            other_type++;
            continue;
        }
        if (k->sig_len != sig_len) {
            other_len++;
            want_len = k->sig_len;
            continue;
        }
        tried++;
        cjose_err cerr;
        if (cjose_jws_verify(jws, k->jwk, &cerr))
            return PICK_OK;
    }
    if (tried) {
        if (kid)
            refuse(why, whylen, "signature: does not verify with key %s", shown);
        else
            refuse(why, whylen, "signature: no kid, and no %s key verifies it (%zu tried)",
                   jwt_alg_name[alg], tried);
        return PICK_BAD;
    }
    if (other_len) {
        refuse(why, whylen, "signature: %zu bytes, the %s key makes %zu", sig_len,
               jwt_alg_name[alg], want_len);
        return PICK_BAD;
    }
    if (kid && other_type) {
        refuse(why, whylen, "key: key %s is not an %s key, the type %s needs", shown,
               jwt_kty_name[alg], jwt_alg_name[alg]);
        return PICK_BAD;
    }
    if (kid)
        refuse(why, whylen, "kid: no key %s in the JWKS", shown);
    else
        refuse(why, whylen, "kid: no kid, and the JWKS has no %s key", jwt_alg_name[alg]);
    return PICK_NOKEY;
}

/* The claims of a verified payload (see jwt.h). */
static int claims_check(const gw_jwt_verifier *v, const json_t *c, int64_t now_s, char *sub_out,
                        char *why, size_t whylen)
{
    char shown[JWT_SHOW_MAX + 4];
    const json_t *iss = json_object_get(c, "iss");
    if (!iss)
        return refuse(why, whylen, "iss: missing");
    if (!json_str_is(iss, v->issuer)) {
        show_json(iss, shown);
        return refuse(why, whylen, "iss: %s is not the configured issuer", shown);
    }

    const json_t *aud = json_object_get(c, "aud");
    int ours = 0;
    if (!aud)
        return refuse(why, whylen, "aud: missing");
    if (json_is_array(aud)) {
        size_t i;
        const json_t *a;
        json_array_foreach(aud, i, a)
        {
            if (!json_is_string(a))
                return refuse(why, whylen, "aud: the array holds a non-string");
            ours |= json_str_is(a, v->audience);
        }
    } else if (json_is_string(aud)) {
        ours = json_str_is(aud, v->audience);
    } else {
        return refuse(why, whylen, "aud: neither a string nor an array");
    }
    if (!ours) {
        show_json(json_is_array(aud) ? json_array_get(aud, 0) : aud, shown);
        return refuse(why, whylen, "aud: does not hold the configured audience (%s%s)", shown,
                      json_array_size(aud) > 1 ? ", ..." : "");
    }

    const json_t *exp = json_object_get(c, "exp");
    if (!exp)
        return refuse(why, whylen, "exp: missing");
    if (!json_is_number(exp))
        return refuse(why, whylen, "exp: not a number");
    if (numeric_date_cmp(exp, sat_add(now_s, -v->leeway_s)) <= 0)
        return refuse(why, whylen, "exp: expired at %.0f, now %lld (leeway %lld s)",
                      json_number_value(exp), (long long)now_s, (long long)v->leeway_s);

    const json_t *nbf = json_object_get(c, "nbf");
    if (nbf && !json_is_number(nbf))
        return refuse(why, whylen, "nbf: not a number");
    if (nbf && numeric_date_cmp(nbf, sat_add(now_s, v->leeway_s)) > 0)
        return refuse(why, whylen, "nbf: not valid before %.0f, now %lld (leeway %lld s)",
                      json_number_value(nbf), (long long)now_s, (long long)v->leeway_s);

    const json_t *sub = json_object_get(c, "sub");
    if (!sub)
        return refuse(why, whylen, "sub: missing");
    if (!json_str_plain(sub, GW_JWT_SUB_MAX) || !oms_valid_id(json_string_value(sub))) {
        show_json(sub, shown);
        return refuse(why, whylen, "sub: %s is not a customer id (1..%d of [A-Za-z0-9_.:-])", shown,
                      GW_JWT_SUB_MAX);
    }
    memcpy(sub_out, json_string_value(sub), json_string_length(sub) + 1);
    return OMS_OK;
}

/* The header's checks (jwt.h): *alg, and *kid (NULL when absent; points into hdr). */
static int header_check(const json_t *hdr, jwt_alg *alg, const char **kid, char *why, size_t whylen)
{
    char shown[JWT_SHOW_MAX + 4];
    if (!json_is_object(hdr))
        return refuse(why, whylen, "header: not a JSON object");
    const json_t *a = json_object_get(hdr, "alg");
    if (!a)
        return refuse(why, whylen, "alg: missing");
    if (json_str_is(a, "RS256")) {
        *alg = JWT_RS256;
    } else if (json_str_is(a, "ES256")) {
        *alg = JWT_ES256;
    } else {
        show_json(a, shown);
        return refuse(why, whylen, "alg: %s not allowed (RS256 or ES256 only)", shown);
    }
    const json_t *k = json_object_get(hdr, "kid");
    if (k && !json_str_plain(k, JWT_KID_MAX))
        return refuse(why, whylen, "header: kid is not a string of 1..%d bytes", JWT_KID_MAX);
    if (json_object_get(hdr, "crit"))
        return refuse(why, whylen, "header: crit is not supported");
    *kid = k ? json_string_value(k) : NULL;
    return OMS_OK;
}

int gw_jwt_verify(gw_jwt_verifier *v, const char *token, int64_t now_s, char *sub_out, char *why,
                  size_t whylen)
{
    int rc = OMS_INVALID;
    unsigned char *hbytes = NULL;
    json_t *hdr = NULL, *claims = NULL;
    cjose_jws_t *jws = NULL;
    jwt_keyset *ks = NULL;
    uint64_t seen = 0;
    jwt_alg alg = JWT_RS256;
    const char *kid = NULL;
    cjose_err cerr;
    json_error_t je;

    sub_out[0] = '\0';
    if (why && whylen > 0)
        why[0] = '\0';
    if (!token) {
        refuse(why, whylen, "format: no token");
        goto done;
    }
    size_t len = strnlen(token, GW_JWT_MAX_TOKEN + 1);
    if (len > GW_JWT_MAX_TOKEN) {
        refuse(why, whylen, "size: token over %d bytes", GW_JWT_MAX_TOKEN);
        goto done;
    }

    /* 1. Three non-empty parts of strict base64url. */
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token))) {
        refuse(why, whylen, "format: not three dot-separated parts");
        goto done;
    }
    size_t hlen = (size_t)(d1 - token), plen = (size_t)(d2 - d1 - 1);
    size_t slen = len - (size_t)(d2 + 1 - token);
    if (hlen == 0 || plen == 0 || slen == 0) {
        refuse(why, whylen, "format: an empty part (an unsigned token?)");
        goto done;
    }
    hbytes = oms_xmalloc(hlen * 3 / 4 + 1);
    long hn = b64u_decode(token, hlen, hbytes);
    long sn = b64u_decode(d2 + 1, slen, NULL);
    if (hn < 0 || b64u_decode(d1 + 1, plen, NULL) < 0 || sn < 0) {
        refuse(why, whylen, "format: the %s is not base64url",
               hn < 0   ? "header"
               : sn < 0 ? "signature"
                        : "payload");
        goto done;
    }

    /* 2. The header, strictly, and its alg before cjose sees the token. */
    hdr = json_loadb((const char *)hbytes, (size_t)hn, JSON_REJECT_DUPLICATES, &je);
    if (!hdr) {
        refuse(why, whylen, "header: not JSON (%s at byte %d)", json_fault(&je), je.position);
        goto done;
    }
    if (header_check(hdr, &alg, &kid, why, whylen) != OMS_OK)
        goto done;

    /* 3. A signature of the alg's length. */
    if (alg == JWT_ES256 && sn != 64) {
        refuse(why, whylen, "signature: ES256 signature of %ld bytes, not 64", sn);
        goto done;
    }

    jws = cjose_jws_import(token, len, &cerr);
    if (!jws) {
        refuse(why, whylen, "format: cjose cannot import it (%s)", cerr.message);
        goto done;
    }
    const char *calg = cjose_header_get(cjose_jws_get_protected(jws), "alg", &cerr);
    if (!calg || strcmp(calg, jwt_alg_name[alg]) != 0) {
        refuse(why, whylen, "alg: cjose reads another alg than the header's");
        goto done;
    }

    /* 4. The key, then the signature; an unknown kid reloads the set once. */
    ks = keyset_acquire(v, &seen);
    pick_result pr = keyset_verify(ks, jws, alg, kid, (size_t)sn, why, whylen);
    if (pr == PICK_NOKEY) {
        char lwhy[400];
        if (!on_demand_claim(v, now_s)) {
            size_t used = why ? strnlen(why, whylen) : 0;
            if (why && used + 1 < whylen)
                snprintf(why + used, whylen - used, " (reload skipped: one within %d s)",
                         GW_JWT_REFRESH_GAP_S);
        } else if (jwks_load(v, &seen, lwhy, sizeof(lwhy)) != OMS_OK) {
            refuse(why, whylen, "jwks: unknown key and the reload failed: %s", lwhy);
        } else {
            keyset_release(ks);
            ks = keyset_acquire(v, &seen);
            pr = keyset_verify(ks, jws, alg, kid, (size_t)sn, why, whylen);
        }
    }
    if (pr != PICK_OK)
        goto done;

    /* 5. The verified payload's claims. */
    uint8_t *pt = NULL;
    size_t ptlen = 0;
    if (!cjose_jws_get_plaintext(jws, &pt, &ptlen, &cerr)) {
        refuse(why, whylen, "payload: unreadable (%s)", cerr.message);
        goto done;
    }
    claims = json_loadb((const char *)pt, ptlen, JSON_REJECT_DUPLICATES, &je);
    if (!claims) {
        refuse(why, whylen, "payload: not JSON (%s at byte %d)", json_fault(&je), je.position);
        goto done;
    }
    if (!json_is_object(claims)) {
        refuse(why, whylen, "payload: not a JSON object");
        goto done;
    }
    rc = claims_check(v, claims, now_s, sub_out, why, whylen);
done:
    if (rc != OMS_OK)
        sub_out[0] = '\0';
    keyset_release(ks);
    json_decref(claims);
    json_decref(hdr);
    cjose_jws_release(jws);
    free(hbytes);
    return rc;
}

const char *gw_jwt_bearer(const char *authorization)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    const char *t = authorization + 7;
    while (*t == ' ')
        t++;
    if (*t == '\0' || strpbrk(t, " \t"))
        return NULL;
    return t;
}

/* ---- life cycle ---------------------------------------------------------------------- */

static int has_text(const char *s)
{
    return s && s[0] != '\0';
}

int gw_jwt_verifier_new(gw_jwt_verifier **out, const gw_jwt_config *cfg, oms_error *err)
{
    int rc = OMS_INVALID;
    gw_jwt_verifier *v = NULL;
    int mu = 0, load_mu = 0, wake = 0;
    char why[512];

    *out = NULL;
    if (!has_text(cfg->issuer)) {
        oms_error_set(err, OMS_INVALID, "AUTH_ISSUER is required");
        goto fail;
    }
    if (!has_text(cfg->audience)) {
        oms_error_set(err, OMS_INVALID, "AUTH_AUDIENCE is required");
        goto fail;
    }
    if (has_text(cfg->jwks_file) == has_text(cfg->jwks_url)) {
        oms_error_set(err, OMS_INVALID, "set exactly one of AUTH_JWKS_FILE and AUTH_JWKS_URL");
        goto fail;
    }
    if (has_text(cfg->jwks_url) && strncasecmp(cfg->jwks_url, "https://", 8) != 0 &&
        strncasecmp(cfg->jwks_url, "http://", 7) != 0) {
        oms_error_set(err, OMS_INVALID, "AUTH_JWKS_URL must be an http:// or https:// URL");
        goto fail;
    }
    if (cfg->refresh_s < 0 || cfg->refresh_s > 86400) {
        oms_error_set(err, OMS_INVALID, "the JWKS refresh period must be 0..86400 s, not %lld",
                      cfg->refresh_s);
        goto fail;
    }
    if (cfg->leeway_s < 0 || cfg->leeway_s > 600) {
        oms_error_set(err, OMS_INVALID, "the token clock leeway must be 0..600 s, not %lld",
                      cfg->leeway_s);
        goto fail;
    }
    if (cfg->fetch_timeout_ms < 0 || cfg->fetch_timeout_ms > 60000) {
        oms_error_set(err, OMS_INVALID, "the JWKS fetch timeout must be 0..60000 ms, not %lld",
                      cfg->fetch_timeout_ms);
        goto fail;
    }

    v = oms_xcalloc(1, sizeof(*v));
    v->issuer = oms_strdup(cfg->issuer);
    v->audience = oms_strdup(cfg->audience);
    if (has_text(cfg->jwks_url)) {
        v->jwks_url = oms_strdup(cfg->jwks_url);
        (void)oms_url_redact(cfg->jwks_url, v->source, sizeof(v->source));
    } else {
        v->jwks_file = oms_strdup(cfg->jwks_file);
        snprintf(v->source, sizeof(v->source), "%s", cfg->jwks_file);
    }
    v->refresh_s = cfg->refresh_s;
    v->leeway_s = cfg->leeway_s;
    v->timeout_ms = cfg->fetch_timeout_ms ? (long)cfg->fetch_timeout_ms : JWT_FETCH_TIMEOUT_MS;
    v->keys = keyset_new();

    rc = OMS_ERR;
    if (pthread_mutex_init(&v->mu, NULL) != 0) {
        oms_error_set(err, OMS_ERR, "customer tokens: cannot create a mutex");
        goto fail;
    }
    mu = 1;
    if (pthread_mutex_init(&v->load_mu, NULL) != 0) {
        oms_error_set(err, OMS_ERR, "customer tokens: cannot create a mutex");
        goto fail;
    }
    load_mu = 1;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) {
        oms_error_set(err, OMS_ERR, "customer tokens: cannot create a condition variable");
        goto fail;
    }
    int crc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (crc == 0)
        crc = pthread_cond_init(&v->wake, &ca);
    (void)pthread_condattr_destroy(&ca); /* fails only for an invalid attr */
    if (crc != 0) {
        oms_error_set(err, OMS_ERR, "customer tokens: cannot create a condition variable");
        goto fail;
    }
    wake = 1;

    if (jwks_load(v, NULL, why, sizeof(why)) != OMS_OK) {
        if (v->jwks_file) {
            rc = oms_error_set(err, OMS_INVALID, "AUTH_JWKS_FILE: %s", why);
            goto fail;
        }
        oms_log_warn("customer token keys: first load failed, every token is refused until "
                     "one succeeds",
                     "reason", why);
    }
    if (v->refresh_s > 0) {
        if (pthread_create(&v->thread, NULL, reload_thread, v) != 0) {
            oms_error_set(err, OMS_ERR, "customer tokens: cannot start the reload thread");
            goto fail;
        }
        v->thread_started = 1;
    }
    *out = v;
    return OMS_OK;

fail:
    if (v) {
        if (wake)
            pthread_cond_destroy(&v->wake);
        if (load_mu)
            pthread_mutex_destroy(&v->load_mu);
        if (mu)
            pthread_mutex_destroy(&v->mu);
        keyset_release(v->keys);
        free(v->issuer);
        free(v->audience);
        free(v->jwks_file);
        free(v->jwks_url);
        free(v);
    }
    return rc;
}

void gw_jwt_verifier_free(gw_jwt_verifier *v)
{
    if (!v)
        return;
    if (v->thread_started) {
        oms_mutex_lock(&v->mu);
        v->stopping = 1;
        (void)pthread_cond_signal(&v->wake); /* cannot fail on an initialised cond */
        oms_mutex_unlock(&v->mu);
        (void)pthread_join(v->thread, NULL);
    }
    (void)pthread_cond_destroy(&v->wake);
    (void)pthread_mutex_destroy(&v->load_mu);
    (void)pthread_mutex_destroy(&v->mu);
    keyset_release(v->keys);
    free(v->issuer);
    free(v->audience);
    free(v->jwks_file);
    free(v->jwks_url);
    free(v);
}

int gw_jwt_refresh(gw_jwt_verifier *v, oms_error *err)
{
    char why[512];
    if (jwks_load(v, NULL, why, sizeof(why)) != OMS_OK)
        return oms_error_set(err, OMS_UNAVAILABLE, "customer token keys: %s", why);
    return OMS_OK;
}

void gw_jwt_stats_get(gw_jwt_verifier *v, gw_jwt_stats *out)
{
    oms_mutex_lock(&v->mu);
    *out = v->stats;
    out->keys = v->keys->n;
    oms_mutex_unlock(&v->mu);
}
