/* The order rules: request parsing and limits, merging, the transition table,
 * totals, and the JSON shape round trip. Data-driven where the cases are many. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/order.h"
#include "oms/util.h"

typedef struct {
    const char *body;
    int code;
    const char *msg_part; /* expected substring of the error, or NULL */
} request_case;

static const request_case request_cases[] = {
    {"{\"items\":[{\"productID\":\"1\",\"quantity\":2}]}", OMS_OK, NULL},
    {"[{\"productID\":\"1\",\"quantity\":2}]", OMS_OK, NULL},
    {"[{\"id\":\"1\",\"quantity\":2}]", OMS_OK, NULL},
    {"{\"items\":[{\"productID\":\"1\",\"quantity\":2.0}]}", OMS_OK, NULL},
    {"", OMS_INVALID, "malformed JSON"},
    {"{\"items\":", OMS_INVALID, "malformed JSON"},
    {"{\"items\":[],\"items\":[]}", OMS_INVALID, "malformed JSON"},
    {"null", OMS_INVALID, "items"},
    {"42", OMS_INVALID, "items"},
    {"{}", OMS_INVALID, "items: required"},
    {"{\"items\":[]}", OMS_INVALID, "at least one"},
    {"{\"items\":\"x\"}", OMS_INVALID, "must be an array"},
    {"{\"items\":[1]}", OMS_INVALID, "items[0]: must be an object"},
    {"{\"items\":[{\"quantity\":1}]}", OMS_INVALID, "items[0].productID: required"},
    {"{\"items\":[{\"productID\":7,\"quantity\":1}]}", OMS_INVALID, "items[0].productID"},
    {"{\"items\":[{\"productID\":\"\",\"quantity\":1}]}", OMS_INVALID, "items[0].productID"},
    {"{\"items\":[{\"productID\":\"a/b\",\"quantity\":1}]}", OMS_INVALID, "items[0].productID"},
    {"{\"items\":[{\"productID\":\"\xc3\xa9\",\"quantity\":1}]}", OMS_INVALID,
     "items[0].productID"},
    {"{\"items\":[{\"productID\":\"1\"}]}", OMS_INVALID, "items[0].quantity: required"},
    {"{\"items\":[{\"productID\":\"1\",\"quantity\":0}]}", OMS_INVALID, "items[0].quantity"},
    {"{\"items\":[{\"productID\":\"1\",\"quantity\":-1}]}", OMS_INVALID, "items[0].quantity"},
    {"{\"items\":[{\"productID\":\"1\",\"quantity\":1001}]}", OMS_INVALID, "items[0].quantity"},
    {"{\"items\":[{\"productID\":\"1\",\"quantity\":1.5}]}", OMS_INVALID, "items[0].quantity"},
    {"{\"items\":[{\"productID\":\"1\",\"quantity\":\"2\"}]}", OMS_INVALID, "items[0].quantity"},
    {"{\"items\":[{\"productID\":\"1\",\"quantity\":99999999999999999999}]}", OMS_INVALID, NULL},
    {"{\"items\":[{\"productID\":\"1\",\"quantity\":1e300}]}", OMS_INVALID, "items[0].quantity"},
    {"{\"items\":[{\"productID\":\"1\",\"quantity\":500},{\"productID\":\"1\",\"quantity\":501}]}",
     OMS_INVALID, "exceeds 1000"},
};

static void test_request_cases(void **state)
{
    for (size_t i = 0; i < OMS_NELEM(request_cases); i++) {
        const request_case *c = &request_cases[i];
        oms_order o;
        oms_error err;
        oms_error_clear(&err);
        int rc = oms_order_parse_request(c->body, strlen(c->body), &o, &err);
        if (rc != c->code || (c->msg_part && !strstr(err.msg, c->msg_part)))
            fail_msg("case %zu (%s): rc %d msg \"%s\"", i, c->body, rc, err.msg);
        oms_order_free(&o);
    }
}

