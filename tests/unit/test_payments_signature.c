/* Stripe-Signature verification and the webhook event parser (payments/signature.c,
 * payments/event.c), data-driven: each case is an input and the expected outcome. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../payments/event.h" /* every core folder is on the include path: be explicit */
#include "../../payments/signature.h"
#include "oms/util.h"

#define SECRET "whsec_test_secret"
#define NOW 1700000000LL
static const char BODY[] = "{\"id\":\"evt_1\",\"type\":\"checkout.session.completed\"}";

/* The v1 hex for BODY at time t with secret. */
static void v1_for(const char *secret, int64_t t, const char *body, char out[65])
{
    char h[128];
    assert_int_equal(payments_signature_header(secret, body, strlen(body), t, h, sizeof(h)),
                     OMS_OK);
    const char *v = strstr(h, "v1=");
    assert_non_null(v);
    assert_int_equal(strlen(v + 3), 64);
    memcpy(out, v + 3, 65);
}

/* A known answer, computed independently (python3 hmac), so sign and verify cannot
 * agree on a wrong algorithm. */
static void test_known_vector(void **state)
{
    char h[128];
    assert_int_equal(
        payments_signature_header("whsec_test_secret", "{}", 2, 1700000000, h, sizeof(h)), OMS_OK);
    assert_string_equal(
        h, "t=1700000000,v1=ceb8863f7208fa249a6cd8f951e993c7563412aca65866f6272283debe143ab3");
}

typedef struct sig_case {
    const char *name;
    const char *header; /* "%T" = the right timestamp, "%S" = the right v1, "%W" = a wrong one */
    int64_t t;          /* timestamp substituted for %T */
    const char *body;   /* NULL = BODY */
    payments_sig_result want;
} sig_case;

static const sig_case sig_cases[] = {
    {"valid", "t=%T,v1=%S", NOW, NULL, PAYMENTS_SIG_OK},
    {"valid with v0 after", "t=%T,v1=%S,v0=deadbeef", NOW, NULL, PAYMENTS_SIG_OK},
    {"v1 first, t last", "v1=%S,t=%T", NOW, NULL, PAYMENTS_SIG_OK},
    {"right v1 first of three", "t=%T,v1=%S,v1=%W,v1=%W", NOW, NULL, PAYMENTS_SIG_OK},
    {"right v1 in the middle", "t=%T,v1=%W,v1=%S,v1=%W", NOW, NULL, PAYMENTS_SIG_OK},
    {"right v1 last", "t=%T,v1=%W,v1=%W,v1=%S", NOW, NULL, PAYMENTS_SIG_OK},
    {"unknown scheme ignored", "t=%T,v9=zz,v1=%S", NOW, NULL, PAYMENTS_SIG_OK},
    {"299 s old", "t=%T,v1=%S", NOW - 299, NULL, PAYMENTS_SIG_OK},
    {"300 s old", "t=%T,v1=%S", NOW - 300, NULL, PAYMENTS_SIG_OK},
    {"301 s old", "t=%T,v1=%S", NOW - 301, NULL, PAYMENTS_SIG_TOO_OLD},
    {"301 s in the future", "t=%T,v1=%S", NOW + 301, NULL, PAYMENTS_SIG_TOO_OLD},
    {"only wrong v1s", "t=%T,v1=%W,v1=%W", NOW, NULL, PAYMENTS_SIG_NO_MATCH},
    {"v0 only", "t=%T,v0=%S", NOW, NULL, PAYMENTS_SIG_MALFORMED},
    {"tampered body", "t=%T,v1=%S", NOW, "{\"id\":\"evt_2\"}", PAYMENTS_SIG_NO_MATCH},
    {"short hex v1", "t=%T,v1=abcd", NOW, NULL, PAYMENTS_SIG_NO_MATCH},
    {"empty", "", NOW, NULL, PAYMENTS_SIG_MISSING},
    {"no t", "v1=%S", NOW, NULL, PAYMENTS_SIG_MALFORMED},
    {"t= empty", "t=,v1=%S", NOW, NULL, PAYMENTS_SIG_MALFORMED},
    {"non-numeric t", "t=abc,v1=%S", NOW, NULL, PAYMENTS_SIG_MALFORMED},
    {"t with suffix", "t=%Tx,v1=%S", NOW, NULL, PAYMENTS_SIG_MALFORMED},
    {"negative t", "t=-5,v1=%S", NOW, NULL, PAYMENTS_SIG_MALFORMED},
    {"huge t", "t=99999999999999999999999,v1=%S", NOW, NULL, PAYMENTS_SIG_MALFORMED},
    {"two t", "t=%T,t=%T,v1=%S", NOW, NULL, PAYMENTS_SIG_MALFORMED},
    {"v1= empty", "t=%T,v1=", NOW, NULL, PAYMENTS_SIG_MALFORMED},
    {"odd hex", "t=%T,v1=abc", NOW, NULL, PAYMENTS_SIG_MALFORMED},
    {"non-hex v1", "t=%T,v1=zz", NOW, NULL, PAYMENTS_SIG_MALFORMED},
    {"no equals", "t%T,v1%S", NOW, NULL, PAYMENTS_SIG_MALFORMED},
    {"empty item", "t=%T,,v1=%S", NOW, NULL, PAYMENTS_SIG_MALFORMED},
    {"trailing comma", "t=%T,v1=%S,", NOW, NULL, PAYMENTS_SIG_OK},
    {"key only", "=x", NOW, NULL, PAYMENTS_SIG_MALFORMED},
    {"commas only", ",,,", NOW, NULL, PAYMENTS_SIG_MALFORMED},
    {"spaces", "t=%T, v1=%S", NOW, NULL, PAYMENTS_SIG_MALFORMED},
};

