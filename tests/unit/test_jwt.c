/* Customer tokens (gateway/jwt.c). Every key is made at test time (cjose, OpenSSL); no
 * private key is committed. Tokens are minted here with cjose, crafted by hand for the
 * shapes no signer makes, and minted by python3-jwt as an independent signer. The JWKS
 * comes from a file, and from a loopback HTTP server that counts its hits for the
 * unknown-kid reload and its rate limit.
 *
 * The table: one row per token, the reason prefix the verifier must give (NULL:
 * accepted), so a check that stops working fails its own row, not just "refused". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjose/cjose.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdatomic.h>

#include "jwt.h"
#include "oms/http.h"
#include "oms/status.h"

#define ISS "https://id.example.test/realms/shop"
#define AUD "oms-shop"
#define NOW 1700000000LL
#define LEEWAY 60
#define SUB "cust_42"

/* ---- keys (made once for the whole file) --------------------------------------------- */

static struct {
    cjose_jwk_t *rsa1, *rsa2, *rsa3; /* the issuer's RSA keys (rsa2, rsa3: rotation) */
    cjose_jwk_t *ec1;                /* the issuer's P-256 key */
    cjose_jwk_t *rsa_evil, *ec_evil; /* an attacker's */
    cjose_jwk_t *rsa_small;          /* 1024 bits: in the JWKS, must be skipped */
    cjose_jwk_t *ec384;              /* P-384: in the JWKS, must be skipped */
    char *rsa1_pem;                  /* rsa1's public key as SubjectPublicKeyInfo PEM */
    char dir[64];                    /* temp dir for JWKS files and the python signer */
} K;

static cjose_jwk_t *rsa_key(size_t bits)
{
    static const uint8_t e[] = {0x01, 0x00, 0x01};
    cjose_err cerr;
    cjose_jwk_t *k = cjose_jwk_create_RSA_random(bits, e, sizeof(e), &cerr);
    assert_non_null(k);
    return k;
}

static cjose_jwk_t *ec_key(cjose_jwk_ec_curve crv)
{
    cjose_err cerr;
    cjose_jwk_t *k = cjose_jwk_create_EC_random(crv, &cerr);
    assert_non_null(k);
    return k;
}

static char *b64u(const void *p, size_t n)
{
    char *out = NULL;
    size_t olen = 0;
    cjose_err cerr;
    assert_true(cjose_base64url_encode(p, n, &out, &olen, &cerr));
    return out;
}

static uint8_t *unb64u(const char *s, size_t *n)
{
    uint8_t *out = NULL;
    cjose_err cerr;
    assert_true(cjose_base64url_decode(s, strlen(s), &out, n, &cerr));
    return out;
}

/* The key's public JWK as a JSON object (the caller's). */
static json_t *pub_jwk(const cjose_jwk_t *k)
{
    cjose_err cerr;
    char *text = cjose_jwk_to_json(k, false, &cerr);
    assert_non_null(text);
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    free(text);
    return j;
}

/* rsa1's public key as PEM, from its JWK's n and e (OpenSSL 3 fromdata). */
static char *rsa_pub_pem(const cjose_jwk_t *k)
{
    json_t *j = pub_jwk(k);
    size_t nlen, elen;
    uint8_t *n = unb64u(json_string_value(json_object_get(j, "n")), &nlen);
    uint8_t *e = unb64u(json_string_value(json_object_get(j, "e")), &elen);
    BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL), *be = BN_bin2bn(e, (int)elen, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    assert_true(bn && be && bld);
    assert_int_equal(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn), 1);
    assert_int_equal(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be), 1);
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    EVP_PKEY *pkey = NULL;
    assert_true(params && ctx);
    assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
    assert_int_equal(EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params), 1);
    BIO *bio = BIO_new(BIO_s_mem());
    assert_non_null(bio);
    assert_int_equal(PEM_write_bio_PUBKEY(bio, pkey), 1);
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    assert_true(len > 0);
    /* The BIO's bytes are not NUL-terminated: copy exactly len (strndup may read on,
     * and does under ASan's strict_string_checks). */
    char *pem = malloc((size_t)len + 1);
    assert_non_null(pem);
    memcpy(pem, data, (size_t)len);
    pem[len] = '\0';
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    json_decref(j);
    return pem;
}

/* ---- minting ---------------------------------------------------------------------------- */

/* Signs payload (len bytes) under hdr (a JSON object, stolen) with key. Heap string. */
static char *mint_hdr(const cjose_jwk_t *key, json_t *hdr, const char *payload, size_t len)
{
    cjose_err cerr;
    cjose_jws_t *jws =
        cjose_jws_sign(key, (cjose_header_t *)hdr, (const uint8_t *)payload, len, &cerr);
    if (!jws)
        fail_msg("cjose_jws_sign: %s", cerr.message);
    const char *ser = NULL;
    assert_true(cjose_jws_export(jws, &ser, &cerr));
    char *tok = strdup(ser);
    assert_non_null(tok);
    cjose_jws_release(jws);
    json_decref(hdr);
    return tok;
}

static json_t *header(const char *alg, const char *kid)
{
    json_t *h = json_pack("{s:s, s:s}", "alg", alg, "typ", "JWT");
    assert_non_null(h);
    if (kid)
        assert_int_equal(json_object_set_new(h, "kid", json_string(kid)), 0);
    return h;
}

/* A token of claims (stolen) signed by key with alg, kid (NULL: none). */
static char *mint(const cjose_jwk_t *key, const char *alg, const char *kid, json_t *claims)
{
    char *text = json_dumps(claims, JSON_COMPACT);
    assert_non_null(text);
    char *tok = mint_hdr(key, header(alg, kid), text, strlen(text));
    free(text);
    json_decref(claims);
    return tok;
}

/* The claims of a good token: each row changes one thing. */
static json_t *claims(void)
{
    json_t *c =
        json_pack("{s:s, s:s, s:s, s:I, s:I, s:I}", "iss", ISS, "aud", AUD, "sub", SUB, "exp",
                  (json_int_t)(NOW + 300), "iat", (json_int_t)NOW, "nbf", (json_int_t)(NOW - 5));
    assert_non_null(c);
    return c;
}

static json_t *with(json_t *c, const char *name, json_t *value)
{
    assert_int_equal(json_object_set_new(c, name, value), 0);
    return c;
}

static json_t *without(json_t *c, const char *name)
{
    assert_int_equal(json_object_del(c, name), 0);
    return c;
}

/* b64u(header).b64u(payload).sig, for what no signer makes. */
static char *craft(const char *hdr, const char *payload, const char *sig)
{
    char *h = b64u(hdr, strlen(hdr)), *p = b64u(payload, strlen(payload));
    size_t n = strlen(h) + strlen(p) + strlen(sig) + 3;
    char *tok = malloc(n);
    assert_non_null(tok);
    snprintf(tok, n, "%s.%s.%s", h, p, sig);
    free(h);
    free(p);
    return tok;
}

/* b64u(header).payload_b64.sig. */
static char *craft_b64(const char *hdr, const char *payload_b64, const char *sig)
{
    char *h = b64u(hdr, strlen(hdr));
    size_t n = strlen(h) + strlen(payload_b64) + strlen(sig) + 3;
    char *tok = malloc(n);
    assert_non_null(tok);
    snprintf(tok, n, "%s.%s.%s", h, payload_b64, sig);
    free(h);
    return tok;
}

