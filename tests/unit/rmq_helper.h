/* Test helper: a private RabbitMQ node for one test process, started and stopped with
 * scripts/rabbitmq.sh, plus a few raw rabbitmq-c calls tests use to look at queues
 * (basic.get) without going through the code under test.
 *
 * The broker lives under a fresh temp dir and a free port; rmq_start registers an
 * atexit hook so a crashing or failing test still stops it. */
#ifndef OMS_TEST_RMQ_HELPER_H
#define OMS_TEST_RMQ_HELPER_H

#include <arpa/inet.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#else
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#endif

#include "oms/amqp.h"
#include "oms/util.h"

typedef struct rmq_node {
    char script[PATH_MAX];   /* scripts/rabbitmq.sh */
    char tmp[PATH_MAX - 16]; /* our temp dir (removed at the end) */
    char dir[PATH_MAX];      /* broker state: tmp/rmq */
    int port;
    int running;
    int64_t start_ms; /* duration of the last start */
} rmq_node;

static rmq_node rmq_g;

static inline int rmq_file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* OMS_SOURCE_DIR if set, else the first parent of this executable that holds
 * scripts/rabbitmq.sh (CMake does not tell the test where the source tree is). */
static inline int rmq_find_script(char *out, size_t size)
{
    const char *src = getenv("OMS_SOURCE_DIR");
    if (src && *src) {
        snprintf(out, size, "%s/scripts/rabbitmq.sh", src);
        return rmq_file_exists(out) ? 0 : -1;
    }
    char dir[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", dir, sizeof(dir) - 1);
    if (n <= 0)
        return -1;
    dir[n] = '\0';
    for (;;) {
        char *slash = strrchr(dir, '/');
        if (!slash)
            return -1;
        *slash = '\0';
        int w = snprintf(out, size, "%s/scripts/rabbitmq.sh", *dir ? dir : "");
        if (w > 0 && (size_t)w < size && rmq_file_exists(out))
            return 0;
        if (!*dir)
            return -1;
    }
}

static inline int rmq_port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

/* A port P in 10000..19999 with P, P+20000 (Erlang dist) and P+30000 (epmd) free:
 * the script derives the latter two from P. */
static inline int rmq_pick_port(void)
{
    /* Random, not pid/clock based: tests started together (ctest -j) must not pick
     * the same port. */
    for (int i = 0; i < 200; i++) {
        char hex[5];
        if (oms_random_hex(hex, 2) != OMS_OK)
            return -1;
        int p = 10000 + (int)(strtoul(hex, NULL, 16) % 10000);
        if (rmq_port_free(p) && rmq_port_free(p + 20000) && rmq_port_free(p + 30000))
            return p;
    }
    return -1;
}

static inline int rmq_run(const char *verb)
{
    char cmd[3 * PATH_MAX];
    if (strcmp(verb, "start") == 0)
        snprintf(cmd, sizeof(cmd), "'%s' start '%s' %d", rmq_g.script, rmq_g.dir, rmq_g.port);
    else
        snprintf(cmd, sizeof(cmd), "'%s' stop '%s'", rmq_g.script, rmq_g.dir);
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Starts the node again on the same dir and port (state is kept). */
static inline int rmq_start_again(void)
{
    int64_t t0 = oms_mono_ms();
    if (rmq_run("start") != 0)
        return -1;
    rmq_g.start_ms = oms_mono_ms() - t0;
    rmq_g.running = 1;
    return 0;
}

static inline int rmq_stop(void)
{
    if (!rmq_g.dir[0])
        return 0;
    int rc = rmq_run("stop");
    rmq_g.running = 0;
    return rc;
}

static inline void rmq_atexit(void)
{
    if (rmq_g.running)
        (void)rmq_stop();
    if (rmq_g.tmp[0]) {
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", rmq_g.tmp);
        (void)system(cmd);
        rmq_g.tmp[0] = '\0';
    }
}

/* Creates a temp dir, picks a port, starts the node; fills cfg for clients. */
static inline int rmq_start(oms_amqp_config *cfg)
{
    static int registered;
    if (rmq_find_script(rmq_g.script, sizeof(rmq_g.script)) != 0) {
        fprintf(stderr, "rmq_helper: scripts/rabbitmq.sh not found (set OMS_SOURCE_DIR)\n");
        return -1;
    }
    const char *t = getenv("TMPDIR");
    snprintf(rmq_g.tmp, sizeof(rmq_g.tmp), "%s/oms-rmq-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(rmq_g.tmp)) {
        fprintf(stderr, "rmq_helper: mkdtemp: %s\n", strerror(errno));
        rmq_g.tmp[0] = '\0';
        return -1;
    }
    snprintf(rmq_g.dir, sizeof(rmq_g.dir), "%s/rmq", rmq_g.tmp);
    if (!registered) {
        registered = 1;
        atexit(rmq_atexit);
    }
    /* The free-port check races with other processes; a start that fails on a taken
     * port is retried on another one. */
    int started = 0;
    for (int attempt = 0; attempt < 3 && !started; attempt++) {
        rmq_g.port = rmq_pick_port();
        if (rmq_g.port < 0) {
            fprintf(stderr, "rmq_helper: no free port\n");
            return -1;
        }
        started = rmq_start_again() == 0;
    }
    if (!started)
        return -1;
    fprintf(stderr, "rmq_helper: broker on 127.0.0.1:%d started in %lld ms\n", rmq_g.port,
            (long long)rmq_g.start_ms);
    cfg->host = "127.0.0.1";
    cfg->port = rmq_g.port;
    cfg->user = "guest";
    cfg->password = "guest";
    cfg->vhost = "/";
    return 0;
}

/* Stops the node and removes the temp dir. */
static inline void rmq_finish(void)
{
    rmq_atexit();
}

/* Polls cond(ud) every 20 ms until it holds or ms pass; 1 when it held. */
static inline int rmq_wait_for(int (*cond)(void *), void *ud, int ms)
{
    int64_t deadline = oms_mono_ms() + ms;
    for (;;) {
        if (cond(ud))
            return 1;
        if (oms_mono_ms() >= deadline)
            return 0;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* ---- raw rabbitmq-c access, independent of common/amqp.c ---------------------------- */

static inline amqp_connection_state_t rmq_raw_connect(void)
{
    amqp_connection_state_t c = amqp_new_connection();
    if (!c)
        return NULL;
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    struct timeval tv = {5, 0};
    if (!s || amqp_socket_open_noblock(s, "127.0.0.1", rmq_g.port, &tv) != AMQP_STATUS_OK)
        goto fail;
    if (amqp_set_rpc_timeout(c, &tv) != AMQP_STATUS_OK)
        goto fail;
    amqp_rpc_reply_t r = amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest");
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        goto fail;
    if (!amqp_channel_open(c, 1))
        goto fail;
    return c;
fail:
    amqp_destroy_connection(c);
    return NULL;
}

static inline void rmq_raw_close(amqp_connection_state_t c)
{
    (void)amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    (void)amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

/* Declares a durable queue bound to a durable fanout exchange. 0 on success. */
static inline int rmq_raw_bind(const char *exchange, const char *queue)
{
    amqp_connection_state_t c = rmq_raw_connect();
    if (!c)
        return -1;
    int rc = -1;
    amqp_exchange_declare(c, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes("fanout"), 0, 1, 0,
                          0, amqp_empty_table);
    if (amqp_get_rpc_reply(c).reply_type != AMQP_RESPONSE_NORMAL)
        goto out;
    amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
    if (amqp_get_rpc_reply(c).reply_type != AMQP_RESPONSE_NORMAL)
        goto out;
    amqp_queue_bind(c, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange), amqp_empty_bytes,
                    amqp_empty_table);
    if (amqp_get_rpc_reply(c).reply_type != AMQP_RESPONSE_NORMAL)
        goto out;
    rc = 0;
out:
    rmq_raw_close(c);
    return rc;
}

typedef struct rmq_got {
    char body[1024];
    char message_id[128];
    char traceparent[64];
    int retry_count; /* -1 when the header is missing */
} rmq_got;

static inline void rmq_copy_bytes(char *dst, size_t size, amqp_bytes_t b)
{
    size_t n = b.len < size - 1 ? b.len : size - 1;
    if (n)
        memcpy(dst, b.bytes, n);
    dst[n] = '\0';
}

/* basic.get with auto-ack from queue: 1 and *got filled when a message was there,
 * 0 when the queue is empty, -1 on error. */
static inline int rmq_raw_get(const char *queue, rmq_got *got)
{
    amqp_connection_state_t c = rmq_raw_connect();
    if (!c)
        return -1;
    int rc = -1;
    amqp_rpc_reply_t r = amqp_basic_get(c, 1, amqp_cstring_bytes(queue), 1);
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        goto out;
    if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) {
        rc = 0;
        goto out;
    }
    amqp_message_t m;
    r = amqp_read_message(c, 1, &m, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        goto out;
    memset(got, 0, sizeof(*got));
    got->retry_count = -1;
    rmq_copy_bytes(got->body, sizeof(got->body), m.body);
    if (m.properties._flags & AMQP_BASIC_HEADERS_FLAG) {
        for (int i = 0; i < m.properties.headers.num_entries; i++) {
            const amqp_table_entry_t *e = &m.properties.headers.entries[i];
            char key[64];
            rmq_copy_bytes(key, sizeof(key), e->key);
            if (strcmp(key, "message-id") == 0 && e->value.kind == AMQP_FIELD_KIND_UTF8)
                rmq_copy_bytes(got->message_id, sizeof(got->message_id), e->value.value.bytes);
            else if (strcmp(key, "traceparent") == 0 && e->value.kind == AMQP_FIELD_KIND_UTF8)
                rmq_copy_bytes(got->traceparent, sizeof(got->traceparent), e->value.value.bytes);
            else if (strcmp(key, "x-retry-count") == 0 && e->value.kind == AMQP_FIELD_KIND_I32)
                got->retry_count = e->value.value.i32;
        }
    }
    amqp_destroy_message(&m);
    rc = 1;
out:
    rmq_raw_close(c);
    return rc;
}

#endif
