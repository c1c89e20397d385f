#include "http_guard.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include "oms/log.h"
#include "oms/util.h"

#define GUARD_PERIOD_MS 250

/* One per open connection, owned by the guard's list; libmicrohttpd keeps a pointer
 * to it as the connection's socket context. */
typedef struct guarded_conn {
    struct guarded_conn *prev, *next;
    int fd;
    _Atomic int64_t waiting_since_ms; /* 0: request read, being answered */
    int shut;                         /* shutdown() already called */
} guarded_conn;

struct http_guard {
    pthread_mutex_t lock; /* the list; also held across shutdown() (see notify) */
    pthread_cond_t wake;
    guarded_conn *head;
    int64_t deadline_ms;
    int stopping;
    pthread_t thread;
};

static void *watch(void *arg)
{
    http_guard *g = arg;
    oms_mutex_lock(&g->lock);
    while (!g->stopping) {
        struct timespec ts;
        (void)oms_deadline_after_ns(CLOCK_REALTIME, GUARD_PERIOD_MS * 1000000LL, &ts);
        (void)oms_cond_timedwait(&g->wake, &g->lock, &ts);
        int64_t now = oms_mono_ms();
        for (guarded_conn *c = g->head; c; c = c->next) {
            int64_t since = atomic_load(&c->waiting_since_ms);
            if (c->shut || since == 0 || now - since <= g->deadline_ms)
                continue;
            /* shutdown, not close: the fd stays libmicrohttpd's; its next read sees
             * end of stream and it closes the connection the normal way. */
            if (shutdown(c->fd, SHUT_RDWR) == 0)
                oms_log_warnf("http: request not complete within %lld s, connection dropped",
                              (long long)(g->deadline_ms / 1000));
            c->shut = 1;
        }
    }
    oms_mutex_unlock(&g->lock);
    return NULL;
}

http_guard *http_guard_new(unsigned deadline_s)
{
    http_guard *g = oms_xcalloc(1, sizeof(*g));
    g->deadline_ms = (int64_t)deadline_s * 1000;
    if (pthread_mutex_init(&g->lock, NULL) != 0) {
        free(g);
        return NULL;
    }
    if (pthread_cond_init(&g->wake, NULL) != 0) {
        pthread_mutex_destroy(&g->lock);
        free(g);
        return NULL;
    }
    if (pthread_create(&g->thread, NULL, watch, g) != 0) {
        pthread_cond_destroy(&g->wake);
        pthread_mutex_destroy(&g->lock);
        free(g);
        return NULL;
    }
    return g;
}

void http_guard_free(http_guard *g)
{
    if (!g)
        return;
    oms_mutex_lock(&g->lock);
    g->stopping = 1;
    oms_cond_signal(&g->wake);
    oms_mutex_unlock(&g->lock);
    oms_thread_join(g->thread);
    /* Normally empty: MHD_stop_daemon reported every connection closed. */
    while (g->head) {
        guarded_conn *c = g->head;
        g->head = c->next;
        free(c);
    }
    pthread_cond_destroy(&g->wake);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

void http_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode code)
{
    http_guard *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci)
            return; /* unguarded: the idle timeout still applies */
        guarded_conn *c = oms_xcalloc(1, sizeof(*c));
        c->fd = ci->connect_fd;
        atomic_store(&c->waiting_since_ms, oms_mono_ms());
        oms_mutex_lock(&g->lock);
        c->next = g->head;
        if (g->head)
            g->head->prev = c;
        g->head = c;
        oms_mutex_unlock(&g->lock);
        *socket_context = c;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        /* libmicrohttpd closes the fd after this returns; unlinking under the lock the
         * watcher holds while it calls shutdown() means it never touches a closed (or
         * reused) descriptor. */
        guarded_conn *c = *socket_context;
        oms_mutex_lock(&g->lock);
        if (c->prev)
            c->prev->next = c->next;
        else
            g->head = c->next;
        if (c->next)
            c->next->prev = c->prev;
        oms_mutex_unlock(&g->lock);
        free(c);
        *socket_context = NULL;
    }
}

static guarded_conn *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        conn ? MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT) : NULL;
    return ci ? ci->socket_context : NULL;
}

void http_guard_request_read(struct MHD_Connection *conn)
{
    guarded_conn *c = conn_of(conn);
    if (c)
        atomic_store(&c->waiting_since_ms, 0);
}

void http_guard_request_done(struct MHD_Connection *conn)
{
    guarded_conn *c = conn_of(conn);
    if (c)
        atomic_store(&c->waiting_since_ms, oms_mono_ms());
}