/* Expands the case's template into out. */
static void expand(const sig_case *c, char *out, size_t n)
{
    char right[65], wrong[65], ts[32];
    v1_for(SECRET, c->t, BODY, right);
    v1_for("whsec_other", c->t, BODY, wrong);
    snprintf(ts, sizeof(ts), "%lld", (long long)c->t);
    size_t o = 0;
    for (const char *p = c->header; *p && o + 70 < n; p++) {
        const char *ins = NULL;
        if (p[0] == '%' && p[1] == 'T')
            ins = ts;
        else if (p[0] == '%' && p[1] == 'S')
            ins = right;
        else if (p[0] == '%' && p[1] == 'W')
            ins = wrong;
        if (ins) {
            o += (size_t)snprintf(out + o, n - o, "%s", ins);
            p++;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

static void test_signature_cases(void **state)
{
    for (size_t i = 0; i < OMS_NELEM(sig_cases); i++) {
        const sig_case *c = &sig_cases[i];
        char header[1024];
        expand(c, header, sizeof(header));
        const char *body = c->body ? c->body : BODY;
        oms_error err;
        oms_error_clear(&err);
        payments_sig_result r = payments_signature_verify(header, body, strlen(body), SECRET, NOW,
                                                          PAYMENTS_SIGNATURE_TOLERANCE_S, &err);
        if (r != c->want)
            fail_msg("case \"%s\" (header %s): got %s, want %s (%s)", c->name, header,
                     payments_sig_result_str(r), payments_sig_result_str(c->want), err.msg);
        if (r != PAYMENTS_SIG_OK && !err.msg[0])
            fail_msg("case \"%s\": rejected without a message", c->name);
    }
}

static void test_wrong_secret(void **state)
{
    char h[128];
    assert_int_equal(
        payments_signature_header("whsec_wrong", BODY, strlen(BODY), NOW, h, sizeof(h)), OMS_OK);
    oms_error err;
    assert_int_equal(payments_signature_verify(h, BODY, strlen(BODY), SECRET, NOW, 300, &err),
                     PAYMENTS_SIG_NO_MATCH);
    assert_non_null(strstr(err.msg, "no signatures found"));
}

static void test_null_header_and_secret(void **state)
{
    oms_error err;
    assert_int_equal(payments_signature_verify(NULL, BODY, strlen(BODY), SECRET, NOW, 300, &err),
                     PAYMENTS_SIG_MISSING);
    assert_non_null(strstr(err.msg, "no Stripe-Signature header"));
    char h[128];
    assert_int_equal(payments_signature_header(SECRET, BODY, strlen(BODY), NOW, h, sizeof(h)),
                     OMS_OK);
    assert_int_not_equal(payments_signature_verify(h, BODY, strlen(BODY), "", NOW, 300, &err),
                         PAYMENTS_SIG_OK);
}

/* A huge header (many v1 items, or one enormous value) is refused, not parsed. */
static void test_huge_headers(void **state)
{
    size_t n = 64 * 1024;
    char *h = malloc(n + 1);
    assert_non_null(h);
    memset(h, 'a', n);
    memcpy(h, "t=1700000000,v1=", 16);
    h[n] = '\0';
    oms_error err;
    assert_int_equal(payments_signature_verify(h, BODY, strlen(BODY), SECRET, NOW, 300, &err),
                     PAYMENTS_SIG_MALFORMED);
    /* Within the size limit but more v1 items than we keep. */
    size_t o = (size_t)snprintf(h, n, "t=%lld", NOW);
    for (int i = 0; i < 40; i++)
        o += (size_t)snprintf(h + o, n - o, ",v1=%064d", i);
    assert_int_equal(payments_signature_verify(h, BODY, strlen(BODY), SECRET, NOW, 300, &err),
                     PAYMENTS_SIG_MALFORMED);
    free(h);
}

/* The body is signed byte for byte, including NULs. */
static void test_binary_body(void **state)
{
    const char body[] = {'{', '\0', '}', 'x'};
    char h[128];
    assert_int_equal(payments_signature_header(SECRET, body, sizeof(body), NOW, h, sizeof(h)),
                     OMS_OK);
    oms_error err;
    assert_int_equal(payments_signature_verify(h, body, sizeof(body), SECRET, NOW, 300, &err),
                     PAYMENTS_SIG_OK);
    assert_int_equal(payments_signature_verify(h, body, 3, SECRET, NOW, 300, &err),
                     PAYMENTS_SIG_NO_MATCH);
}

/* ---- event parser ------------------------------------------------------------- */

typedef struct event_case {
    const char *name;
    const char *json;
    int want;            /* OMS_OK or OMS_INVALID */
    const char *msg_has; /* substring of the error, or of the parsed object id */
} event_case;

static const event_case event_cases[] = {
    {"full",
     "{\"id\":\"evt_1\",\"type\":\"checkout.session.completed\",\"data\":{\"object\":"
     "{\"id\":\"cs_1\",\"payment_status\":\"paid\",\"metadata\":{\"orderID\":\"o1\","
     "\"customerID\":\"c1\"}}}}",
     OMS_OK, "cs_1"},
    {"no metadata", "{\"id\":\"evt_1\",\"type\":\"x\",\"data\":{\"object\":{\"id\":\"cs_2\"}}}",
     OMS_OK, "cs_2"},
    {"null metadata",
     "{\"id\":\"e\",\"type\":\"x\",\"data\":{\"object\":{\"id\":\"cs_3\","
     "\"metadata\":null}}}",
     OMS_OK, "cs_3"},
    {"malformed JSON", "{\"id\":\"evt_1\",", OMS_INVALID, "malformed JSON"},
    {"empty body", "", OMS_INVALID, "malformed JSON"},
    {"array", "[1,2]", OMS_INVALID, "JSON object"},
    {"string", "\"evt\"", OMS_INVALID, "malformed JSON"},
    {"no id", "{\"type\":\"x\",\"data\":{\"object\":{}}}", OMS_INVALID, "id: required"},
    {"empty id", "{\"id\":\"\",\"type\":\"x\",\"data\":{\"object\":{}}}", OMS_INVALID,
     "id: required"},
    {"numeric id", "{\"id\":5,\"type\":\"x\",\"data\":{\"object\":{}}}", OMS_INVALID,
     "id: must be a string"},
    {"no type", "{\"id\":\"e\",\"data\":{\"object\":{}}}", OMS_INVALID, "type: required"},
    {"type object", "{\"id\":\"e\",\"type\":{},\"data\":{\"object\":{}}}", OMS_INVALID,
     "type: must be a string"},
    {"no data", "{\"id\":\"e\",\"type\":\"x\"}", OMS_INVALID, "data: must be an object"},
    {"data array", "{\"id\":\"e\",\"type\":\"x\",\"data\":[]}", OMS_INVALID,
     "data: must be an object"},
    {"no object", "{\"id\":\"e\",\"type\":\"x\",\"data\":{}}", OMS_INVALID,
     "data.object: must be an object"},
    {"object id number", "{\"id\":\"e\",\"type\":\"x\",\"data\":{\"object\":{\"id\":1}}}",
     OMS_INVALID, "data.object.id"},
    {"metadata string", "{\"id\":\"e\",\"type\":\"x\",\"data\":{\"object\":{\"metadata\":\"m\"}}}",
     OMS_INVALID, "data.object.metadata"},
    {"orderID number",
     "{\"id\":\"e\",\"type\":\"x\",\"data\":{\"object\":{\"metadata\":"
     "{\"orderID\":7}}}}",
     OMS_INVALID, "metadata.orderID"},
    {"payment_status bool",
     "{\"id\":\"e\",\"type\":\"x\",\"data\":{\"object\":"
     "{\"payment_status\":true}}}",
     OMS_INVALID, "payment_status"},
    {"orderID too long",
     "{\"id\":\"e\",\"type\":\"x\",\"data\":{\"object\":{\"metadata\":"
     "{\"orderID\":\"0123456789012345678901234567890123456789012345678901"
     "2345678901234\"}}}}",
     OMS_INVALID, "too long"},
    {"duplicate key", "{\"id\":\"e\",\"id\":\"f\",\"type\":\"x\",\"data\":{\"object\":{}}}",
     OMS_INVALID, "malformed JSON"},
    {"NUL in id", "{\"id\":\"e\\u0000x\",\"type\":\"x\",\"data\":{\"object\":{}}}", OMS_INVALID,
     "malformed JSON"},
};

static void test_event_cases(void **state)
{
    for (size_t i = 0; i < OMS_NELEM(event_cases); i++) {
        const event_case *c = &event_cases[i];
        payments_event ev;
        oms_error err;
        oms_error_clear(&err);
        int rc = payments_event_parse(c->json, strlen(c->json), &ev, &err);
        if (rc != c->want)
            fail_msg("case \"%s\": got %d, want %d (%s)", c->name, rc, c->want, err.msg);
        const char *where = rc == OMS_OK ? ev.object_id : err.msg;
        if (!strstr(where, c->msg_has))
            fail_msg("case \"%s\": \"%s\" does not contain \"%s\"", c->name, where, c->msg_has);
    }
}

static void test_event_fields(void **state)
{
    const char *j = "{\"id\":\"evt_9\",\"type\":\"checkout.session.expired\",\"data\":{\"object\":"
                    "{\"id\":\"cs_9\",\"payment_status\":\"unpaid\",\"metadata\":{\"orderID\":"
                    "\"o9\",\"customerID\":\"c9\"}}}}";
    payments_event ev;
    oms_error err;
    assert_int_equal(payments_event_parse(j, strlen(j), &ev, &err), OMS_OK);
    assert_string_equal(ev.id, "evt_9");
    assert_string_equal(ev.type, "checkout.session.expired");
    assert_string_equal(ev.object_id, "cs_9");
    assert_string_equal(ev.payment_status, "unpaid");
    assert_string_equal(ev.order_id, "o9");
    assert_string_equal(ev.customer_id, "c9");
}

/* The local processor's event parses back with the fields the webhook needs. */
static void test_local_event_roundtrip(void **state)
{
    payments_local_event le = {
        .type = "checkout.session.completed",
        .session_status = "complete",
        .payment_status = "paid",
        .session_id = "cs_local_abc",
        .session_url = "http://p/x",
        .success_url = "http://g/success.html",
        .order_id = "o1",
        .customer_id = "c1",
        .amount = 1234,
        .currency = "usd",
        .created = NOW,
    };
    char *body = payments_event_build_local(&le);
    assert_non_null(body);
    assert_non_null(strstr(body, "\"object\":\"event\""));
    assert_non_null(strstr(body, "\"livemode\":false"));
    assert_non_null(strstr(body, "\"amount_total\":1234"));
    assert_non_null(strstr(body, "\"id\":\"evt_local_"));
    payments_event ev;
    oms_error err;
    assert_int_equal(payments_event_parse(body, strlen(body), &ev, &err), OMS_OK);
    assert_string_equal(ev.object_id, "cs_local_abc");
    assert_string_equal(ev.order_id, "o1");
    assert_string_equal(ev.payment_status, "paid");
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_vector),          cmocka_unit_test(test_signature_cases),
        cmocka_unit_test(test_wrong_secret),          cmocka_unit_test(test_null_header_and_secret),
        cmocka_unit_test(test_huge_headers),          cmocka_unit_test(test_binary_body),
        cmocka_unit_test(test_event_cases),           cmocka_unit_test(test_event_fields),
        cmocka_unit_test(test_local_event_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