static char *good_payload_b64(void)
{
    json_t *c = claims();
    char *text = json_dumps(c, JSON_COMPACT);
    char *p = b64u(text, strlen(text));
    free(text);
    json_decref(c);
    return p;
}

/* tok with its signature replaced by the first n bytes of its own (n may be 0..len). */
static char *with_sig_bytes(char *tok, size_t keep)
{
    char *dot = strrchr(tok, '.');
    size_t slen;
    uint8_t *sig = unb64u(dot + 1, &slen);
    assert_true(keep <= slen);
    char *s = b64u(sig, keep);
    size_t n = (size_t)(dot - tok) + strlen(s) + 2;
    char *out = malloc(n);
    assert_non_null(out);
    snprintf(out, n, "%.*s.%s", (int)(dot - tok), tok, s);
    free(s);
    free(sig);
    free(tok);
    return out;
}

/* tok with its signature replaced by n zero bytes. */
static char *with_zero_sig(char *tok, size_t n)
{
    uint8_t zero[64] = {0};
    assert_true(n <= sizeof(zero));
    char *dot = strrchr(tok, '.');
    char *s = b64u(zero, n);
    size_t len = (size_t)(dot - tok) + strlen(s) + 2;
    char *out = malloc(len);
    assert_non_null(out);
    snprintf(out, len, "%.*s.%s", (int)(dot - tok), tok, s);
    free(s);
    free(tok);
    return out;
}

/* tok with the char at offset `at` of part `part` (0..2) changed to another
 * base64url char that keeps the text canonical (a middle char: all 6 bits used). */
static char *flip(char *tok, int part, size_t at)
{
    char *p = tok;
    for (int i = 0; i < part; i++)
        p = strchr(p, '.') + 1;
    p[at] = p[at] == 'A' ? 'B' : 'A';
    return tok;
}

/* ---- JWKS documents ------------------------------------------------------------------ */

/* A public JWK object with kid and extra members ("use", "alg", ...; NULL-terminated
 * name/value string pairs). */
static json_t *jwk_entry(const cjose_jwk_t *k, const char *kid, ...)
{
    json_t *j = pub_jwk(k);
    if (kid)
        assert_int_equal(json_object_set_new(j, "kid", json_string(kid)), 0);
    va_list ap;
    va_start(ap, kid);
    const char *name;
    while ((name = va_arg(ap, const char *)) != NULL)
        assert_int_equal(json_object_set_new(j, name, json_string(va_arg(ap, const char *))), 0);
    va_end(ap);
    return j;
}

/* {"keys":[entries...]} as text (heap); the entries (NULL-terminated) are stolen. */
static char *jwks(json_t *first, ...)
{
    json_t *keys = json_array();
    va_list ap;
    va_start(ap, first);
    for (json_t *e = first; e; e = va_arg(ap, json_t *))
        assert_int_equal(json_array_append_new(keys, e), 0);
    va_end(ap);
    json_t *doc = json_pack("{s:o}", "keys", keys);
    char *text = json_dumps(doc, JSON_COMPACT);
    assert_non_null(text);
    json_decref(doc);
    return text;
}