static void test_merge_keeps_first_seen_order(void **state)
{
    const char *body = "{\"items\":[{\"productID\":\"2\",\"quantity\":1},{\"productID\":\"1\","
                       "\"quantity\":2},{\"productID\":\"2\",\"quantity\":3}]}";
    oms_order o;
    oms_error err;
    assert_int_equal(oms_order_parse_request(body, strlen(body), &o, &err), OMS_OK);
    assert_int_equal(o.nitems, 2);
    assert_string_equal(o.items[0].product_id, "2");
    assert_int_equal(o.items[0].quantity, 4);
    assert_string_equal(o.items[1].product_id, "1");
    assert_int_equal(o.items[1].quantity, 2);
    oms_order_free(&o);
}

static char *items_body(int n, int distinct)
{
    size_t cap = (size_t)n * 48 + 32;
    char *b = malloc(cap);
    size_t len = (size_t)snprintf(b, cap, "{\"items\":[");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(b + len, cap - len, "%s{\"productID\":\"p%d\",\"quantity\":1}",
                                i ? "," : "", distinct ? i : 0);
    snprintf(b + len, cap - len, "]}");
    return b;
}

static void test_item_count_limits(void **state)
{
    oms_order o;
    oms_error err;
    char *ok = items_body(100, 1);
    assert_int_equal(oms_order_parse_request(ok, strlen(ok), &o, &err), OMS_OK);
    assert_int_equal(o.nitems, 100);
    oms_order_free(&o);
    free(ok);
    char *over = items_body(101, 1);
    assert_int_equal(oms_order_parse_request(over, strlen(over), &o, &err), OMS_INVALID);
    assert_non_null(strstr(err.msg, "at most 100"));
    free(over);
    /* 500 lines of one product merge to one item of 500 */
    char *same = items_body(500, 0);
    assert_int_equal(oms_order_parse_request(same, strlen(same), &o, &err), OMS_OK);
    assert_int_equal(o.nitems, 1);
    assert_int_equal(o.items[0].quantity, 500);
    oms_order_free(&o);
    free(same);
    /* 10 000 items are refused before any work per item */
    char *huge = items_body(10000, 1);
    assert_int_equal(oms_order_parse_request(huge, strlen(huge), &o, &err), OMS_TOOBIG);
    free(huge);
}

typedef struct {
    oms_order_status from, to;
    int ok;
} move_case;

