/* Small shared helpers the hot path now relies on: timestamps written by hand, trace
 * ids from a per-thread generator, and background threads giving way to requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "oms/trace.h"
#include "oms/util.h"

static void test_rfc3339(void **state)
{
    (void)state;
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {1700000000123LL, "2023-11-14T22:13:20.123Z"},
        {951782400999LL, "2000-02-29T00:00:00.999Z"}, /* leap day */
        {1795592644000LL, "2026-11-25T07:44:04.000Z"},
        {-5, "1970-01-01T00:00:00.000Z"},                /* never before the epoch */
        {253402300800000LL, "9999-12-31T23:59:59.999Z"}, /* year 10000: clamped */
        {INT64_MAX, "9999-12-31T23:59:59.999Z"},
    };
    for (size_t i = 0; i < OMS_NELEM(cases); i++) {
        char out[32];
        memset(out, 'X', sizeof(out));
        oms_format_rfc3339(cases[i].ms, out);
        assert_string_equal(out, cases[i].want);
    }
}

enum { IDS_PER_THREAD = 5000, ID_THREADS = 4 };
static uint8_t g_ids[ID_THREADS * IDS_PER_THREAD][8];

static void *make_ids(void *arg)
{
    size_t base = (size_t)(uintptr_t)arg * IDS_PER_THREAD;
    for (size_t i = 0; i < IDS_PER_THREAD; i++) {
        oms_trace_ctx c;
        oms_trace_new_root(&c);
        memcpy(g_ids[base + i], c.span_id, 8);
    }
    return NULL;
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, 8);
}

/* 20,000 span ids from four threads: none zero, no two equal (a generator shared by
 * mistake, or seeded alike per thread, would repeat). */
static void test_span_ids_unique_across_threads(void **state)
{
    (void)state;
    pthread_t th[ID_THREADS];
    for (uintptr_t i = 0; i < ID_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, make_ids, (void *)i), 0);
    for (int i = 0; i < ID_THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    static const uint8_t zero[8];
    for (size_t i = 0; i < ID_THREADS * IDS_PER_THREAD; i++)
        assert_true(memcmp(g_ids[i], zero, 8) != 0);
    qsort(g_ids, ID_THREADS * IDS_PER_THREAD, 8, cmp_id);
    for (size_t i = 1; i < ID_THREADS * IDS_PER_THREAD; i++)
        if (memcmp(g_ids[i - 1], g_ids[i], 8) == 0)
            fail_msg("span id repeated");
}

typedef struct nice_seen {
    int before, after;
} nice_seen;

static int my_nice(void)
{
    errno = 0;
    return getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
}

static void *background(void *arg)
{
    nice_seen *n = arg;
    n->before = my_nice();
    oms_thread_background();
    n->after = my_nice();
    return NULL;
}

/* The calling thread gets OMS_BACKGROUND_NICE more (up to the kernel's limit of 19);
 * other threads keep theirs. */
static void test_background_thread_nice(void **state)
{
    (void)state;
    int main_before = my_nice();
    nice_seen n = {0, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, background, &n), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    int want = n.before + OMS_BACKGROUND_NICE > 19 ? 19 : n.before + OMS_BACKGROUND_NICE;
    assert_int_equal(n.after, want);
    assert_int_equal(my_nice(), main_before);
}

/* The password of a URL's user-info becomes ***, whatever surrounds the URL; nothing
 * else changes. */
static void test_url_redact(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"postgres://app:s3cret@db:5432/orders", "postgres://app:***@db:5432/orders"},
        {"postgresql://app:s3cret@db", "postgresql://app:***@db"},
        {"amqp://guest:guest@127.0.0.1:5672/%2f", "amqp://guest:***@127.0.0.1:5672/%2f"},
        {"postgres://app:@db/x", "postgres://app:***@db/x"},     /* empty password */
        {"postgres://app@db/x", "postgres://app@db/x"},          /* no password */
        {"postgres://db:5432/x", "postgres://db:5432/x"},        /* no user-info */
        {"http://h/p?u=a:b@c", "http://h/p?u=a:b@c"},            /* '@' after the path */
        {"postgres://u:p@ss?w#d@db/x", "postgres://u:***@db/x"}, /* raw @ ? # in it */
        {"var/orders.db", "var/orders.db"},
        {"", ""},
        /* A message that echoes a URL, twice, with quotes around one. */
        {"invalid URI \"postgres://u:pw@[::1/x\" and http://a:b@etcd:2379 down",
         "invalid URI \"postgres://u:***@[::1/x\" and http://a:***@etcd:2379 down"},
    };
    for (size_t i = 0; i < OMS_NELEM(cases); i++) {
        char out[256];
        size_t n = oms_url_redact(cases[i].in, out, sizeof(out));
        assert_string_equal(out, cases[i].want);
        assert_int_equal(n, strlen(cases[i].want));
    }

    /* Too small: cut, still terminated, the full length reported; never a byte past
     * outsz (the canary after it stays). */
    char small[12];
    memset(small, 'Z', sizeof(small));
    size_t n = oms_url_redact("postgres://app:s3cret@db/x", small, 8);
    assert_int_equal(n, strlen("postgres://app:***@db/x"));
    assert_string_equal(small, "postgre");
    assert_int_equal(small[8], 'Z');
    /* Cut inside the password's place: the secret is not there either. */
    char mid[20];
    oms_url_redact("postgres://app:s3cret@db/x", mid, sizeof(mid));
    assert_string_equal(mid, "postgres://app:***@");
    assert_int_equal(oms_url_redact("abc", small, 0), 3);
    assert_int_equal(small[0], 'p'); /* outsz 0: nothing written */
    assert_int_equal(oms_url_redact(NULL, small, sizeof(small)), 0);
    assert_string_equal(small, "");
}

/* The pthread wrappers: a monotonic timed wait nobody signals ends with ETIMEDOUT at
 * its deadline, not before; a signalled one returns 0. */
static void test_cond_wrappers(void **state)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    assert_int_equal(oms_cond_init_monotonic(&cv), 0);
    struct timespec until;
    int64_t start = oms_mono_ms();
    oms_mono_deadline_ms(30, &until);
    oms_mutex_lock(&mu);
    int rc = 0;
    while (rc != ETIMEDOUT)
        rc = oms_cond_timedwait(&cv, &mu, &until);
    oms_mutex_unlock(&mu);
    assert_true(oms_mono_ms() - start >= 29);

    /* A deadline already passed (negative taken as 0) times out at once. */
    oms_mono_deadline_ms(-5, &until);
    oms_mutex_lock(&mu);
    assert_int_equal(oms_cond_timedwait(&cv, &mu, &until), ETIMEDOUT);
    oms_cond_signal(&cv);    /* nobody waits: a no-op, not an error */
    oms_cond_broadcast(&cv); /* likewise */
    oms_mutex_unlock(&mu);
    pthread_cond_destroy(&cv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc3339),
        cmocka_unit_test(test_span_ids_unique_across_threads),
        cmocka_unit_test(test_background_thread_nice),
        cmocka_unit_test(test_url_redact),
        cmocka_unit_test(test_cond_wrappers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