/* The file JWKS of the table: rsa1 and ec1, plus entries that must all be skipped. */
static char *table_jwks(void)
{
    char *pem_b64 = b64u(K.rsa1_pem, strlen(K.rsa1_pem));
    json_t *oct = json_pack("{s:s, s:s, s:s}", "kty", "oct", "kid", "hmac", "k", pem_b64);
    free(pem_b64);
    json_t *with_d;
    {
        cjose_err cerr;
        char *priv = cjose_jwk_to_json(K.rsa2, true, &cerr);
        assert_non_null(priv);
        with_d = json_loads(priv, 0, NULL);
        free(priv);
        assert_int_equal(json_object_set_new(with_d, "kid", json_string("rsa2-with-d")), 0);
    }
    return jwks(jwk_entry(K.rsa1, "rsa1", "use", "sig", "alg", "RS256", NULL),
                jwk_entry(K.ec1, "ec1", "use", "sig", NULL), oct,
                jwk_entry(K.rsa_small, "small", NULL), jwk_entry(K.ec384, "p384", NULL),
                jwk_entry(K.rsa2, "enc", "use", "enc", NULL),
                jwk_entry(K.rsa3, "rs512", "alg", "RS512", NULL), jwk_entry(K.rsa3, "opsign", NULL),
                json_string("not a key"), json_pack("{s:s}", "kty", "RSA"), with_d, NULL);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static gw_jwt_verifier *file_verifier(const char *path)
{
    gw_jwt_verifier *v = NULL;
    oms_error err = {0};
    gw_jwt_config cfg = {.issuer = ISS, .audience = AUD, .jwks_file = path, .leeway_s = LEEWAY};
    if (gw_jwt_verifier_new(&v, &cfg, &err) != OMS_OK)
        fail_msg("verifier: %s", err.msg);
    return v;
}

/* ---- the table ---------------------------------------------------------------------------- */

typedef struct row {
    const char *name;
    char *token;        /* heap */
    const char *expect; /* prefix of why; NULL: accepted */
    const char *sub;    /* the sub an accepted row yields (NULL: SUB) */
} row;

#define MAX_ROWS 96

static size_t nrows;
static row rows[MAX_ROWS];

static void add(const char *name, char *token, const char *expect)
{
    assert_true(nrows < MAX_ROWS);
    rows[nrows++] = (row){name, token, expect, NULL};
}

static void add_sub(const char *name, char *token, const char *sub)
{
    add(name, token, NULL);
    rows[nrows - 1].sub = sub;
}

/* A valid RS256 token padded by a claim until it is as close to `target` bytes as base64
 * allows without passing it. */
static char *padded_to(size_t target)
{
    long pad = 1000;
    for (int round = 0; round < 20; round++) {
        char *filler = malloc((size_t)pad + 1);
        assert_non_null(filler);
        memset(filler, 'x', (size_t)pad);
        filler[pad] = '\0';
        char *tok = mint(K.rsa1, "RS256", "rsa1", with(claims(), "pad", json_string(filler)));
        free(filler);
        long len = (long)strlen(tok);
        if (len <= (long)target && (long)target - len < 4)
            return tok;
        free(tok);
        long delta = ((long)target - len) * 3 / 4;
        pad += delta ? delta : len > (long)target ? -1 : 1;
    }
    fail_msg("could not pad a token to %zu bytes", target);
    return NULL;
}

static void build_rows(void)
{
    char sixty_four[65], sixty_five[66];
    memset(sixty_four, 'a', 64);
    sixty_four[64] = '\0';
    memset(sixty_five, 'b', 65);
    sixty_five[65] = '\0';
    char *pay = good_payload_b64();
    char *tok;

    /* Accepted. */
    add("RS256 valid", mint(K.rsa1, "RS256", "rsa1", claims()), NULL);
    add("ES256 valid", mint(K.ec1, "ES256", "ec1", claims()), NULL);
    add("RS256 without kid (every RSA key tried)", mint(K.rsa1, "RS256", NULL, claims()), NULL);
    add("ES256 without kid", mint(K.ec1, "ES256", NULL, claims()), NULL);
    add("exp 59 s ago (within leeway)",
        mint(K.rsa1, "RS256", "rsa1", with(claims(), "exp", json_integer(NOW - 59))), NULL);
    add("nbf in 59 s (within leeway)",
        mint(K.rsa1, "RS256", "rsa1", with(claims(), "nbf", json_integer(NOW + 59))), NULL);
    add("no nbf", mint(K.ec1, "ES256", "ec1", without(claims(), "nbf")), NULL);
    add("exp as a real",
        mint(K.rsa1, "RS256", "rsa1", with(claims(), "exp", json_real(NOW + 300.5))), NULL);
    add("aud array holding ours",
        mint(K.rsa1, "RS256", "rsa1", with(claims(), "aud", json_pack("[s,s]", "other", AUD))),
        NULL);
    add_sub("sub of 64 chars",
            mint(K.rsa1, "RS256", "rsa1", with(claims(), "sub", json_string(sixty_four))),
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    add_sub("sub with every allowed kind of char",
            mint(K.ec1, "ES256", "ec1", with(claims(), "sub", json_string("Az09_.:-x"))),
            "Az09_.:-x");
    add("kid of a key whose JWKS entry carried private members",
        mint(K.rsa2, "RS256", "rsa2-with-d", claims()), NULL);
    add("key_ops-less RSA key without use/alg", mint(K.rsa3, "RS256", "opsign", claims()), NULL);
    add("token of just under 8192 bytes", padded_to(GW_JWT_MAX_TOKEN), NULL);

    /* alg: none, HMAC (the public-key-as-secret attack), other algs. */
    add("alg none, empty signature", craft_b64("{\"alg\":\"none\"}", pay, ""),
        "format: an empty part");
    add("alg none with a signature part", craft_b64("{\"alg\":\"none\"}", pay, "AAAA"),
        "alg: none not allowed");
    add("alg None", craft_b64("{\"alg\":\"None\",\"kid\":\"rsa1\"}", pay, "AAAA"),
        "alg: None not allowed");
    {
        cjose_err cerr;
        cjose_jwk_t *pem_key =
            cjose_jwk_create_oct_spec((const uint8_t *)K.rsa1_pem, strlen(K.rsa1_pem), &cerr);
        assert_non_null(pem_key);
        add("HS256 keyed with the RSA public key PEM", mint(pem_key, "HS256", "rsa1", claims()),
            "alg: HS256 not allowed");
        add("HS256 keyed with the PEM, no kid", mint(pem_key, "HS256", NULL, claims()),
            "alg: HS256 not allowed");
        add("HS256 keyed with the PEM, kid of the oct JWKS entry",
            mint(pem_key, "HS256", "hmac", claims()), "alg: HS256 not allowed");
        cjose_jwk_release(pem_key);
        json_t *pub = pub_jwk(K.rsa1);
        char *jwk_text = json_dumps(pub, JSON_COMPACT);
        json_decref(pub);
        cjose_jwk_t *jwk_key =
            cjose_jwk_create_oct_spec((const uint8_t *)jwk_text, strlen(jwk_text), &cerr);
        assert_non_null(jwk_key);
        add("HS256 keyed with the RSA public JWK JSON", mint(jwk_key, "HS256", "rsa1", claims()),
            "alg: HS256 not allowed");
        cjose_jwk_release(jwk_key);
        free(jwk_text);
    }
    add("RS512", mint(K.rsa1, "RS512", "rsa1", claims()), "alg: RS512 not allowed");
    add("PS256", mint(K.rsa1, "PS256", "rsa1", claims()), "alg: PS256 not allowed");
    add("ES384", mint(K.ec384, "ES384", "p384", claims()), "alg: ES384 not allowed");
    add("alg missing", craft("{\"kid\":\"rsa1\"}", "{}", "AAAA"), "alg: missing");
    add("alg a number", craft("{\"alg\":256}", "{}", "AAAA"), "alg: (a number) not allowed");

    /* Signatures. */
    tok = mint(K.rsa1, "RS256", "rsa1", claims());
    add("RS256 signature with one char changed", flip(tok, 2, 100),
        "signature: does not verify with key rsa1");
    tok = mint(K.ec1, "ES256", "ec1", claims());
    add("ES256 signature with one char changed", flip(tok, 2, 20),
        "signature: does not verify with key ec1");
    tok = mint(K.rsa1, "RS256", "rsa1", claims());
    add("payload changed after signing", flip(tok, 1, 10),
        "signature: does not verify with key rsa1");
    add("signed by another RSA key under kid rsa1", mint(K.rsa_evil, "RS256", "rsa1", claims()),
        "signature: does not verify with key rsa1");
    add("signed by another EC key under kid ec1", mint(K.ec_evil, "ES256", "ec1", claims()),
        "signature: does not verify with key ec1");
    add("no kid, signed by another RSA key", mint(K.rsa_evil, "RS256", NULL, claims()),
        "signature: no kid, and no RS256 key verifies it");
    add("ES256 signature truncated to 48 bytes",
        with_sig_bytes(mint(K.ec1, "ES256", "ec1", claims()), 48),
        "signature: ES256 signature of 48 bytes, not 64");
    add("ES256 signature truncated to 63 bytes",
        with_sig_bytes(mint(K.ec1, "ES256", "ec1", claims()), 63),
        "signature: ES256 signature of 63 bytes, not 64");
    add("ES256 signature of 64 zero bytes (r = s = 0)",
        with_zero_sig(mint(K.ec1, "ES256", "ec1", claims()), 64),
        "signature: does not verify with key ec1");
    add("RS256 signature truncated to 200 bytes",
        with_sig_bytes(mint(K.rsa1, "RS256", "rsa1", claims()), 200),
        "signature: 200 bytes, the RS256 key makes 256");

    /* Keys: by kid and by type. */
    add("unknown kid", mint(K.rsa1, "RS256", "nope", claims()), "kid: no key nope in the JWKS");
    add("kid of a skipped 1024-bit RSA key", mint(K.rsa_small, "RS256", "small", claims()),
        "kid: no key small");
    add("kid of a skipped use=enc key", mint(K.rsa2, "RS256", "enc", claims()), "kid: no key enc");
    add("kid of a skipped alg=RS512 key", mint(K.rsa3, "RS256", "rs512", claims()),
        "kid: no key rs512");
    add("ES256 signed by the skipped P-384 key", mint(K.ec384, "ES256", "p384", claims()),
        "signature: ES256 signature of 96 bytes");
    add("64-byte ES256 signature naming the skipped P-384 key",
        mint(K.ec1, "ES256", "p384", claims()), "kid: no key p384");
    add("header alg RS256 but the key is EC", mint(K.rsa1, "RS256", "ec1", claims()),
        "key: key ec1 is not an RSA key");
    add("header alg ES256 but the key is RSA", mint(K.ec1, "ES256", "rsa1", claims()),
        "key: key rsa1 is not an EC P-256 key");
    {
        json_t *h = header("RS256", "attacker");
        assert_int_equal(json_object_set_new(h, "jwk", pub_jwk(K.rsa_evil)), 0);
        json_t *c = claims();
        char *text = json_dumps(c, JSON_COMPACT);
        assert_non_null(text);
        json_decref(c);
        add("attacker key embedded as a jwk header", mint_hdr(K.rsa_evil, h, text, strlen(text)),
            "kid: no key attacker");
        h = header("RS256", "rsa1");
        assert_int_equal(json_object_set_new(h, "jwk", pub_jwk(K.rsa_evil)), 0);
        assert_int_equal(json_object_set_new(h, "jku", json_string("https://evil.test/jwks")), 0);
        add("embedded jwk and jku headers under kid rsa1",
            mint_hdr(K.rsa_evil, h, text, strlen(text)),
            "signature: does not verify with key rsa1");
        h = header("RS256", "rsa1");
        assert_int_equal(json_object_set_new(h, "crit", json_pack("[s]", "exp")), 0);
        assert_int_equal(json_object_set_new(h, "exp", json_integer(NOW + 300)), 0);
        add("crit header", mint_hdr(K.rsa1, h, text, strlen(text)),
            "header: crit is not supported");
        h = header("RS256", NULL);
        assert_int_equal(json_object_set_new(h, "kid", json_integer(1)), 0);
        add("kid not a string", mint_hdr(K.rsa1, h, text, strlen(text)), "header: kid");
        add("payload not JSON", mint_hdr(K.rsa1, header("RS256", "rsa1"), "hello", 5),
            "payload: not JSON");
        add("payload a JSON array (RS256)", mint_hdr(K.rsa1, header("RS256", NULL), "[1,2]", 5),
            "payload: not a JSON object");
        free(text);
        char dup[256];
        snprintf(dup, sizeof(dup),
                 "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"%s\",\"exp\":%lld,\"sub\":\"admin\"}",
                 ISS, AUD, SUB, NOW + 300);
        add("payload with a duplicate sub",
            mint_hdr(K.rsa1, header("RS256", "rsa1"), dup, strlen(dup)),
            "payload: not JSON (a duplicate member");
    }

    /* Time. */
    add("expired 61 s ago (beyond leeway)",
        mint(K.rsa1, "RS256", "rsa1", with(claims(), "exp", json_integer(NOW - 61))),
        "exp: expired");
    add("expired exactly leeway ago",
        mint(K.rsa1, "RS256", "rsa1", with(claims(), "exp", json_integer(NOW - LEEWAY))),
        "exp: expired");
    add("exp missing", mint(K.rsa1, "RS256", "rsa1", without(claims(), "exp")), "exp: missing");
    add("exp a string",
        mint(K.rsa1, "RS256", "rsa1", with(claims(), "exp", json_string("1700000300"))),
        "exp: not a number");
    add("nbf in 61 s (beyond leeway)",
        mint(K.rsa1, "RS256", "rsa1", with(claims(), "nbf", json_integer(NOW + 61))),
        "nbf: not valid before");
    add("nbf a string", mint(K.ec1, "ES256", "ec1", with(claims(), "nbf", json_string("0"))),
        "nbf: not a number");

    /* Issuer and audience. */
    add("wrong iss",
        mint(K.rsa1, "RS256", "rsa1", with(claims(), "iss", json_string("https://evil.test"))),
        "iss: https://evil.test is not");
    add("iss with a trailing slash",
        mint(K.rsa1, "RS256", "rsa1", with(claims(), "iss", json_string(ISS "/"))), "iss:");
    add("iss with a \\u0000 and more after it",
        mint(K.rsa1, "RS256", "rsa1",
             with(claims(), "iss", json_stringn(ISS "\0x", strlen(ISS) + 2))),
        "payload: not JSON (a \\u0000 at byte");
    add("iss missing", mint(K.rsa1, "RS256", "rsa1", without(claims(), "iss")), "iss: missing");
    add("aud missing", mint(K.rsa1, "RS256", "rsa1", without(claims(), "aud")), "aud: missing");
    add("aud another", mint(K.rsa1, "RS256", "rsa1", with(claims(), "aud", json_string("other"))),
        "aud: does not hold");
    add("aud array without ours",
        mint(K.rsa1, "RS256", "rsa1",
             with(claims(), "aud", json_pack("[s,s]", "other", AUD "-admin"))),
        "aud: does not hold");
    add("aud empty array", mint(K.rsa1, "RS256", "rsa1", with(claims(), "aud", json_array())),
        "aud: does not hold");
    add("aud a number", mint(K.rsa1, "RS256", "rsa1", with(claims(), "aud", json_integer(1))),
        "aud: neither");
    add("aud array with a number",
        mint(K.rsa1, "RS256", "rsa1", with(claims(), "aud", json_pack("[s,i]", AUD, 1))),
        "aud: the array holds a non-string");

    /* Subject. */
    add("sub missing", mint(K.rsa1, "RS256", "rsa1", without(claims(), "sub")), "sub: missing");
    add("sub with a space",
        mint(K.rsa1, "RS256", "rsa1", with(claims(), "sub", json_string("cust 42"))), "sub:");
    add("sub with a slash",
        mint(K.rsa1, "RS256", "rsa1", with(claims(), "sub", json_string("../cust"))), "sub:");
    add("sub of 65 chars",
        mint(K.rsa1, "RS256", "rsa1", with(claims(), "sub", json_string(sixty_five))), "sub:");
    add("sub empty", mint(K.rsa1, "RS256", "rsa1", with(claims(), "sub", json_string(""))), "sub:");
    add("sub a number", mint(K.rsa1, "RS256", "rsa1", with(claims(), "sub", json_integer(42))),
        "sub: (a number)");
    add("sub with a \\u0000 inside",
        mint(K.rsa1, "RS256", "rsa1", with(claims(), "sub", json_stringn("cust\0admin", 10))),
        "payload: not JSON (a \\u0000 at byte");

    /* Size and shape. */
    {
        size_t n = 9 * 1024;
        tok = malloc(n + 1);
        assert_non_null(tok);
        memset(tok, 'A', n);
        tok[100] = tok[200] = '.';
        tok[n] = '\0';
        add("9 KiB token", tok, "size: token over 8192 bytes");
    }
    add("token just over 8192 bytes", padded_to(GW_JWT_MAX_TOKEN + 4), "size:");
    add("empty token", strdup(""), "format: not three");
    add("two parts", strdup("eyJhbGciOiJSUzI1NiJ9.e30"), "format: not three");
    add("four parts", strdup("eyJhbGciOiJSUzI1NiJ9.e30.AAAA.AAAA"), "format: not three");
    add("only dots", strdup(".."), "format: an empty part");
    add("garbage base64 in the header", strdup("!!!!.e30.AAAA"),
        "format: the header is not base64url");
    add("padding in the header", strdup("eyJhbGciOiJSUzI1NiJ9==.e30.AAAA"),
        "format: the header is not base64url");
    add("a 4n+1 length header", strdup("eyJhbGciOiJSUzI1NiJ9A.e30.AAAA"),
        "format: the header is not base64url");
    add("standard base64 (+/) in the payload", strdup("eyJhbGciOiJSUzI1NiJ9.e3+/.AAAA"),
        "format: the payload is not base64url");
    add("non-canonical last char in the signature", strdup("eyJhbGciOiJSUzI1NiJ9.e30.AB"),
        "format: the signature is not base64url");
    tok = mint(K.rsa1, "RS256", "rsa1", claims());
    {
        size_t n = strlen(tok);
        tok = realloc(tok, n + 2);
        assert_non_null(tok);
        memcpy(tok + n, "\n", 2);
        add("valid token with a trailing newline", tok, "format: the signature is not base64url");
    }
    add("header not JSON", craft("{\"alg\":\"RS256\"", "{}", "AAAA"), "header: not JSON");
    add("header a JSON array", craft("[\"RS256\"]", "{}", "AAAA"), "header: not a JSON object");
    add("header with a duplicate alg", craft("{\"alg\":\"RS256\",\"alg\":\"none\"}", "{}", "AAAA"),
        "header: not JSON (a duplicate member");
    free(pay);
}

static void test_table(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof(path), "%s/table.jwks", K.dir);
    char *doc = table_jwks();
    write_text(path, doc);
    free(doc);
    gw_jwt_verifier *v = file_verifier(path);
    gw_jwt_stats st;
    gw_jwt_stats_get(v, &st);
    assert_int_equal(st.keys, 4); /* rsa1, ec1, opsign, rsa2-with-d; 7 entries skipped */

    build_rows();
    int failures = 0;
    for (size_t i = 0; i < nrows; i++) {
        char sub[GW_JWT_SUB_MAX + 1] = "junk", why[512] = "junk";
        int rc = gw_jwt_verify(v, rows[i].token, NOW, sub, why, sizeof(why));
        const char *want_sub = rows[i].sub ? rows[i].sub : SUB;
        int ok;
        if (!rows[i].expect)
            ok = rc == OMS_OK && strcmp(sub, want_sub) == 0 && why[0] == '\0';
        else
            ok = rc == OMS_INVALID && sub[0] == '\0' &&
                 strncmp(why, rows[i].expect, strlen(rows[i].expect)) == 0;
        if (!ok) {
            failures++;
            print_error("row %zu \"%s\": rc %d sub \"%s\" why \"%s\"; want %s%s\n", i, rows[i].name,
                        rc, sub, why, rows[i].expect ? "refusal " : "accepted",
                        rows[i].expect ? rows[i].expect : "");
        }
    }
    /* A NULL token, and a why buffer too small or absent, are handled. */
    char sub[GW_JWT_SUB_MAX + 1], tiny[8];
    assert_int_equal(gw_jwt_verify(v, NULL, NOW, sub, tiny, sizeof(tiny)), OMS_INVALID);
    assert_string_equal(tiny, "format:");
    assert_int_equal(gw_jwt_verify(v, rows[nrows - 1].token, NOW, sub, NULL, 0), OMS_INVALID);
    assert_int_equal(gw_jwt_verify(v, rows[0].token, NOW, sub, NULL, 0), OMS_OK);
    /* The same good token, later: expired beyond leeway. */
    char why[256];
    assert_int_equal(gw_jwt_verify(v, rows[0].token, NOW + 300 + LEEWAY, sub, why, sizeof(why)),
                     OMS_INVALID);
    assert_memory_equal(why, "exp: expired", 12);
    assert_int_equal(gw_jwt_verify(v, rows[0].token, NOW + 300 + LEEWAY - 1, sub, why, sizeof(why)),
                     OMS_OK);

    for (size_t i = 0; i < nrows; i++)
        free(rows[i].token);
    nrows = 0;
    gw_jwt_verifier_free(v);
    unlink(path);
    if (failures)
        fail_msg("%d of the table's rows failed", failures);
}

/* Why text from a token never carries raw bytes of it into the log. */
static void test_why_is_safe_to_log(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof(path), "%s/safe.jwks", K.dir);
    char *doc = jwks(jwk_entry(K.rsa1, "rsa1", NULL), NULL);
    write_text(path, doc);
    free(doc);
    gw_jwt_verifier *v = file_verifier(path);
    char long_kid[200];
    memset(long_kid, 'k', sizeof(long_kid));
    memcpy(long_kid + 20, "\n\"}<script>", 11);
    long_kid[sizeof(long_kid) - 1] = '\0';
    char *tok = mint(K.rsa1, "RS256", long_kid, claims());
    char sub[GW_JWT_SUB_MAX + 1], why[512];
    assert_int_equal(gw_jwt_verify(v, tok, NOW, sub, why, sizeof(why)), OMS_INVALID);
    assert_memory_equal(why, "kid: no key kkkkkkkkkkkkkkkkkkkk????script?kkk", 46);
    assert_null(strpbrk(why, "\n\"<>{}"));
    assert_non_null(strstr(why, "..."));
    free(tok);
    tok = mint(K.rsa1, "RS256", "rsa1", with(claims(), "sub", json_string("a\nb\"c")));
    assert_int_equal(gw_jwt_verify(v, tok, NOW, sub, why, sizeof(why)), OMS_INVALID);
    assert_string_equal(why, "sub: a?b?c is not a customer id (1..64 of [A-Za-z0-9_.:-])");
    free(tok);
    gw_jwt_verifier_free(v);
    unlink(path);
}

