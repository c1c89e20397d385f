/* The capped buffer every libcurl body goes into: what fits is kept NUL-terminated,
 * an add past the cap is refused and changes nothing, take/free leave it reusable,
 * and as a curl write callback it makes a transfer over the cap fail (a real file://
 * transfer, no server needed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oms/dynbuf.h"
#include "oms/status.h"

static void test_add_up_to_the_cap(void **state)
{
    oms_dynbuf b;
    oms_dynbuf_init(&b, 1000);
    assert_null(b.p);
    assert_int_equal(oms_dynbuf_add(&b, "", 0), OMS_OK); /* nothing: still no memory */
    assert_null(b.p);
    /* Many small adds: grows, always terminated. */
    for (int i = 0; i < 999; i++)
        assert_int_equal(oms_dynbuf_add(&b, "x", 1), OMS_OK);
    assert_int_equal(b.len, 999);
    assert_int_equal(strlen(b.p), 999);
    assert_true(b.cap >= 1000 && b.cap <= 1001); /* the last step stops at cap + NUL */
    /* Exactly the cap is fine; one byte more is not, and changes nothing. */
    assert_int_equal(oms_dynbuf_add(&b, "y", 1), OMS_OK);
    assert_int_equal(b.len, 1000);
    assert_int_equal(b.refused, 0);
    assert_int_equal(oms_dynbuf_add(&b, "z", 1), OMS_TOOBIG);
    assert_int_equal(b.refused, 1);
    assert_int_equal(b.len, 1000);
    assert_int_equal(b.p[999], 'y');
    assert_int_equal(b.p[1000], '\0');
    oms_dynbuf_free(&b);
    assert_null(b.p);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.toobig, 1000);
    assert_int_equal(b.refused, 0);
}

static void test_one_add_larger_than_the_cap(void **state)
{
    char big[64];
    memset(big, 'a', sizeof(big));
    oms_dynbuf b;
    oms_dynbuf_init(&b, 16);
    assert_int_equal(oms_dynbuf_add(&b, "abc", 3), OMS_OK);
    assert_int_equal(oms_dynbuf_add(&b, big, sizeof(big)), OMS_TOOBIG);
    assert_string_equal(b.p, "abc");
    /* A cap of 0 takes nothing at all. */
    oms_dynbuf z;
    oms_dynbuf_init(&z, 0);
    assert_int_equal(oms_dynbuf_add(&z, "a", 1), OMS_TOOBIG);
    assert_null(z.p);
    oms_dynbuf_free(&z);
    oms_dynbuf_free(&b);
}

static void test_take(void **state)
{
    oms_dynbuf b;
    oms_dynbuf_init(&b, 100);
    size_t len = 99;
    assert_null(oms_dynbuf_take(&b, &len)); /* nothing added */
    assert_int_equal(len, 0);
    assert_int_equal(oms_dynbuf_add(&b, "hello", 5), OMS_OK);
    char *s = oms_dynbuf_take(&b, &len);
    assert_string_equal(s, "hello");
    assert_int_equal(len, 5);
    free(s);
    /* Empty again, same cap, usable. */
    assert_null(b.p);
    assert_int_equal(b.len, 0);
    assert_int_equal(oms_dynbuf_add(&b, "again", 5), OMS_OK);
    s = oms_dynbuf_take(&b, NULL);
    assert_string_equal(s, "again");
    free(s);
}

static void test_curl_write_callback(void **state)
{
    oms_dynbuf b;
    oms_dynbuf_init(&b, 8);
    char chunk[] = "12345";
    assert_int_equal(oms_dynbuf_curl_write(chunk, 1, 5, &b), 5);
    assert_int_equal(oms_dynbuf_curl_write(chunk, 1, 5, &b), 0); /* 10 > 8: stop */
    assert_int_equal(b.refused, 1);
    assert_string_equal(b.p, "12345");
    /* size * nmemb that wraps is refused, not truncated. */
    oms_dynbuf w;
    oms_dynbuf_init(&w, SIZE_MAX);
    assert_int_equal(oms_dynbuf_curl_write(chunk, SIZE_MAX / 2, 3, &w), 0);
    assert_int_equal(w.refused, 1);
    oms_dynbuf_free(&w);
    oms_dynbuf_free(&b);
}

/* Fetches path over file:// into a buffer capped at cap; returns curl's result. */
static CURLcode fetch_file(const char *path, size_t cap, oms_dynbuf *b)
{
    char url[512];
    snprintf(url, sizeof(url), "file://%s", path);
    CURL *c = curl_easy_init();
    assert_non_null(c);
    oms_dynbuf_init(b, cap);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, oms_dynbuf_curl_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    CURLcode cc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    return cc;
}

static void test_curl_transfer(void **state)
{
    char path[] = "/tmp/oms-dynbuf-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static char body[200000]; /* several write callbacks' worth */
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (char)('a' + i % 26);
    assert_int_equal(write(fd, body, sizeof(body)), (ssize_t)sizeof(body));
    close(fd);

    oms_dynbuf b;
    assert_int_equal(fetch_file(path, sizeof(body), &b), CURLE_OK);
    assert_int_equal(b.len, sizeof(body));
    assert_memory_equal(b.p, body, sizeof(body));
    assert_int_equal(b.refused, 0);
    oms_dynbuf_free(&b);

    assert_int_equal(fetch_file(path, sizeof(body) - 1, &b), CURLE_WRITE_ERROR);
    assert_int_equal(b.refused, 1);
    assert_true(b.len < sizeof(body));
    oms_dynbuf_free(&b);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_up_to_the_cap),
        cmocka_unit_test(test_one_add_larger_than_the_cap),
        cmocka_unit_test(test_take),
        cmocka_unit_test(test_curl_write_callback),
        cmocka_unit_test(test_curl_transfer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
