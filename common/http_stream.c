#include "http_stream.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "oms/log.h"
#include "oms/metrics.h"
#include "oms/status.h"
#include "oms/util.h"

/* A client that does not read what it was sent (or reads slower than events come) is
 * dropped rather than buffered for without end. */
#define STREAM_MAX_PENDING (256 * 1024)

struct oms_http_stream {
    pthread_mutex_t mu;
    int refs; /* under mu */
    struct MHD_Connection *conn;
    http_streams *list;
    oms_http_stream *prev, *next; /* in list, under the list's lock; linked: in_list */
    int in_list;
    int suspended; /* the reader suspended the connection; a send resumes it */
    int ended;     /* no more data: the reader finishes the response */
    int closed;    /* on_closed has run (or is running) */
    char *buf;     /* pending bytes buf[off..len) */
    size_t off, len, cap;
    oms_http_stream_closed on_closed;
    void *arg;
};

struct http_streams {
    pthread_mutex_t mu;
    pthread_cond_t wake;
    oms_http_stream *head;
    int count, max;
    int ending;
    int64_t heartbeat_ms;
    pthread_t thread;
    int have_thread;
};

static void count_gauge(int n)
{
    oms_metrics_gauge_set("http_streams_open", "Server-Sent Events streams open.", "", n);
}

static void stream_unref(oms_http_stream *s)
{
    oms_mutex_lock(&s->mu);
    int left = --s->refs;
    oms_mutex_unlock(&s->mu);
    if (left > 0)
        return;
    pthread_mutex_destroy(&s->mu);
    free(s->buf);
    free(s);
}

/* Wakes the connection if the reader suspended it; under s->mu. Resuming is only
 * valid while the daemon runs, which the stop order guarantees: every stream ends
 * (and is resumed) before the daemon stops, and an ended stream is never resumed
 * again. */
static void wake_locked(oms_http_stream *s)
{
    if (!s->suspended)
        return;
    s->suspended = 0;
    MHD_resume_connection(s->conn);
}

/* Appends under s->mu; OMS_UNAVAILABLE when ended, or when the client is too far
 * behind (then it is ended). */
static int append_locked(oms_http_stream *s, const char *data, size_t len)
{
    if (s->ended)
        return OMS_UNAVAILABLE;
    if (s->off == s->len)
        s->off = s->len = 0;
    if (s->len - s->off + len > STREAM_MAX_PENDING) {
        oms_log_warn("http: event stream client is not reading; stream ended");
        s->ended = 1;
        wake_locked(s);
        return OMS_UNAVAILABLE;
    }
    if (s->len + len > s->cap) {
        /* Compact first: what was read is at the front. */
        if (s->off) {
            memmove(s->buf, s->buf + s->off, s->len - s->off);
            s->len -= s->off;
            s->off = 0;
        }
        size_t cap = s->cap ? s->cap : 1024;
        while (cap < s->len + len)
            cap *= 2;
        if (cap != s->cap) {
            s->buf = oms_xrealloc(s->buf, cap);
            s->cap = cap;
        }
    }
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    wake_locked(s);
    return OMS_OK;
}

int oms_http_stream_send(oms_http_stream *s, const char *data, size_t len)
{
    if (!s)
        return OMS_UNAVAILABLE;
    oms_mutex_lock(&s->mu);
    int rc = append_locked(s, data, len);
    oms_mutex_unlock(&s->mu);
    return rc;
}

void oms_http_stream_release(oms_http_stream *s)
{
    if (s)
        stream_unref(s);
}

/* libmicrohttpd's content reader: what is buffered, the end once ended, or nothing
 * for now, with the connection suspended until a send. */
static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    oms_http_stream *s = cls;
    (void)pos;
    ssize_t n;
    oms_mutex_lock(&s->mu);
    if (s->off < s->len) {
        size_t k = s->len - s->off;
        if (k > max)
            k = max;
        memcpy(out, s->buf + s->off, k);
        s->off += k;
        n = (ssize_t)k;
    } else if (s->ended) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        s->suspended = 1;
        MHD_suspend_connection(s->conn);
        n = 0;
    }
    oms_mutex_unlock(&s->mu);
    return n;
}

/* The end of a stream, once: out of the list, on_closed, the response's reference. */
static void stream_finish(oms_http_stream *s)
{
    http_streams *ss = s->list;
    oms_mutex_lock(&ss->mu);
    if (s->in_list) {
        if (s->prev)
            s->prev->next = s->next;
        else
            ss->head = s->next;
        if (s->next)
            s->next->prev = s->prev;
        s->in_list = 0;
        ss->count--;
        count_gauge(ss->count);
    }
    oms_mutex_unlock(&ss->mu);
    oms_mutex_lock(&s->mu);
    s->ended = 1;
    int run = !s->closed;
    s->closed = 1;
    oms_mutex_unlock(&s->mu);
    if (run && s->on_closed)
        s->on_closed(s, s->arg);
    stream_unref(s);
}