static const move_case moves[] = {
    {OMS_ORDER_PENDING, OMS_ORDER_WAITING_PAYMENT, 1},
    {OMS_ORDER_WAITING_PAYMENT, OMS_ORDER_PAID, 1},
    {OMS_ORDER_PAID, OMS_ORDER_COOKING, 1},
    {OMS_ORDER_COOKING, OMS_ORDER_READY, 1},
    {OMS_ORDER_WAITING_PAYMENT, OMS_ORDER_COOKING, 1}, /* cooking seen before paid */
    {OMS_ORDER_PAID, OMS_ORDER_READY, 1},
    {OMS_ORDER_PENDING, OMS_ORDER_CANCELLED, 1},
    {OMS_ORDER_WAITING_PAYMENT, OMS_ORDER_CANCELLED, 1},
    {OMS_ORDER_WAITING_PAYMENT, OMS_ORDER_PAYMENT_FAILED, 1},
    {OMS_ORDER_WAITING_PAYMENT, OMS_ORDER_PENDING, 0},
    {OMS_ORDER_READY, OMS_ORDER_PAID, 0},
    {OMS_ORDER_READY, OMS_ORDER_COOKING, 0},
    {OMS_ORDER_COOKING, OMS_ORDER_PAID, 0},
    {OMS_ORDER_PAID, OMS_ORDER_CANCELLED, 0},
    {OMS_ORDER_CANCELLED, OMS_ORDER_PAID, 0},
    {OMS_ORDER_CANCELLED, OMS_ORDER_WAITING_PAYMENT, 0},
    {OMS_ORDER_PAYMENT_FAILED, OMS_ORDER_PAID, 0},
    {OMS_ORDER_PAID, OMS_ORDER_PAID, 0},
    {OMS_ORDER_CANCELLED, OMS_ORDER_PAYMENT_FAILED, 0},
    /* Money comes back from anywhere, once; nothing leaves refunded. */
    {OMS_ORDER_CANCELLED, OMS_ORDER_REFUNDED, 1},
    {OMS_ORDER_WAITING_PAYMENT, OMS_ORDER_REFUNDED, 1},
    {OMS_ORDER_PAID, OMS_ORDER_REFUNDED, 1},
    {OMS_ORDER_COOKING, OMS_ORDER_REFUNDED, 1},
    {OMS_ORDER_READY, OMS_ORDER_REFUNDED, 1},
    {OMS_ORDER_PAYMENT_FAILED, OMS_ORDER_REFUNDED, 1},
    {OMS_ORDER_REFUNDED, OMS_ORDER_REFUNDED, 0},
    {OMS_ORDER_REFUNDED, OMS_ORDER_PAID, 0},
    {OMS_ORDER_REFUNDED, OMS_ORDER_CANCELLED, 0},
    {OMS_ORDER_REFUNDED, OMS_ORDER_READY, 0},
    /* The hand-over: only a ready order is collected, and collected is final but for
     * money coming back. */
    {OMS_ORDER_READY, OMS_ORDER_COLLECTED, 1},
    {OMS_ORDER_COOKING, OMS_ORDER_COLLECTED, 0},
    {OMS_ORDER_PAID, OMS_ORDER_COLLECTED, 0},
    {OMS_ORDER_WAITING_PAYMENT, OMS_ORDER_COLLECTED, 0},
    {OMS_ORDER_CANCELLED, OMS_ORDER_COLLECTED, 0},
    {OMS_ORDER_REFUNDED, OMS_ORDER_COLLECTED, 0},
    {OMS_ORDER_COLLECTED, OMS_ORDER_COLLECTED, 0},
    {OMS_ORDER_COLLECTED, OMS_ORDER_READY, 0},
    {OMS_ORDER_COLLECTED, OMS_ORDER_COOKING, 0},
    {OMS_ORDER_COLLECTED, OMS_ORDER_CANCELLED, 0},
    {OMS_ORDER_COLLECTED, OMS_ORDER_REFUNDED, 1},
};

static void test_transition_table(void **state)
{
    for (size_t i = 0; i < OMS_NELEM(moves); i++)
        if (oms_order_can_move(moves[i].from, moves[i].to) != moves[i].ok)
            fail_msg("%s -> %s: expected %d", oms_order_status_str(moves[i].from),
                     oms_order_status_str(moves[i].to), moves[i].ok);
    assert_int_equal(oms_order_can_move((oms_order_status)99, OMS_ORDER_PAID), 0);
}

static void test_status_strings(void **state)
{
    assert_string_equal(oms_order_status_str(OMS_ORDER_PENDING), "pending");
    assert_string_equal(oms_order_status_str(OMS_ORDER_WAITING_PAYMENT), "waiting_payment");
    assert_string_equal(oms_order_status_str(OMS_ORDER_PAID), "paid");
    assert_string_equal(oms_order_status_str(OMS_ORDER_READY), "ready for pick-up");
    for (int s = 0; s < OMS_ORDER__COUNT; s++)
        assert_int_equal(oms_order_status_parse(oms_order_status_str((oms_order_status)s)), s);
    assert_int_equal(oms_order_status_parse("PAID"), -1);
    assert_int_equal(oms_order_status_parse(NULL), -1);
}

