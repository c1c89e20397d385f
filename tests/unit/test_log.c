/* The logger's promise: whatever a caller passes, each record is one line, a JSON line
 * parses, a console line cannot forge another line or drive the terminal, and a URL's
 * password never reaches the log. The records are captured by pointing stderr at a
 * temporary file around the call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oms/log.h"

#define CUT "\xe2\x80\xa6(truncated)"

/* Saved stderr while a capture is running. */
static int saved_fd = -1;
static FILE *cap_file;

static void capture_start(void)
{
    cap_file = tmpfile();
    assert_non_null(cap_file);
    fflush(stderr);
    saved_fd = dup(STDERR_FILENO);
    assert_true(saved_fd >= 0);
    assert_true(dup2(fileno(cap_file), STDERR_FILENO) >= 0);
}

/* Restores stderr and returns what was written meanwhile (heap, NUL-terminated;
 * the caller frees it). */
static char *capture_end(size_t *len)
{
    assert_true(dup2(saved_fd, STDERR_FILENO) >= 0);
    close(saved_fd);
    saved_fd = -1;
    off_t end = lseek(fileno(cap_file), 0, SEEK_END);
    assert_true(end >= 0);
    char *text = malloc((size_t)end + 1);
    assert_non_null(text);
    assert_int_equal(lseek(fileno(cap_file), 0, SEEK_SET), 0);
    size_t got = 0;
    while (got < (size_t)end) {
        ssize_t r = read(fileno(cap_file), text + got, (size_t)end - got);
        assert_true(r > 0);
        got += (size_t)r;
    }
    text[got] = '\0';
    fclose(cap_file);
    cap_file = NULL;
    *len = got;
    return text;
}

/* Exactly one line, ending in its only newline. */
static void assert_one_line(const char *text, size_t len)
{
    assert_true(len > 0);
    assert_int_equal(text[len - 1], '\n');
    assert_ptr_equal(memchr(text, '\n', len), text + len - 1);
    assert_int_equal(strlen(text), len); /* no NUL byte inside */
}

/* The captured single JSON line, parsed (new reference). */
static json_t *parse_line(const char *text, size_t len)
{
    assert_one_line(text, len);
    json_error_t e;
    json_t *j = json_loadb(text, len - 1, 0, &e);
    if (!j)
        fail_msg("not JSON (%s at %d): %.200s", e.text, e.position, text);
    return j;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static int setup_json(void **state)
{
    oms_log_init("test_log", OMS_LOG_DEBUG, 0);
    return 0;
}

static int setup_console(void **state)
{
    oms_log_init("test_log", OMS_LOG_DEBUG, 1);
    return 0;
}

/* A 100 KB value is cut at 1024 bytes and marked; the line stays JSON and keeps the
 * fields after it. */
static void test_json_huge_value(void **state)
{
    size_t big = 100 * 1024;
    char *v = malloc(big + 1);
    assert_non_null(v);
    memset(v, 'a', big);
    v[big] = '\0';
    capture_start();
    oms_log_info("huge", "body", v, "after", "kept");
    size_t len;
    char *text = capture_end(&len);
    json_t *j = parse_line(text, len);
    const char *body = json_string_value(json_object_get(j, "body"));
    assert_non_null(body);
    assert_int_equal(strlen(body), 1024 + strlen(CUT));
    assert_true(ends_with(body, CUT));
    assert_int_equal(strncmp(body, v, 1024), 0);
    assert_string_equal(json_string_value(json_object_get(j, "after")), "kept");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "huge");
    json_decref(j);
    free(text);

    /* Exactly 1024 bytes is not cut; a 2-byte character straddling the limit is
     * dropped whole (a half character would make the line invalid UTF-8). */
    v[1024] = '\0';
    capture_start();
    oms_log_info("edge", "v", v);
    text = capture_end(&len);
    j = parse_line(text, len);
    assert_string_equal(json_string_value(json_object_get(j, "v")), v);
    json_decref(j);
    free(text);
    memcpy(v + 1023, "\xc3\xa9", 3); /* 1023 a + "é" */
    capture_start();
    oms_log_info("edge", "v", v);
    text = capture_end(&len);
    j = parse_line(text, len);
    body = json_string_value(json_object_get(j, "v"));
    assert_int_equal(strlen(body), 1023 + strlen(CUT));
    assert_true(ends_with(body, CUT));
    json_decref(j);
    free(text);
    free(v);
}

/* Every byte value 0x01..0xff (0x00 ends a C string) in the message, a key and a
 * value: the line parses, ASCII comes back as it was, the bytes that are not UTF-8
 * come back as U+FFFD, well-formed UTF-8 is kept. */