/* libmicrohttpd destroys the response: the connection is gone or finished. */
static void stream_response_free(void *cls)
{
    stream_finish(cls);
}

void http_stream_abandon(oms_http_stream *s)
{
    if (s)
        stream_finish(s);
}

struct MHD_Response *http_stream_response(oms_http_stream *s)
{
    /* The block size bounds one read, and libmicrohttpd allocates it with every
     * stream's response: events are ~0.5 KiB, a longer one takes two reads. */
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 1024, stream_read,
                                                               s, stream_response_free);
    if (!r)
        return NULL;
    if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream") != MHD_YES ||
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
        MHD_add_response_header(r, "X-Accel-Buffering", "no") != MHD_YES) {
        /* Destroying it runs stream_response_free, which the caller must not repeat:
         * hand back a bare response instead, the headers are a nicety for proxies. */
        oms_log_warn("http: event stream headers refused");
    }
    return r;
}

oms_http_stream *http_stream_new(http_streams *ss, struct MHD_Connection *conn,
                                 oms_http_stream_closed on_closed, void *arg)
{
    oms_http_stream *s = oms_xcalloc(1, sizeof(*s));
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        return NULL;
    }
    s->refs = 2;
    s->conn = conn;
    s->list = ss;
    s->on_closed = on_closed;
    s->arg = arg;
    oms_mutex_lock(&ss->mu);
    if (ss->ending || ss->count >= ss->max) {
        oms_mutex_unlock(&ss->mu);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    s->next = ss->head;
    if (ss->head)
        ss->head->prev = s;
    ss->head = s;
    s->in_list = 1;
    ss->count++;
    count_gauge(ss->count);
    oms_mutex_unlock(&ss->mu);
    return s;
}

static void *heartbeat_main(void *arg)
{
    http_streams *ss = arg;
    static const char hb[] = ": hb\n\n";
    oms_mutex_lock(&ss->mu);
    while (!ss->ending) {
        struct timespec ts;
        oms_mono_deadline_ms(ss->heartbeat_ms, &ts);
        while (!ss->ending && oms_cond_timedwait(&ss->wake, &ss->mu, &ts) == 0)
            ;
        if (ss->ending)
            break;
        /* Under the list's lock: a stream in the list is alive (its finish unlinks it
         * first, under this lock). */
        for (oms_http_stream *s = ss->head; s; s = s->next)
            (void)oms_http_stream_send(s, hb, sizeof(hb) - 1);
    }
    oms_mutex_unlock(&ss->mu);
    return NULL;
}

http_streams *http_streams_new(long long max, long long heartbeat_ms)
{
    http_streams *ss = oms_xcalloc(1, sizeof(*ss));
    ss->max = max > 0 ? (int)max : 2000;
    ss->heartbeat_ms = heartbeat_ms > 0 ? heartbeat_ms : 15000;
    if (pthread_mutex_init(&ss->mu, NULL) != 0)
        goto fail_mu;
    if (oms_cond_init_monotonic(&ss->wake) != 0)
        goto fail_cond;
    if (pthread_create(&ss->thread, NULL, heartbeat_main, ss) != 0)
        goto fail_thread;
    ss->have_thread = 1;
    count_gauge(0);
    return ss;
fail_thread:
    pthread_cond_destroy(&ss->wake);
fail_cond:
    pthread_mutex_destroy(&ss->mu);
fail_mu:
    free(ss);
    return NULL;
}

void http_streams_end_all(http_streams *ss)
{
    if (!ss)
        return;
    oms_mutex_lock(&ss->mu);
    ss->ending = 1;
    oms_cond_signal(&ss->wake);
    for (oms_http_stream *s = ss->head; s; s = s->next) {
        oms_mutex_lock(&s->mu);
        s->ended = 1;
        wake_locked(s);
        oms_mutex_unlock(&s->mu);
    }
    oms_mutex_unlock(&ss->mu);
    if (ss->have_thread) {
        oms_thread_join(ss->thread);
        ss->have_thread = 0;
    }
}

void http_streams_free(http_streams *ss)
{
    if (!ss)
        return;
    http_streams_end_all(ss);
    /* Normally empty: stopping the daemon destroyed every stream's response. */
    if (ss->head)
        oms_log_warnf("http: %d event streams outlived their server", ss->count);
    pthread_cond_destroy(&ss->wake);
    pthread_mutex_destroy(&ss->mu);
    free(ss);
}

int http_streams_count(http_streams *ss)
{
    if (!ss)
        return 0;
    oms_mutex_lock(&ss->mu);
    int n = ss->count;
    oms_mutex_unlock(&ss->mu);
    return n;
}