/* python3-jwt (PyJWT over pyca/cryptography) signs; we verify. Skipped without it. */
static void test_independent_signer(void **state)
{
    (void)state;
    if (system("/usr/bin/python3 -c 'import jwt, cryptography' >/dev/null 2>&1") != 0)
        skip();
    char path[160], script[160], cmd[512];
    cjose_err cerr;
    const struct {
        const cjose_jwk_t *k;
        const char *file;
    } priv[] = {{K.rsa1, "rsa1.priv.json"}, {K.ec1, "ec1.priv.json"}};
    for (size_t i = 0; i < 2; i++) {
        char *text = cjose_jwk_to_json(priv[i].k, true, &cerr);
        assert_non_null(text);
        snprintf(path, sizeof(path), "%s/%s", K.dir, priv[i].file);
        write_text(path, text);
        free(text);
    }
    snprintf(script, sizeof(script), "%s/mint.py", K.dir);
    write_text(script,
               "import sys, jwt\n"
               "from jwt.algorithms import RSAAlgorithm, ECAlgorithm\n"
               "d, iss, aud, now = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])\n"
               "rsa = RSAAlgorithm.from_jwk(open(d + '/rsa1.priv.json').read())\n"
               "ec = ECAlgorithm.from_jwk(open(d + '/ec1.priv.json').read())\n"
               "c = {'iss': iss, 'aud': ['x', aud], 'sub': 'py-cust:7', 'exp': now + 60,\n"
               "     'nbf': now - 1, 'iat': now}\n"
               "print(jwt.encode(c, rsa, algorithm='RS256', headers={'kid': 'rsa1'}))\n"
               "print(jwt.encode(c, ec, algorithm='ES256', headers={'kid': 'ec1'}))\n"
               "print(jwt.encode(c, ec, algorithm='ES256'))\n"
               "print(jwt.encode(c, 'secret', algorithm='HS256', headers={'kid': 'rsa1'}))\n");
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s '%s' '%s' %lld", script, K.dir, ISS, AUD,
             NOW);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[4][2048];
    for (int i = 0; i < 4; i++) {
        assert_non_null(fgets(line[i], sizeof(line[i]), p));
        line[i][strcspn(line[i], "\n")] = '\0';
    }
    assert_int_equal(pclose(p), 0);

    snprintf(path, sizeof(path), "%s/py.jwks", K.dir);
    char *doc = jwks(jwk_entry(K.rsa1, "rsa1", NULL), jwk_entry(K.ec1, "ec1", NULL), NULL);
    write_text(path, doc);
    free(doc);
    gw_jwt_verifier *v = file_verifier(path);
    char sub[GW_JWT_SUB_MAX + 1], why[512];
    for (int i = 0; i < 3; i++) {
        if (gw_jwt_verify(v, line[i], NOW, sub, why, sizeof(why)) != OMS_OK)
            fail_msg("python token %d refused: %s", i, why);
        assert_string_equal(sub, "py-cust:7");
    }
    assert_int_equal(gw_jwt_verify(v, line[3], NOW, sub, why, sizeof(why)), OMS_INVALID);
    assert_string_equal(why, "alg: HS256 not allowed (RS256 or ES256 only)");
    gw_jwt_verifier_free(v);
    unlink(path);
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/%s", K.dir, priv[i].file);
        unlink(path);
    }
    unlink(script);
}

