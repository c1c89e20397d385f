#include "oms/util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "oms/status.h"

int oms_random_bytes(unsigned char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return OMS_ERR;
        }
        got += (size_t)r;
    }
    return OMS_OK;
}

int oms_random_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char buf[64];
    if (nbytes > sizeof(buf) || oms_random_bytes(buf, nbytes) != OMS_OK)
        return OMS_ERR;
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hex[buf[i] >> 4];
        out[2 * i + 1] = hex[buf[i] & 15];
    }
    out[2 * nbytes] = '\0';
    return OMS_OK;
}

int oms_new_id(char out[25])
{
    return oms_random_hex(out, 12);
}

int64_t oms_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t oms_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes v as exactly `width` decimal digits (v is within range by construction). */
static char *put_digits(char *o, int v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        o[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return o + width;
}

/* By hand rather than strftime + snprintf: every order's JSON carries two of these. */
void oms_format_rfc3339(int64_t unix_ms, char out[32])
{
    if (unix_ms < 0)
        unix_ms = 0; /* no timestamp before 1970 is ours; keep the fixed shape */
    time_t secs = (time_t)(unix_ms / 1000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm) || tm.tm_year + 1900 > 9999) {
        memcpy(out, "9999-12-31T23:59:59.999Z", 25);
        return;
    }
    char *o = put_digits(out, tm.tm_year + 1900, 4);
    *o++ = '-';
    o = put_digits(o, tm.tm_mon + 1, 2);
    *o++ = '-';
    o = put_digits(o, tm.tm_mday, 2);
    *o++ = 'T';
    o = put_digits(o, tm.tm_hour, 2);
    *o++ = ':';
    o = put_digits(o, tm.tm_min, 2);
    *o++ = ':';
    o = put_digits(o, tm.tm_sec, 2);
    *o++ = '.';
    o = put_digits(o, (int)(unix_ms % 1000), 3);
    memcpy(o, "Z", 2);
}

static void oom(void)
{
    static const char msg[] = "fatal: out of memory\n";
    fwrite(msg, 1, sizeof(msg) - 1, stderr);
    abort();
}

char *oms_strdup(const char *s)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        oom();
    return d;
}

void *oms_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom();
    return p;
}

void *oms_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom();
    return p;
}

void *oms_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom();
    return q;
}

int oms_valid_id(const char *s)
{
    if (!s)
        return 0;
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == ':' || c == '-';
        if (!ok || n >= 64)
            return 0;
    }
    return n >= 1;
}

int oms_ct_equal(const void *a, const void *b, size_t n)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= x[i] ^ y[i];
    return d == 0;
}

/* The bounded output of oms_url_redact: len counts every byte of the result, stored
 * or not. */
typedef struct {
    char *buf;
    size_t cap;
    size_t len;
} redact_out;

static void redact_put(redact_out *r, const char *s, size_t n)
{
    if (r->cap > 0 && r->len < r->cap - 1) {
        size_t room = r->cap - 1 - r->len;
        memcpy(r->buf + r->len, s, n < room ? n : room);
    }
    r->len += n;
}

size_t oms_url_redact(const char *text, char *out, size_t outsz)
{
    redact_out r = {out, outsz, 0};
    const char *p = text ? text : "";
    for (;;) {
        const char *sep = strstr(p, "://");
        if (!sep) {
            redact_put(&r, p, strlen(p));
            break;
        }
        const char *auth = sep + 3;
        size_t alen = strcspn(auth, "/ \t\r\n\"'<>");
        const char *at = NULL;
        for (size_t i = 0; i < alen; i++)
            if (auth[i] == '@')
                at = auth + i;
        const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        if (!colon) {
            redact_put(&r, p, (size_t)(auth + alen - p));
            p = auth + alen;
            continue;
        }
        redact_put(&r, p, (size_t)(colon + 1 - p));
        redact_put(&r, "***", 3);
        p = at; /* "@host..." is copied by the next round */
    }
    if (outsz > 0)
        out[r.len < outsz ? r.len : outsz - 1] = '\0';
    return r.len;
}

static void signal_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
}

void oms_signals_block(void)
{
    sigset_t set;
    signal_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int oms_signals_wait(void)
{
    sigset_t set;
    signal_set(&set);
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    return sig;
}

void oms_thread_background(void)
{
    /* Linux: nice is per thread, addressed by its tid. */
    pid_t tid = (pid_t)syscall(SYS_gettid);
    errno = 0;
    int cur = getpriority(PRIO_PROCESS, (id_t)tid);
    if (cur == -1 && errno != 0)
        return;
    (void)setpriority(PRIO_PROCESS, (id_t)tid, cur + OMS_BACKGROUND_NICE);
}

int oms_deadline_after_ns(clockid_t clock, int64_t ns, struct timespec *out)
{
    if (clock_gettime(clock, out) != 0)
        return OMS_ERR;
    if (ns < 0)
        ns = 0;
    out->tv_sec += (time_t)(ns / 1000000000LL);
    out->tv_nsec += (long)(ns % 1000000000LL);
    if (out->tv_nsec >= 1000000000L) {
        out->tv_sec++;
        out->tv_nsec -= 1000000000L;
    }
    return OMS_OK;
}

/* A pthread call on an object of ours (or the monotonic clock) failed: see util.h.
 * rc is the error number. */
static void die_errno(const char *what, int rc)
{
    fprintf(stderr, "%s: %s\n", what, strerror(rc));
    abort();
}

void oms_mutex_lock(pthread_mutex_t *mu)
{
    int rc = pthread_mutex_lock(mu);
    if (rc != 0)
        die_errno("pthread_mutex_lock", rc);
}

void oms_mutex_unlock(pthread_mutex_t *mu)
{
    int rc = pthread_mutex_unlock(mu);
    if (rc != 0)
        die_errno("pthread_mutex_unlock", rc);
}

void oms_cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu)
{
    int rc = pthread_cond_wait(cv, mu);
    if (rc != 0)
        die_errno("pthread_cond_wait", rc);
}

int oms_cond_timedwait(pthread_cond_t *cv, pthread_mutex_t *mu, const struct timespec *until)
{
    int rc = pthread_cond_timedwait(cv, mu, until);
    if (rc != 0 && rc != ETIMEDOUT)
        die_errno("pthread_cond_timedwait", rc);
    return rc;
}

void oms_cond_signal(pthread_cond_t *cv)
{
    int rc = pthread_cond_signal(cv);
    if (rc != 0)
        die_errno("pthread_cond_signal", rc);
}

void oms_cond_broadcast(pthread_cond_t *cv)
{
    int rc = pthread_cond_broadcast(cv);
    if (rc != 0)
        die_errno("pthread_cond_broadcast", rc);
}

void oms_thread_join(pthread_t thread)
{
    int rc = pthread_join(thread, NULL);
    if (rc != 0)
        die_errno("pthread_join", rc);
}

int oms_cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc != 0)
        return rc;
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(cv, &attr);
    (void)pthread_condattr_destroy(&attr); /* fails only for an invalid attr */
    return rc;
}

void oms_mono_deadline_ms(int64_t ms, struct timespec *out)
{
    if (oms_deadline_after_ns(CLOCK_MONOTONIC, ms * 1000000LL, out) != OMS_OK)
        die_errno("clock_gettime(CLOCK_MONOTONIC)", errno);
}

static _Thread_local int64_t work_deadline_ms;

void oms_work_deadline_set(int64_t mono_ms)
{
    work_deadline_ms = mono_ms > 0 ? mono_ms : 0;
}

int64_t oms_work_deadline(void)
{
    return work_deadline_ms;
}
