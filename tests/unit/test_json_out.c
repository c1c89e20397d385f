/* The JSON writer: every string it writes must parse back (with jansson, an
 * independent parser) to the same text, or to U+FFFD in place of each invalid UTF-8
 * byte; numbers, growth and the order shape must match what jansson produced before. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/json_out.h"
#include "oms/order.h"
#include "oms/util.h"

/* Writes s as a JSON string, parses it with jansson and returns the decoded text. */
static char *round_trip(const char *s, char *written, size_t wsize)
{
    oms_jbuf b;
    oms_jbuf_init(&b, 4); /* tiny: forces growth */
    oms_jbuf_lit(&b, "[");
    oms_jbuf_str(&b, s);
    oms_jbuf_lit(&b, "]");
    snprintf(written, wsize, "%s", b.p);
    json_error_t e;
    json_t *j = json_loadb(b.p, b.len, 0, &e);
    if (!j)
        fail_msg("jansson refused %s: %s", b.p, e.text);
    char *out = strdup(json_string_value(json_array_get(j, 0)));
    json_decref(j);
    oms_jbuf_free(&b);
    return out;
}

typedef struct {
    const char *in, *decoded, *written; /* written NULL: not checked */
} str_case;

static const str_case str_cases[] = {
    {"", "", "[\"\"]"},
    {"plain", "plain", "[\"plain\"]"},
    {"q\"b\\s/", "q\"b\\s/", "[\"q\\\"b\\\\s/\"]"},
    {"\n\r\t\b\f", "\n\r\t\b\f", "[\"\\n\\r\\t\\b\\f\"]"},
    {"\x01\x1f\x7f", "\x01\x1f\x7f", "[\"\\u0001\\u001f\x7f\"]"},
    {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8d\x95", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8d\x95",
     NULL},
    /* invalid: lone continuation, truncated sequences, overlong, surrogate, > U+10FFFF */
    {"a\x80z", "a\xef\xbf\xbdz", NULL},
    {"\xc3", "\xef\xbf\xbd", NULL},
    {"\xe2\x82", "\xef\xbf\xbd\xef\xbf\xbd", NULL},
    {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd", NULL},
    {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", NULL},
    {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", NULL},
    {"\xff\xfe", "\xef\xbf\xbd\xef\xbf\xbd", NULL},
};

static void test_strings(void **state)
{
    (void)state;
    for (size_t i = 0; i < OMS_NELEM(str_cases); i++) {
        char written[256];
        char *got = round_trip(str_cases[i].in, written, sizeof(written));
        if (strcmp(got, str_cases[i].decoded) != 0)
            fail_msg("case %zu: decoded differs (written %s)", i, written);
        if (str_cases[i].written && strcmp(written, str_cases[i].written) != 0)
            fail_msg("case %zu: wrote %s, want %s", i, written, str_cases[i].written);
        free(got);
    }
}

/* Every single byte value, and a long string of escapes (worst-case growth). */
static void test_all_bytes_and_growth(void **state)
{
    (void)state;
    char s[2] = {0, 0};
    char written[64];
    for (int c = 1; c < 256; c++) {
        s[0] = (char)c;
        char *got = round_trip(s, written, sizeof(written));
        if (c < 0x80)
            assert_string_equal(got, s);
        else
            assert_string_equal(got, "\xef\xbf\xbd");
        free(got);
    }
    size_t n = 10000;
    char *big = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i % 2 ? 0x01 : '"');
    big[n] = '\0';
    char *got = round_trip(big, written, sizeof(written));
    assert_string_equal(got, big);
    free(got);
    free(big);
}

static void test_ints_and_take(void **state)
{
    (void)state;
    oms_jbuf b;
    oms_jbuf_init(&b, 0);
    oms_jbuf_int(&b, 0);
    oms_jbuf_lit(&b, ",");
    oms_jbuf_int(&b, -42);
    oms_jbuf_lit(&b, ",");
    oms_jbuf_int(&b, INT64_MAX);
    size_t len = 0;
    char *s = oms_jbuf_take(&b, &len);
    assert_string_equal(s, "0,-42,9223372036854775807");
    assert_int_equal(len, strlen(s));
    assert_null(b.p);
    free(s);
}

/* The order shape is what jansson wrote before this writer: same keys, same order. */
static void test_order_shape(void **state)
{
    (void)state;
    oms_order o;
    oms_order_init(&o);
    snprintf(o.order_id, sizeof(o.order_id), "o1");
    snprintf(o.customer_id, sizeof(o.customer_id), "c1");
    snprintf(o.currency, sizeof(o.currency), "usd");
    oms_order_item it = {0};
    snprintf(it.product_id, sizeof(it.product_id), "p1");
    it.product_name = (char *)"Caf\xc3\xa9 \"best\""; /* copied by oms_order_add_item */
    it.price_id = (char *)"price_1";
    it.quantity = 2;
    it.unit_price = 350;
    oms_order_add_item(&o, &it);
    o.total = 700;
    o.status = OMS_ORDER_WAITING_PAYMENT;
    o.created_ms = 1700000000123LL;
    o.updated_ms = 1700000001000LL;
    char *s = oms_order_to_json_str(&o);
    assert_string_equal(
        s, "{\"orderID\":\"o1\",\"customerID\":\"c1\",\"items\":[{\"productID\":\"p1\","
           "\"productName\":\"Caf\xc3\xa9 "
           "\\\"best\\\"\",\"quantity\":2,\"priceID\":\"price_1\",\"unitPrice\":"
           "350}],\"status\":\"waiting_payment\",\"PaymentLink\":\"none\",\"total\":700,"
           "\"currency\":\"usd\",\"createdAt\":\"2023-11-14T22:13:20.123Z\",\"updatedAt\":"
           "\"2023-11-14T22:13:21.000Z\"}");
    oms_order back;
    oms_error err;
    assert_int_equal(oms_order_from_json_str(s, strlen(s), &back, &err), OMS_OK);
    assert_string_equal(back.items[0].product_name, "Caf\xc3\xa9 \"best\"");
    assert_int_equal(back.created_ms, o.created_ms);
    oms_order_free(&back);
    free(s);
    oms_order_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_all_bytes_and_growth),
        cmocka_unit_test(test_ints_and_take),
        cmocka_unit_test(test_order_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