/* ---- configuration ------------------------------------------------------------------------ */

static void test_config_refused(void **state)
{
    (void)state;
    char good[128], bad[128], missing[128];
    snprintf(good, sizeof(good), "%s/good.jwks", K.dir);
    snprintf(bad, sizeof(bad), "%s/bad.jwks", K.dir);
    snprintf(missing, sizeof(missing), "%s/missing.jwks", K.dir);
    char *doc = jwks(jwk_entry(K.rsa1, "rsa1", NULL), NULL);
    write_text(good, doc);
    free(doc);
    write_text(bad, "{\"keys\": [");
    const struct {
        gw_jwt_config cfg;
        int rc;
        const char *msg;
    } cases[] = {
        {{.audience = AUD, .jwks_file = good}, OMS_INVALID, "AUTH_ISSUER"},
        {{.issuer = "", .audience = AUD, .jwks_file = good}, OMS_INVALID, "AUTH_ISSUER"},
        {{.issuer = ISS, .jwks_file = good}, OMS_INVALID, "AUTH_AUDIENCE"},
        {{.issuer = ISS, .audience = AUD}, OMS_INVALID, "AUTH_JWKS_FILE and AUTH_JWKS_URL"},
        {{.issuer = ISS, .audience = AUD, .jwks_file = good, .jwks_url = "https://x.test/j"},
         OMS_INVALID,
         "AUTH_JWKS_FILE and AUTH_JWKS_URL"},
        {{.issuer = ISS, .audience = AUD, .jwks_url = "file:///etc/passwd"},
         OMS_INVALID,
         "AUTH_JWKS_URL must be"},
        {{.issuer = ISS, .audience = AUD, .jwks_file = good, .leeway_s = 601},
         OMS_INVALID,
         "leeway"},
        {{.issuer = ISS, .audience = AUD, .jwks_file = good, .refresh_s = -1},
         OMS_INVALID,
         "refresh"},
        {{.issuer = ISS, .audience = AUD, .jwks_file = missing}, OMS_INVALID, "AUTH_JWKS_FILE: "},
        {{.issuer = ISS, .audience = AUD, .jwks_file = bad}, OMS_INVALID, "not JSON"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gw_jwt_verifier *v = (gw_jwt_verifier *)&v;
        oms_error err = {0};
        assert_int_equal(gw_jwt_verifier_new(&v, &cases[i].cfg, &err), cases[i].rc);
        assert_null(v);
        if (!strstr(err.msg, cases[i].msg))
            fail_msg("case %zu: \"%s\" does not say \"%s\"", i, err.msg, cases[i].msg);
    }
    gw_jwt_verifier_free(NULL);
    unlink(good);
    unlink(bad);
}

static void test_bearer(void **state)
{
    (void)state;
    assert_string_equal(gw_jwt_bearer("Bearer abc.def.ghi"), "abc.def.ghi");
    assert_string_equal(gw_jwt_bearer("bearer   abc.def.ghi"), "abc.def.ghi");
    assert_null(gw_jwt_bearer(NULL));
    assert_null(gw_jwt_bearer(""));
    assert_null(gw_jwt_bearer("Bearer "));
    assert_null(gw_jwt_bearer("Bearer    "));
    assert_null(gw_jwt_bearer("Basic dXNlcjpwYXNz"));
    assert_null(gw_jwt_bearer("Bearerabc.def.ghi"));
    assert_null(gw_jwt_bearer("Bearer abc def"));
}

/* ---- AUTH_JWKS_URL: a loopback issuer ------------------------------------------------------ */

typedef struct issuer {
    oms_http_server *srv;
    char url[64];
    pthread_mutex_t mu;
    char *body; /* what GET /jwks answers (heap) */
    int status;
    atomic_int hits;
} issuer;

static void h_jwks(const oms_http_req *req, oms_http_resp *resp)
{
    issuer *is = req->ud;
    atomic_fetch_add(&is->hits, 1);
    pthread_mutex_lock(&is->mu);
    oms_http_resp_text(resp, is->status, "application/json", is->body, strlen(is->body));
    pthread_mutex_unlock(&is->mu);
}

static void h_moved(const oms_http_req *req, oms_http_resp *resp)
{
    issuer *is = req->ud;
    atomic_fetch_add(&is->hits, 1);
    oms_http_resp_redirect(resp, "/jwks");
}

static const oms_http_route issuer_routes[] = {{"GET", "/jwks", h_jwks},
                                               {"GET", "/moved", h_moved}};

/* Sets what the issuer serves; body is stolen. */
static void serve(issuer *is, int status, char *body)
{
    pthread_mutex_lock(&is->mu);
    free(is->body);
    is->body = body;
    is->status = status;
    pthread_mutex_unlock(&is->mu);
}

static int issuer_setup(void **state)
{
    issuer *is = calloc(1, sizeof(*is));
    assert_non_null(is);
    assert_int_equal(pthread_mutex_init(&is->mu, NULL), 0);
    is->body = strdup("{}");
    is->status = 200;
    oms_http_config cfg = {
        .addr = "127.0.0.1:0",
        .routes = issuer_routes,
        .nroutes = sizeof(issuer_routes) / sizeof(issuer_routes[0]),
        .max_body = 0,
        .threads = 2,
        .ud = is,
    };
    char err[256] = "";
    if (oms_http_start(&is->srv, &cfg, err, sizeof(err)) != OMS_OK)
        fail_msg("issuer: %s", err);
    snprintf(is->url, sizeof(is->url), "http://127.0.0.1:%d/jwks", oms_http_port(is->srv));
    *state = is;
    return 0;
}

static int issuer_teardown(void **state)
{
    issuer *is = *state;
    oms_http_stop(is->srv);
    pthread_mutex_destroy(&is->mu);
    free(is->body);
    free(is);
    return 0;
}

static gw_jwt_verifier *url_verifier(issuer *is, long long refresh_s)
{
    gw_jwt_verifier *v = NULL;
    oms_error err = {0};
    gw_jwt_config cfg = {.issuer = ISS,
                         .audience = AUD,
                         .jwks_url = is->url,
                         .refresh_s = refresh_s,
                         .leeway_s = LEEWAY,
                         .fetch_timeout_ms = 3000};
    if (gw_jwt_verifier_new(&v, &cfg, &err) != OMS_OK)
        fail_msg("verifier: %s", err.msg);
    return v;
}

/* rc of verifying tok at now; why into why (256 bytes). tok is freed. */
static int verify_free(gw_jwt_verifier *v, char *tok, int64_t now, char *why)
{
    char sub[GW_JWT_SUB_MAX + 1];
    int rc = gw_jwt_verify(v, tok, now, sub, why, 256);
    free(tok);
    return rc;
}

static void test_url_rotation_and_rate_limit(void **state)
{
    issuer *is = *state;
    char why[256];
    serve(is, 200, jwks(jwk_entry(K.rsa1, "rsa1", NULL), NULL));
    atomic_store(&is->hits, 0);
    gw_jwt_verifier *v = url_verifier(is, 0);
    assert_int_equal(atomic_load(&is->hits), 1);
    assert_int_equal(verify_free(v, mint(K.rsa1, "RS256", "rsa1", claims()), NOW, why), OMS_OK);
    assert_int_equal(atomic_load(&is->hits), 1);

    /* The issuer rotates: a token with the new kid makes one fetch and is accepted. */
    serve(is, 200, jwks(jwk_entry(K.rsa1, "rsa1", NULL), jwk_entry(K.rsa2, "rsa2", NULL), NULL));
    assert_int_equal(verify_free(v, mint(K.rsa2, "RS256", "rsa2", claims()), NOW, why), OMS_OK);
    assert_int_equal(atomic_load(&is->hits), 2);
    assert_int_equal(verify_free(v, mint(K.rsa2, "RS256", "rsa2", claims()), NOW, why), OMS_OK);
    assert_int_equal(atomic_load(&is->hits), 2);

    /* A second unknown kid within 10 s: refused without a fetch, even though the issuer
     * now has it; so is a flood of made-up kids. */
    serve(is, 200,
          jwks(jwk_entry(K.rsa1, "rsa1", NULL), jwk_entry(K.rsa2, "rsa2", NULL),
               jwk_entry(K.ec1, "ec3", NULL), NULL));
    assert_int_equal(verify_free(v, mint(K.ec1, "ES256", "ec3", claims()), NOW + 9, why),
                     OMS_INVALID);
    assert_string_equal(why, "kid: no key ec3 in the JWKS (reload skipped: one within 10 s)");
    for (int i = 0; i < 200; i++) {
        char kid[32];
        snprintf(kid, sizeof(kid), "made-up-%d", i);
        assert_int_equal(verify_free(v, mint(K.ec_evil, "ES256", kid, claims()), NOW + 5, why),
                         OMS_INVALID);
    }
    assert_int_equal(atomic_load(&is->hits), 2);
    /* 10 s after the last reload the new kid gets its fetch. */
    assert_int_equal(verify_free(v, mint(K.ec1, "ES256", "ec3", claims()), NOW + 10, why), OMS_OK);
    assert_int_equal(atomic_load(&is->hits), 3);
    /* The previous keys are still accepted, with no more fetches. */
    assert_int_equal(verify_free(v, mint(K.rsa1, "RS256", "rsa1", claims()), NOW + 11, why),
                     OMS_OK);
    assert_int_equal(atomic_load(&is->hits), 3);
    gw_jwt_stats st;
    gw_jwt_stats_get(v, &st);
    assert_int_equal(st.keys, 3);
    assert_int_equal(st.loads, 3);
    assert_int_equal(st.load_failures, 0);
    assert_int_equal(st.unknown_kid_loads, 2);
    assert_int_equal(st.unknown_kid_limited, 201);
    gw_jwt_verifier_free(v);
}

typedef struct flood_arg {
    gw_jwt_verifier *v;
    char *tokens[50];
    int refused;
} flood_arg;

static void *flood(void *p)
{
    flood_arg *a = p;
    char sub[GW_JWT_SUB_MAX + 1], why[256];
    for (int i = 0; i < 50; i++)
        a->refused += gw_jwt_verify(a->v, a->tokens[i], NOW, sub, why, sizeof(why)) != OMS_OK;
    return NULL;
}

/* Threads flooding unknown kids at once cause one fetch in all. */
static void test_url_concurrent_flood(void **state)
{
    issuer *is = *state;
    serve(is, 200, jwks(jwk_entry(K.rsa1, "rsa1", NULL), NULL));
    atomic_store(&is->hits, 0);
    gw_jwt_verifier *v = url_verifier(is, 0);
    flood_arg args[4];
    pthread_t th[4];
    for (int t = 0; t < 4; t++) {
        args[t].v = v;
        args[t].refused = 0;
        for (int i = 0; i < 50; i++) {
            char kid[32];
            snprintf(kid, sizeof(kid), "t%d-%d", t, i);
            args[t].tokens[i] = mint(K.ec_evil, "ES256", kid, claims());
        }
    }
    for (int t = 0; t < 4; t++)
        assert_int_equal(pthread_create(&th[t], NULL, flood, &args[t]), 0);
    for (int t = 0; t < 4; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
        assert_int_equal(args[t].refused, 50);
        for (int i = 0; i < 50; i++)
            free(args[t].tokens[i]);
    }
    assert_int_equal(atomic_load(&is->hits), 2); /* the first load + one reload */
    gw_jwt_verifier_free(v);
}

/* refresh_s: the reload thread picks up a rotation without any token asking, and a key
 * the issuer dropped stops verifying. */
static void test_url_periodic_refresh(void **state)
{
    issuer *is = *state;
    char why[256];
    serve(is, 200, jwks(jwk_entry(K.rsa1, "rsa1", NULL), NULL));
    atomic_store(&is->hits, 0);
    gw_jwt_verifier *v = url_verifier(is, 1);
    assert_int_equal(verify_free(v, mint(K.rsa1, "RS256", "rsa1", claims()), NOW, why), OMS_OK);
    serve(is, 200, jwks(jwk_entry(K.rsa2, "rsa2", NULL), NULL));
    /* Two fetches started after the swap: loads are serialised, so the first of them
     * (which got the new document) has been swapped in when the second starts. */
    int h0 = atomic_load(&is->hits);
    for (int i = 0; i < 200 && atomic_load(&is->hits) < h0 + 2; i++)
        usleep(50 * 1000);
    assert_true(atomic_load(&is->hits) >= h0 + 2);
    gw_jwt_stats st;
    assert_int_equal(verify_free(v, mint(K.rsa2, "RS256", "rsa2", claims()), NOW, why), OMS_OK);
    gw_jwt_stats_get(v, &st);
    assert_int_equal(st.unknown_kid_loads, 0);
    assert_int_equal(verify_free(v, mint(K.rsa1, "RS256", "rsa1", claims()), NOW, why),
                     OMS_INVALID);
    assert_memory_equal(why, "kid: no key rsa1", 16);
    gw_jwt_verifier_free(v); /* joins the reload thread promptly */
}

/* An issuer that is down or answers nonsense: the first load may fail (every token
 * refused, named "jwks"), and a failed reload keeps the keys there are. */
static void test_url_failures_keep_keys(void **state)
{
    issuer *is = *state;
    char why[256];
    oms_error err = {0};
    serve(is, 503, strdup("{\"error\":\"down\"}"));
    atomic_store(&is->hits, 0);
    gw_jwt_verifier *v = url_verifier(is, 0);
    gw_jwt_stats st;
    gw_jwt_stats_get(v, &st);
    assert_int_equal(st.keys, 0);
    assert_int_equal(st.load_failures, 1);
    assert_int_equal(verify_free(v, mint(K.rsa1, "RS256", "rsa1", claims()), NOW, why),
                     OMS_INVALID);
    assert_memory_equal(why, "jwks: unknown key and the reload failed", 39);
    assert_non_null(strstr(why, "HTTP 503"));
    serve(is, 200, jwks(jwk_entry(K.rsa1, "rsa1", NULL), NULL));
    assert_int_equal(verify_free(v, mint(K.rsa1, "RS256", "rsa1", claims()), NOW + 3, why),
                     OMS_INVALID); /* rate-limited: no fetch yet */
    assert_int_equal(atomic_load(&is->hits), 2);
    assert_int_equal(verify_free(v, mint(K.rsa1, "RS256", "rsa1", claims()), NOW + 13, why),
                     OMS_OK);
    assert_int_equal(atomic_load(&is->hits), 3);

    const struct {
        int status;
        char *body;
        const char *msg;
    } bad[] = {
        {200, strdup("not json"), "not JSON"},
        {200, strdup("{\"keys\": {}}"), "no \"keys\" array"},
        {200, strdup("{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}"), "no usable key"},
        {404, strdup("{}"), "HTTP 404"},
        {200, NULL, "larger than"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *body = bad[i].body;
        if (!body) {
            body = malloc(GW_JWT_JWKS_MAX + 2);
            assert_non_null(body);
            memset(body, ' ', GW_JWT_JWKS_MAX + 1);
            body[GW_JWT_JWKS_MAX + 1] = '\0';
        }
        serve(is, bad[i].status, body);
        assert_int_equal(gw_jwt_refresh(v, &err), OMS_UNAVAILABLE);
        if (!strstr(err.msg, bad[i].msg))
            fail_msg("case %zu: \"%s\" does not say \"%s\"", i, err.msg, bad[i].msg);
        assert_int_equal(verify_free(v, mint(K.rsa1, "RS256", "rsa1", claims()), NOW, why), OMS_OK);
    }
    gw_jwt_stats_get(v, &st);
    assert_int_equal(st.keys, 1);
    assert_int_equal(st.load_failures, 7); /* the first load, one reload, 5 refreshes */
    gw_jwt_verifier_free(v);

    /* A redirect is not followed (the JWKS is where AUTH_JWKS_URL says, nowhere else). */
    serve(is, 200, jwks(jwk_entry(K.rsa1, "rsa1", NULL), NULL));
    char moved[80];
    snprintf(moved, sizeof(moved), "%.*s/moved", (int)(strlen(is->url) - strlen("/jwks")), is->url);
    gw_jwt_config cfg = {.issuer = ISS, .audience = AUD, .jwks_url = moved, .leeway_s = LEEWAY};
    assert_int_equal(gw_jwt_verifier_new(&v, &cfg, &err), OMS_OK);
    gw_jwt_stats_get(v, &st);
    assert_int_equal(st.keys, 0);
    assert_int_equal(gw_jwt_refresh(v, &err), OMS_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "answered HTTP 303"));
    gw_jwt_verifier_free(v);
}

/* Verifications on several threads while the key set is swapped under them. */
typedef struct race_arg {
    gw_jwt_verifier *v;
    const char *tokens[2];
    int ok;
} race_arg;

static void *race(void *p)
{
    race_arg *a = p;
    char sub[GW_JWT_SUB_MAX + 1], why[256];
    for (int i = 0; i < 150; i++)
        a->ok += gw_jwt_verify(a->v, a->tokens[i % 2], NOW, sub, why, sizeof(why)) == OMS_OK &&
                 strcmp(sub, SUB) == 0;
    return NULL;
}

static void test_concurrent_verify_during_swaps(void **state)
{
    issuer *is = *state;
    serve(is, 200, jwks(jwk_entry(K.rsa1, "rsa1", NULL), jwk_entry(K.ec1, "ec1", NULL), NULL));
    gw_jwt_verifier *v = url_verifier(is, 0);
    char *rs = mint(K.rsa1, "RS256", "rsa1", claims()), *es = mint(K.ec1, "ES256", NULL, claims());
    race_arg args[3];
    pthread_t th[3];
    for (int t = 0; t < 3; t++) {
        args[t] = (race_arg){v, {rs, es}, 0};
        assert_int_equal(pthread_create(&th[t], NULL, race, &args[t]), 0);
    }
    oms_error err = {0};
    for (int i = 0; i < 40; i++)
        assert_int_equal(gw_jwt_refresh(v, &err), OMS_OK);
    for (int t = 0; t < 3; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
        assert_int_equal(args[t].ok, 150);
    }
    free(rs);
    free(es);
    gw_jwt_verifier_free(v);
}

/* ---- main ------------------------------------------------------------------------------- */

static int keys_setup(void **state)
{
    (void)state;
    K.rsa1 = rsa_key(2048);
    K.rsa2 = rsa_key(2048);
    K.rsa3 = rsa_key(2048);
    K.rsa_evil = rsa_key(2048);
    K.rsa_small = rsa_key(1024);
    K.ec1 = ec_key(CJOSE_JWK_EC_P_256);
    K.ec_evil = ec_key(CJOSE_JWK_EC_P_256);
    K.ec384 = ec_key(CJOSE_JWK_EC_P_384);
    K.rsa1_pem = rsa_pub_pem(K.rsa1);
    snprintf(K.dir, sizeof(K.dir), "/tmp/oms_jwt_XXXXXX");
    assert_non_null(mkdtemp(K.dir));
    return 0;
}

static int keys_teardown(void **state)
{
    (void)state;
    cjose_jwk_t *all[] = {K.rsa1,      K.rsa2, K.rsa3,    K.rsa_evil,
                          K.rsa_small, K.ec1,  K.ec_evil, K.ec384};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        cjose_jwk_release(all[i]);
    free(K.rsa1_pem);
    /* What a failed test may have left behind (the private JWKs above all). */
    const char *files[] = {"table.jwks", "safe.jwks",      "py.jwks",       "good.jwks",
                           "bad.jwks",   "rsa1.priv.json", "ec1.priv.json", "mint.py"};
    char path[128];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", K.dir, files[i]);
        unlink(path);
    }
    rmdir(K.dir);
    return 0;
}

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_why_is_safe_to_log),
        cmocka_unit_test(test_independent_signer),
        cmocka_unit_test(test_config_refused),
        cmocka_unit_test(test_bearer),
        cmocka_unit_test_setup_teardown(test_url_rotation_and_rate_limit, issuer_setup,
                                        issuer_teardown),
        cmocka_unit_test_setup_teardown(test_url_concurrent_flood, issuer_setup, issuer_teardown),
        cmocka_unit_test_setup_teardown(test_url_periodic_refresh, issuer_setup, issuer_teardown),
        cmocka_unit_test_setup_teardown(test_url_failures_keep_keys, issuer_setup, issuer_teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_verify_during_swaps, issuer_setup,
                                        issuer_teardown),
    };
    int rc = cmocka_run_group_tests(tests, keys_setup, keys_teardown);
    curl_global_cleanup();
    return rc;
}