static void test_json_every_byte(void **state)
{
    char all[256];
    for (int i = 1; i < 256; i++)
        all[i - 1] = (char)i;
    all[255] = '\0';
    /* What the value reads back as: 0x01..0x7f unchanged, then each of the 128 high
     * bytes on its own is no UTF-8 sequence (a lead byte followed by another lead
     * byte, or a stray continuation byte). */
    char want[127 + 128 * 3 + 1];
    size_t o = 0;
    for (int i = 1; i < 128; i++)
        want[o++] = (char)i;
    for (int i = 0; i < 128; i++) {
        memcpy(want + o, "\xef\xbf\xbd", 3);
        o += 3;
    }
    want[o] = '\0';

    capture_start();
    oms_log_warn(all, all, all, "utf8", "h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9d\x84\x9e", "overlong",
                 "\xc0\xaf\xe0\x80\xaf", "surrogate", "\xed\xa0\x80", "nul", NULL);
    size_t len;
    char *text = capture_end(&len);
    json_t *j = parse_line(text, len);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), want);
    assert_string_equal(json_string_value(json_object_get(j, want)), want);
    assert_string_equal(json_string_value(json_object_get(j, "utf8")),
                        "h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9d\x84\x9e");
    assert_string_equal(json_string_value(json_object_get(j, "overlong")),
                        "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(json_string_value(json_object_get(j, "surrogate")),
                        "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_true(json_is_null(json_object_get(j, "nul")));
    json_decref(j);
    free(text);
}

/* More and bigger fields than a line holds, each escaping to six times its size: the
 * line stays within its buffer, parses, and says how many fields it left out. */
static void test_json_line_overflow(void **state)
{
    char v[1001];
    memset(v, '\x01', 1000); /* each byte becomes \u0001 */
    v[1000] = '\0';
    capture_start();
    oms_log_error("many", "f1", v, "f2", v, "f3", v, "f4", v, "f5", v, "f6", v, "f7", v, "f8", v);
    size_t len;
    char *text = capture_end(&len);
    assert_true(len <= 8192);
    json_t *j = parse_line(text, len);
    json_int_t dropped = json_integer_value(json_object_get(j, "fields_dropped"));
    assert_true(dropped > 0);
    assert_true(json_object_size(j) >= 5); /* ts, level, service, caller, msg */
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "many");
    json_decref(j);
    free(text);
}

/* Console: control bytes, ESC sequences, DEL and C1 controls are escaped, values that
 * could pose as several fields are quoted; one line whatever the input. */
static void test_console_escapes(void **state)
{
    capture_start();
    oms_log_warn("login failed\n2026-01-01T00:00:00.000Z info  orders forged line", "user",
                 "eve\r\n\x1b[2J\x1b]0;owned\x07", "note", "a b=c \"q\"", "del", "x\x7fy", "csi",
                 "\xc2\x9b"
                 "31m",
                 "tab", "1\t2", "bad", "\xff", "plain", "ok\\n");
    size_t len;
    char *text = capture_end(&len);
    assert_one_line(text, len);
    for (size_t i = 0; i + 1 < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == 0x7f)
            fail_msg("raw control byte 0x%02x at %zu: %s", c, i, text);
    }
    assert_null(strstr(text, "\xc2\x9b"));
    assert_non_null(strstr(text, "login failed\\n2026-01-01T00:00:00.000Z info  orders forged"));
    assert_non_null(strstr(text, " user=eve\\r\\n\\x1b[2J\\x1b]0;owned\\x07"));
    assert_non_null(strstr(text, " note=\"a b=c \\\"q\\\"\""));
    assert_non_null(strstr(text, " del=x\\x7fy"));
    assert_non_null(strstr(text, " csi=\\xc2\\x9b31m"));
    assert_non_null(strstr(text, " tab=1\\t2"));
    assert_non_null(strstr(text, " bad=\\xff"));
    assert_non_null(strstr(text, " plain=ok\\\\n")); /* a literal backslash stays visible */
    free(text);

    /* Long values are cut on the console too. */
    char v[3000];
    memset(v, 'z', sizeof(v) - 1);
    v[sizeof(v) - 1] = '\0';
    capture_start();
    oms_log_info("long", "v", v);
    text = capture_end(&len);
    assert_one_line(text, len);
    assert_non_null(strstr(text, CUT "\n"));
    assert_true(len < 1024 + 200);
    free(text);
}

/* A URL's password is replaced in messages and values, in both formats, by whichever
 * caller logs it. */
static void test_url_password_redacted(void **state)
{
    const char *url = "postgres://app:s3cret@db.internal:5432/orders";
    for (int console = 0; console < 2; console++) {
        oms_log_init("test_log", OMS_LOG_DEBUG, console);
        capture_start();
        oms_log_error("cannot open database", "url", url, "error", "connection refused");
        oms_log_errorf("cannot open database %s: %s", url, "connection refused");
        size_t len;
        char *text = capture_end(&len);
        assert_null(strstr(text, "s3cret"));
        char *second = strchr(text, '\n');
        assert_non_null(second);
        assert_non_null(strstr(text, "postgres://app:***@db.internal:5432/orders"));
        assert_non_null(strstr(second, "postgres://app:***@db.internal:5432/orders"));
        free(text);
    }
}

int main(void)
{
    const struct CMUnitTest json_tests[] = {
        cmocka_unit_test_setup(test_json_huge_value, setup_json),
        cmocka_unit_test_setup(test_json_every_byte, setup_json),
        cmocka_unit_test_setup(test_json_line_overflow, setup_json),
        cmocka_unit_test_setup(test_console_escapes, setup_console),
        cmocka_unit_test(test_url_password_redacted),
    };
    return cmocka_run_group_tests(json_tests, NULL, NULL);
}