static void test_totals(void **state)
{
    oms_order o;
    oms_order_init(&o);
    oms_order_item a = {.product_id = "1", .quantity = 2, .unit_price = 450};
    oms_order_item b = {.product_id = "2", .quantity = 5, .unit_price = 250};
    oms_order_add_item(&o, &a);
    oms_order_add_item(&o, &b);
    long long total = 0;
    oms_error err;
    assert_int_equal(oms_order_compute_total(&o, &total, &err), OMS_OK);
    assert_int_equal(total, 2150);
    o.items[0].unit_price = 0x7fffffffffffffffLL;
    assert_int_equal(oms_order_compute_total(&o, &total, &err), OMS_INVALID);
    oms_order_free(&o);
}

static void test_json_round_trip(void **state)
{
    oms_order o;
    oms_order_init(&o);
    strcpy(o.order_id, "6845be6c505134f8c02c2566");
    strcpy(o.customer_id, "1");
    o.status = OMS_ORDER_READY;
    o.payment_link = strdup("https://checkout.stripe.com/c/pay/x");
    o.total = 2150;
    o.created_ms = 1764045281123LL;
    o.updated_ms = 1764045290456LL;
    oms_order_item a = {.product_id = "1",
                        .product_name = "Cheese \"aged\"",
                        .price_id = "price_1",
                        .quantity = 2,
                        .unit_price = 450};
    oms_order_add_item(&o, &a);
    char *s = oms_order_to_json_str(&o);
    assert_non_null(strstr(s, "\"status\":\"ready for pick-up\""));
    assert_non_null(strstr(s, "\"PaymentLink\":\"https://checkout.stripe.com/c/pay/x\""));
    assert_non_null(strstr(s, "\"createdAt\":\"2025-11-25T04:34:41.123Z\""));
    oms_order back;
    oms_error err;
    assert_int_equal(oms_order_from_json_str(s, strlen(s), &back, &err), OMS_OK);
    assert_string_equal(back.order_id, o.order_id);
    assert_string_equal(back.customer_id, "1");
    assert_int_equal(back.status, OMS_ORDER_READY);
    assert_string_equal(back.payment_link, o.payment_link);
    assert_int_equal(back.total, 2150);
    assert_int_equal(back.created_ms, o.created_ms);
    assert_int_equal(back.updated_ms, o.updated_ms);
    assert_int_equal(back.nitems, 1);
    assert_string_equal(back.items[0].product_name, "Cheese \"aged\"");
    assert_int_equal(back.items[0].unit_price, 450);
    free(s);
    oms_order_free(&back);
    /* no link: the original's "none" */
    free(o.payment_link);
    o.payment_link = NULL;
    s = oms_order_to_json_str(&o);
    assert_non_null(strstr(s, "\"PaymentLink\":\"none\""));
    free(s);
    oms_order_free(&o);
}

static void test_json_rejects_bad_events(void **state)
{
    const char *bad[] = {
        "",
        "[]",
        "{\"orderID\":\"1\"}",
        "{\"orderID\":\"1\",\"customerID\":\"2\",\"status\":\"weird\",\"items\":[]}",
        "{\"orderID\":\"1\",\"customerID\":\"2\",\"status\":\"paid\"}",
        "{\"orderID\":\"1\",\"customerID\":\"2\",\"status\":\"paid\",\"items\":[{\"productID\":3}]"
        "}",
        "{\"orderID\":\"../x\",\"customerID\":\"2\",\"status\":\"paid\",\"items\":[]}",
    };
    for (size_t i = 0; i < OMS_NELEM(bad); i++) {
        oms_order o;
        oms_error err;
        if (oms_order_from_json_str(bad[i], strlen(bad[i]), &o, &err) != OMS_INVALID)
            fail_msg("accepted: %s", bad[i]);
        oms_order_free(&o);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_cases),
        cmocka_unit_test(test_merge_keeps_first_seen_order),
        cmocka_unit_test(test_item_count_limits),
        cmocka_unit_test(test_transition_table),
        cmocka_unit_test(test_status_strings),
        cmocka_unit_test(test_totals),
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_json_rejects_bad_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
