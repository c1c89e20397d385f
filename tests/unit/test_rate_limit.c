/* The gateway's order-creation limit per client address: the burst, the refill, the
 * Retry-After it computes, exempt ranges, IPv6 keyed by its /64, and a table that
 * stays bounded when more addresses come than it holds. The clock is passed in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "rate_limit.h"
#include "oms/util.h"

static struct sockaddr_storage addr(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1)
        v4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1)
        v6->sin6_family = AF_INET6;
    else
        fail_msg("bad test address %s", ip);
    return ss;
}

static int take(gw_rate_limit *rl, const char *ip, int64_t now, int *retry)
{
    struct sockaddr_storage ss = addr(ip);
    return gw_rate_limit_take(rl, (struct sockaddr *)&ss, now, retry);
}

static void test_burst_then_refill(void **state)
{
    (void)state;
    gw_rate_limit *rl;
    oms_error err;
    assert_int_equal(gw_rate_limit_new(&rl, 6, 3, "", &err), OMS_OK); /* one per 10 s */
    int retry = 0;
    for (int i = 0; i < 3; i++)
        assert_int_equal(take(rl, "203.0.113.7", 1000, &retry), 1);
    assert_int_equal(take(rl, "203.0.113.7", 1000, &retry), 0);
    assert_int_equal(retry, 10);
    /* Another address has its own bucket. */
    assert_int_equal(take(rl, "203.0.113.8", 1000, &retry), 1);
    /* 9.9 s later: not yet a whole token; 10 s: one, and only one. */
    assert_int_equal(take(rl, "203.0.113.7", 10900, &retry), 0);
    assert_int_equal(retry, 1);
    assert_int_equal(take(rl, "203.0.113.7", 11000, &retry), 1);
    assert_int_equal(take(rl, "203.0.113.7", 11000, &retry), 0);
    /* A long pause refills up to the burst, not beyond. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(take(rl, "203.0.113.7", 10000000, &retry), 1);
    assert_int_equal(take(rl, "203.0.113.7", 10000000, &retry), 0);
    gw_rate_limit_free(rl);
}

static void test_exempt_and_ipv6_prefix(void **state)
{
    (void)state;
    gw_rate_limit *rl;
    oms_error err;
    assert_int_equal(gw_rate_limit_new(&rl, 1, 1, "127.0.0.0/8, 10.1.2.3,::1/128", &err), OMS_OK);
    int retry = 0;
    for (int i = 0; i < 50; i++) {
        assert_int_equal(take(rl, "127.0.0.1", 0, &retry), 1);
        assert_int_equal(take(rl, "127.9.9.9", 0, &retry), 1);
        assert_int_equal(take(rl, "10.1.2.3", 0, &retry), 1);
        assert_int_equal(take(rl, "::1", 0, &retry), 1);
    }
    assert_int_equal(take(rl, "10.1.2.4", 0, &retry), 1);
    assert_int_equal(take(rl, "10.1.2.4", 0, &retry), 0);
    /* Two addresses of one /64 share a bucket; the next /64 does not. */
    assert_int_equal(take(rl, "2001:db8:1:2::10", 0, &retry), 1);
    assert_int_equal(take(rl, "2001:db8:1:2::99", 0, &retry), 0);
    assert_int_equal(take(rl, "2001:db8:1:3::10", 0, &retry), 1);
    /* An IPv4 address is never matched by an IPv6 range and the reverse. */
    assert_int_equal(take(rl, "::ffff:10.1.2.5", 0, &retry), 1);
    gw_rate_limit_free(rl);
}

static void test_bad_exempt_list_named(void **state)
{
    (void)state;
    gw_rate_limit *rl = NULL;
    oms_error err;
    const char *bad[] = {"10.0.0.0/33", "nonsense", "::1/129", "1.2.3.4/", "/8"};
    for (size_t i = 0; i < OMS_NELEM(bad); i++) {
        oms_error_clear(&err);
        assert_int_equal(gw_rate_limit_new(&rl, 1, 1, bad[i], &err), OMS_INVALID);
        assert_null(rl);
        assert_non_null(strstr(err.msg, "RATE_LIMIT_EXEMPT"));
    }
}

static void test_off_and_many_addresses(void **state)
{
    (void)state;
    gw_rate_limit *rl;
    oms_error err;
    int retry = 0;
    assert_int_equal(gw_rate_limit_new(&rl, 0, 1, "", &err), OMS_OK);
    for (int i = 0; i < 10; i++)
        assert_int_equal(take(rl, "198.51.100.1", 0, &retry), 1);
    gw_rate_limit_free(rl);
    /* More addresses than slots: each new one still gets its burst, memory stays fixed,
     * and a recent address keeps its empty bucket while idle ones are reused. */
    assert_int_equal(gw_rate_limit_new(&rl, 1, 1, "", &err), OMS_OK);
    char ip[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(ip, sizeof(ip), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        assert_int_equal(take(rl, ip, i, &retry), 1);
    }
    assert_int_equal(take(rl, "10.0.78.31", 20000, &retry), 0); /* i = 19999, just used */
    gw_rate_limit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_refill),
        cmocka_unit_test(test_exempt_and_ipv6_prefix),
        cmocka_unit_test(test_bad_exempt_list_named),
        cmocka_unit_test(test_off_and_many_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
