/* RabbitMQ transport over rabbitmq-c 0.11 (oms/amqp.h; the topology in docs/amqp.md).
 *
 * rabbitmq-c has no reconnect, no confirm-wait helper, and a connection is not
 * thread-safe. So: every publisher and every consumer owns one connection,
 * used by one thread only; any socket or protocol error throws the whole connection
 * away and the next call (publisher) or the next loop turn (consumer) builds a fresh
 * one and re-declares the topology. All blocking calls have timeouts so a dead broker
 * never pins a thread: connect/handshake/RPC timeouts on the connection, and our own
 * deadlines around frame waits. */
#include "oms/amqp.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#else
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#endif

#include "oms/events.h"
#include "oms/log.h"
#include "oms/metrics.h"
#include "oms/trace.h"
#include "oms/tracer.h"
#include "oms/util.h"

#define AMQP_CHANNEL 1
#define AMQP_HEARTBEAT_S 10
#define AMQP_FRAME_MAX 131072
#define AMQP_IO_TIMEOUT_MS 5000 /* connect, login, each RPC */
#define AMQP_REPUBLISH_TIMEOUT_MS 5000
#define AMQP_POLL_MS 200 /* consumer's stop-flag latency */
#define AMQP_BACKOFF_MIN_MS 100
#define AMQP_BACKOFF_MAX_MS 5000
#define AMQP_MAX_BODY (4u << 20) /* larger deliveries are dead-lettered unread */

/* ---- connection settings, owned copies ---------------------------------------- */

#define AMQP_MAX_NODES 16

typedef struct amqp_node {
    char *host;
    int port;
    char *addr; /* "host:port" as configured, for logs and *_node() */
} amqp_node;

typedef struct amqp_settings {
    amqp_node nodes[AMQP_MAX_NODES];
    size_t nnodes; /* >= 1 once parsed */
    char *addrs;   /* every node, comma-separated, for logs */
    char *user;
    char *password;
    char *vhost;
    int quorum;    /* RABBITMQ_QUEUE_TYPE=quorum */
    char *invalid; /* why cfg was refused (then nnodes is 0), else NULL */
} amqp_settings;

static void settings_free(amqp_settings *s)
{
    for (size_t i = 0; i < s->nnodes; i++) {
        free(s->nodes[i].host);
        free(s->nodes[i].addr);
    }
    free(s->addrs);
    free(s->user);
    free(s->password);
    free(s->vhost);
    free(s->invalid);
    memset(s, 0, sizeof(*s));
}

/* Parses one RABBITMQ_ADDRS entry, "host:port", "host" or "[v6]:port" (len bytes at e,
 * spaces trimmed by the caller), into n. -1 when malformed. */
static int node_parse(const char *e, size_t len, int default_port, amqp_node *n)
{
    const char *host = e, *port = NULL;
    size_t hlen = len;
    if (len > 0 && e[0] == '[') {
        const char *close = memchr(e, ']', len);
        if (!close || close == e + 1)
            return -1;
        host = e + 1;
        hlen = (size_t)(close - host);
        if (close + 1 < e + len) {
            if (close[1] != ':')
                return -1;
            port = close + 2;
        }
    } else {
        const char *colon = memchr(e, ':', len);
        if (colon) {
            if (memchr(colon + 1, ':', (size_t)(e + len - colon - 1)))
                return -1; /* a bare IPv6 address is ambiguous: write [addr]:port */
            hlen = (size_t)(colon - e);
            port = colon + 1;
        }
    }
    if (hlen == 0 || hlen > 253)
        return -1;
    long p = default_port;
    if (port) {
        size_t plen = (size_t)(e + len - port);
        if (plen == 0 || plen > 5 || strspn(port, "0123456789") < plen)
            return -1;
        p = 0;
        for (size_t i = 0; i < plen; i++)
            p = p * 10 + (port[i] - '0');
        if (p < 1 || p > 65535)
            return -1;
    }
    n->host = oms_xmalloc(hlen + 1);
    memcpy(n->host, host, hlen);
    n->host[hlen] = '\0';
    n->port = (int)p;
    n->addr = oms_xmalloc(len + 1);
    memcpy(n->addr, e, len);
    n->addr[len] = '\0';
    if (!port) { /* spell the port out, so logs name the node exactly */
        free(n->addr);
        n->addr = oms_xmalloc(hlen + 16);
        snprintf(n->addr, hlen + 16, strchr(n->host, ':') ? "[%s]:%d" : "%s:%d", n->host, n->port);
    }
    return 0;
}

/* Node list from cfg->addrs, else host:port. OMS_INVALID with a message naming
 * RABBITMQ_ADDRS on a malformed list (dst->nnodes is then 0). */
static int settings_nodes(amqp_settings *dst, const oms_amqp_config *cfg, oms_error *err)
{
    int default_port = cfg && cfg->port > 0 ? cfg->port : 5672;
    const char *list = cfg && cfg->addrs ? cfg->addrs : "";
    if (strspn(list, " \t") == strlen(list)) {
        amqp_node *n = &dst->nodes[0];
        n->host = oms_strdup(cfg && cfg->host && *cfg->host ? cfg->host : "127.0.0.1");
        n->port = default_port;
        size_t sz = strlen(n->host) + 16;
        n->addr = oms_xmalloc(sz);
        /* An IPv6 host goes in brackets so the address reads back unambiguously. */
        snprintf(n->addr, sz, strchr(n->host, ':') ? "[%s]:%d" : "%s:%d", n->host, n->port);
        dst->nnodes = 1;
        return OMS_OK;
    }
    const char *p = list;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *e = p;
        while (len > 0 && (*e == ' ' || *e == '\t')) {
            e++;
            len--;
        }
        while (len > 0 && (e[len - 1] == ' ' || e[len - 1] == '\t'))
            len--;
        if (dst->nnodes == AMQP_MAX_NODES)
            return oms_error_set(err, OMS_INVALID, "RABBITMQ_ADDRS: more than %d nodes",
                                 AMQP_MAX_NODES);
        if (node_parse(e, len, default_port, &dst->nodes[dst->nnodes]) != 0)
            return oms_error_set(err, OMS_INVALID,
                                 "RABBITMQ_ADDRS: bad node '%.*s' in '%.200s' (want "
                                 "host:port,host:port,...; IPv6 as [addr]:port)",
                                 (int)(len > 100 ? 100 : len), e, list);
        dst->nnodes++;
        if (!end)
            return OMS_OK;
        p = end + 1;
    }
}

/* Parses cfg into dst (owned copies; free with settings_free). On a bad cfg returns
 * OMS_INVALID, and dst has no node and keeps the reason in dst->invalid. */
static int settings_parse(amqp_settings *dst, const oms_amqp_config *cfg, oms_error *err)
{
    oms_error local;
    if (!err)
        err = &local;
    memset(dst, 0, sizeof(*dst));
    const char *qt = cfg && cfg->queue_type ? cfg->queue_type : "";
    int rc = OMS_OK;
    if (strcmp(qt, "quorum") == 0)
        dst->quorum = 1;
    else if (*qt && strcmp(qt, "classic") != 0)
        rc = oms_error_set(err, OMS_INVALID,
                           "RABBITMQ_QUEUE_TYPE must be classic or quorum, got '%.100s'", qt);
    if (rc == OMS_OK)
        rc = settings_nodes(dst, cfg, err);
    if (rc != OMS_OK) {
        for (size_t i = 0; i < dst->nnodes; i++) {
            free(dst->nodes[i].host);
            free(dst->nodes[i].addr);
        }
        dst->nnodes = 0;
        dst->invalid = oms_strdup(err->msg);
        return rc;
    }
    size_t total = 1;
    for (size_t i = 0; i < dst->nnodes; i++)
        total += strlen(dst->nodes[i].addr) + 1;
    dst->addrs = oms_xmalloc(total);
    dst->addrs[0] = '\0';
    for (size_t i = 0; i < dst->nnodes; i++) {
        if (i)
            strcat(dst->addrs, ",");
        strcat(dst->addrs, dst->nodes[i].addr);
    }
    dst->user = oms_strdup(cfg && cfg->user ? cfg->user : "guest");
    dst->password = oms_strdup(cfg && cfg->password ? cfg->password : "guest");
    dst->vhost = oms_strdup(cfg && cfg->vhost && *cfg->vhost ? cfg->vhost : "/");
    return OMS_OK;
}

int oms_amqp_config_check(const oms_amqp_config *cfg, oms_error *err)
{
    amqp_settings s;
    int rc = settings_parse(&s, cfg, err);
    settings_free(&s);
    return rc;
}

static void ms_to_tv(int ms, struct timeval *tv)
{
    if (ms < 0)
        ms = 0;
    tv->tv_sec = ms / 1000;
    tv->tv_usec = (ms % 1000) * 1000;
}

/* A human description of an RPC reply, for logs and oms_error. */
static void reply_describe(amqp_rpc_reply_t r, char *buf, size_t size)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL: snprintf(buf, size, "ok"); return;
    case AMQP_RESPONSE_NONE: snprintf(buf, size, "no reply from broker"); return;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(buf, size, "%s", amqp_error_string2(r.library_error));
        return;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD && r.reply.decoded) {
            const amqp_connection_close_t *m = r.reply.decoded;
            snprintf(buf, size, "connection closed by broker: %u %.*s", m->reply_code,
                     (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD && r.reply.decoded) {
            const amqp_channel_close_t *m = r.reply.decoded;
            snprintf(buf, size, "channel closed by broker: %u %.*s", m->reply_code,
                     (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else {
            snprintf(buf, size, "unexpected broker method 0x%08x", (unsigned)r.reply.id);
        }
        return;
    }
    snprintf(buf, size, "unknown reply type %d", (int)r.reply_type);
}

/* Checks the reply of the last synchronous call; sets err with `what` on failure. */
static int check_reply(amqp_connection_state_t conn, const char *what, oms_error *err)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return OMS_OK;
    char desc[256];
    reply_describe(r, desc, sizeof(desc));
    /* A channel-level refusal (406 precondition, 404 not found, 403) is a topology or
     * usage error; anything else means the connection is gone. */
    int code =
        r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD
            ? OMS_ERR
            : OMS_UNAVAILABLE;
    return oms_error_set(err, code, "amqp %s: %s", what, desc);
}

/* Opens a socket to node `node`, logs in (PLAIN, heartbeat 10 s) and opens channel 1.
 * On success *out is owned by the caller (conn_drop or conn_close). Every step is
 * bounded by timeout_ms. */
static int conn_open_node(const amqp_settings *s, size_t node, int timeout_ms,
                          amqp_connection_state_t *out, oms_error *err)
{
    const amqp_node *n = &s->nodes[node];
    struct timeval tv;
    char desc[256];
    int rc;
    amqp_connection_state_t conn = amqp_new_connection();
    if (!conn)
        return oms_error_set(err, OMS_ERR, "amqp: out of memory creating a connection");
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    if (!sock) {
        rc = oms_error_set(err, OMS_ERR, "amqp: cannot create a TCP socket");
        goto fail;
    }
    ms_to_tv(timeout_ms, &tv);
    int st = amqp_socket_open_noblock(sock, n->host, n->port, &tv);
    if (st != AMQP_STATUS_OK) {
        rc = oms_error_set(err, OMS_UNAVAILABLE, "amqp connect %s: %s", n->addr,
                           amqp_error_string2(st));
        goto fail;
    }
    st = amqp_set_handshake_timeout(conn, &tv);
    if (st == AMQP_STATUS_OK)
        st = amqp_set_rpc_timeout(conn, &tv);
    if (st != AMQP_STATUS_OK) {
        rc = oms_error_set(err, OMS_ERR, "amqp set timeouts: %s", amqp_error_string2(st));
        goto fail;
    }
    amqp_rpc_reply_t r = amqp_login(conn, s->vhost, 0, AMQP_FRAME_MAX, AMQP_HEARTBEAT_S,
                                    AMQP_SASL_METHOD_PLAIN, s->user, s->password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        reply_describe(r, desc, sizeof(desc));
        rc = oms_error_set(err, OMS_UNAVAILABLE, "amqp login to %s as %s: %s", n->addr, s->user,
                           desc);
        goto fail;
    }
    if (!amqp_channel_open(conn, AMQP_CHANNEL)) {
        rc = check_reply(conn, "channel.open", err);
        if (rc == OMS_OK) /* NULL reply without an error recorded: still a failure */
            rc = oms_error_set(err, OMS_UNAVAILABLE, "amqp channel.open failed");
        goto fail;
    }
    *out = conn;
    return OMS_OK;
fail:
    /* destroy closes the socket; no protocol goodbye on a half-open connection. */
    amqp_destroy_connection(conn);
    return rc;
}

/* Connects to the first node that accepts, trying each once in list order from *next
 * (the node after the one that failed last). On success *next is the node connected
 * to, so a replacement connection goes there first; on failure *next is unchanged
 * (every node failed; the last tried was the one before it) and err holds the last
 * node's error, prefixed by how many nodes were tried. */
static int conn_open(const amqp_settings *s, size_t *next, int timeout_ms,
                     amqp_connection_state_t *out, oms_error *err)
{
    int rc = OMS_UNAVAILABLE;
    if (s->nnodes == 0)
        return oms_error_set(err, OMS_INVALID, "%s", s->invalid ? s->invalid : "no broker");
    for (size_t k = 0; k < s->nnodes; k++) {
        size_t i = (*next + k) % s->nnodes;
        rc = conn_open_node(s, i, timeout_ms, out, err);
        if (rc == OMS_OK) {
            *next = i;
            return OMS_OK;
        }
    }
    if (s->nnodes > 1 && err) {
        char last[sizeof(err->msg)];
        snprintf(last, sizeof(last), "%s", err->msg);
        oms_error_set(err, rc, "amqp: none of %zu nodes reachable (%s); last: %s", s->nnodes,
                      s->addrs, last);
    }
    return rc;
}

/* Throws a connection away without the close handshake (it is broken anyway). */
static void conn_drop(amqp_connection_state_t *conn)
{
    if (*conn) {
        amqp_destroy_connection(*conn);
        *conn = NULL;
    }
}

/* Orderly close (bounded by the RPC timeout), then frees. */
static void conn_close(amqp_connection_state_t *conn)
{
    if (!*conn)
        return;
    struct timeval tv;
    ms_to_tv(1000, &tv);
    /* Results ignored on purpose: the connection is freed either way, and a broker
     * that does not answer the goodbye loses nothing (unacked messages are requeued). */
    (void)amqp_set_rpc_timeout(*conn, &tv);
    (void)amqp_channel_close(*conn, AMQP_CHANNEL, AMQP_REPLY_SUCCESS);
    (void)amqp_connection_close(*conn, AMQP_REPLY_SUCCESS);
    conn_drop(conn);
}

static int declare_exchange(amqp_connection_state_t conn, const char *name, oms_error *err)
{
    amqp_exchange_declare(conn, AMQP_CHANNEL, amqp_cstring_bytes(name),
                          amqp_cstring_bytes("fanout"), 0 /* passive */, 1 /* durable */,
                          0 /* auto_delete */, 0 /* internal */, amqp_empty_table);
    char what[300];
    snprintf(what, sizeof(what), "declare exchange '%s'", name);
    return check_reply(conn, what, err);
}

static int declare_event_exchanges(amqp_connection_state_t conn, oms_error *err)
{
    for (size_t i = 0; i < OMS_EVENT__COUNT; i++) {
        int rc = declare_exchange(conn, oms_event_exchanges[i], err);
        if (rc != OMS_OK)
            return rc;
    }
    return OMS_OK;
}

/* Connection up/down is logged once per transition, not once per retry, always with
 * the node ("host:port") concerned. */
typedef enum { LINK_NEVER = 0, LINK_UP, LINK_DOWN } link_state;

typedef struct link_log {
    link_state state;
    int node; /* node of the last connection, -1 before the first */
} link_log;

static void link_up(link_log *l, const char *role, const amqp_settings *s, size_t node)
{
    const char *addr = s->nodes[node].addr;
    const char *prev = l->node >= 0 && (size_t)l->node != node ? s->nodes[l->node].addr : NULL;
    if (l->state == LINK_NEVER)
        oms_log_info("amqp connected", "role", role, "node", addr);
    else if (prev) /* failover, or a replaced connection that found its node gone */
        oms_log_warn("amqp connected to another node", "role", role, "node", addr, "previous",
                     prev);
    else if (l->state == LINK_DOWN)
        oms_log_warn("amqp connection restored", "role", role, "node", addr);
    l->state = LINK_UP;
    l->node = (int)node;
}

/* node: the node whose connection broke, or -1 when no node could be reached. */
static void link_down(link_log *l, const char *role, const amqp_settings *s, int node,
                      const char *why)
{
    if (l->state == LINK_DOWN)
        return;
    if (l->state == LINK_UP && node >= 0)
        oms_log_warn("amqp connection lost", "role", role, "node", s->nodes[node].addr, "error",
                     why);
    else
        oms_log_warn("amqp broker unreachable", "role", role, "nodes", s->addrs ? s->addrs : "",
                     "error", why);
    l->state = LINK_DOWN;
}

#define PUB_MAX_DECLARED 32

/* ---- publisher ------------------------------------------------------------------- */

struct oms_amqp_publisher {
    amqp_settings cfg;
    amqp_connection_state_t conn; /* NULL while disconnected */
    uint64_t next_tag;            /* delivery tag the broker gives our next publish */
    int64_t last_used_ms;         /* monotonic; see pub_ensure */
    size_t node;                  /* connected to, or the first to try next */
    link_log link;
    /* Exchanges outside oms_event_exchanges declared on this connection. */
    char *declared[PUB_MAX_DECLARED];
    size_t ndeclared;
    /* Set by the consumer while it republishes to Q.retry/Q.dlq: the exchange the
     * message first came through, kept in x-original-exchange because the retry path
     * goes through the default exchange. */
    const char *orig_exchange;
};

int oms_amqp_publisher_new(oms_amqp_publisher **out, const oms_amqp_config *cfg)
{
    oms_amqp_publisher *p = oms_xcalloc(1, sizeof(*p));
    /* A bad cfg is kept as the reason every publish fails (see oms_amqp_publish). */
    (void)settings_parse(&p->cfg, cfg, NULL);
    p->link.node = -1;
    *out = p;
    return OMS_OK;
}

static void pub_forget_declared(oms_amqp_publisher *p)
{
    for (size_t i = 0; i < p->ndeclared; i++)
        free(p->declared[i]);
    p->ndeclared = 0;
}

void oms_amqp_publisher_free(oms_amqp_publisher *p)
{
    if (!p)
        return;
    conn_close(&p->conn);
    pub_forget_declared(p);
    settings_free(&p->cfg);
    free(p);
}

int oms_amqp_publisher_connected(const oms_amqp_publisher *p)
{
    return p && p->conn != NULL;
}

const char *oms_amqp_publisher_node(const oms_amqp_publisher *p)
{
    return p && p->conn ? p->cfg.nodes[p->node].addr : NULL;
}

/* The node after `node`, where the next connection attempt starts once `node` failed. */
static size_t node_after(const amqp_settings *s, size_t node)
{
    return s->nnodes ? (node + 1) % s->nnodes : 0;
}

/* The connection broke: drop it, and start the next attempt at the following node. */
static void pub_lost(oms_amqp_publisher *p, const char *why)
{
    conn_drop(&p->conn);
    link_down(&p->link, "publisher", &p->cfg, (int)p->node, why);
    p->node = node_after(&p->cfg, p->node);
}

/* Drains whatever the broker sent while we were idle. 0 when the connection still
 * looks healthy; -1 when it is closed (broker restart, connection.close). */
static int pub_idle_check(oms_amqp_publisher *p)
{
    struct timeval zero = {0, 0};
    for (;;) {
        amqp_frame_t f;
        int st = amqp_simple_wait_frame_noblock(p->conn, &f, &zero);
        if (st == AMQP_STATUS_TIMEOUT)
            return 0;
        if (st != AMQP_STATUS_OK)
            return -1;
        if (f.frame_type == AMQP_FRAME_METHOD &&
            (f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD ||
             f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD))
            return -1;
        /* Anything else (a late frame of an abandoned batch) is irrelevant now. */
    }
}

/* Makes sure p has a live, confirming connection with the event exchanges declared.
 *
 * rabbitmq-c only sends heartbeats from inside library calls, so a publisher left
 * idle for two heartbeat periods is dropped by the broker. Rather than racing that,
 * a connection idle for a full heartbeat period is replaced quietly, and a younger one
 * is checked for a close the broker already sent (e.g. it restarted). */
static int pub_ensure(oms_amqp_publisher *p, oms_error *err)
{
    int64_t now = oms_mono_ms();
    if (p->conn && now - p->last_used_ms >= AMQP_HEARTBEAT_S * 1000) {
        conn_close(&p->conn); /* not a failure: the same node is tried first */
    } else if (p->conn && pub_idle_check(p) != 0) {
        pub_lost(p, "connection closed while idle"); /* restart, node going down */
    }
    if (p->conn)
        return OMS_OK;

    amqp_connection_state_t conn = NULL;
    int rc = conn_open(&p->cfg, &p->node, AMQP_IO_TIMEOUT_MS, &conn, err);
    if (rc != OMS_OK)
        goto fail;
    amqp_confirm_select(conn, AMQP_CHANNEL);
    rc = check_reply(conn, "confirm.select", err);
    if (rc == OMS_OK)
        rc = declare_event_exchanges(conn, err);
    if (rc != OMS_OK) {
        conn_drop(&conn);
        link_down(&p->link, "publisher", &p->cfg, (int)p->node, err->msg);
        p->node = node_after(&p->cfg, p->node);
        return rc == OMS_ERR ? OMS_ERR : OMS_UNAVAILABLE;
    }
    pub_forget_declared(p);
    p->conn = conn;
    p->next_tag = 1; /* confirm mode numbers publishes from 1 on each channel */
    p->last_used_ms = now;
    link_up(&p->link, "publisher", &p->cfg, p->node);
    return OMS_OK;
fail:
    link_down(&p->link, "publisher", &p->cfg, -1, err->msg);
    return rc == OMS_ERR ? OMS_ERR : OMS_UNAVAILABLE;
}

/* A publish to a missing exchange makes the broker close the channel, which would fail
 * every other message of the batch with it. So any exchange that is not an event
 * exchange (declared on connect), not the default "" and not a predeclared amq.* one is
 * declared (durable fanout) once per connection before its first publish. */
static int pub_declare_extra(oms_amqp_publisher *p, const oms_amqp_msg *msgs, size_t n,
                             oms_error *err)
{
    for (size_t i = 0; i < n; i++) {
        const char *ex = msgs[i].exchange ? msgs[i].exchange : "";
        int known = *ex == '\0' || strncmp(ex, "amq.", 4) == 0;
        for (size_t j = 0; !known && j < OMS_EVENT__COUNT; j++)
            known = strcmp(ex, oms_event_exchanges[j]) == 0;
        for (size_t j = 0; !known && j < p->ndeclared; j++)
            known = strcmp(ex, p->declared[j]) == 0;
        if (known)
            continue;
        int rc = declare_exchange(p->conn, ex, err);
        if (rc != OMS_OK)
            return rc;
        if (p->ndeclared == PUB_MAX_DECLARED)
            pub_forget_declared(p); /* bounded: at worst some are declared again */
        p->declared[p->ndeclared++] = oms_strdup(ex);
    }
    return OMS_OK;
}

/* Sends one message (mandatory, persistent, JSON) with our three headers. */
static int pub_send(oms_amqp_publisher *p, const oms_amqp_msg *m)
{
    const char *tp = m->traceparent ? m->traceparent : "";
    const char *mid = m->message_id ? m->message_id : "";
    amqp_table_entry_t h[4];
    int nh = 0;
    h[nh].key = amqp_cstring_bytes("message-id");
    h[nh].value.kind = AMQP_FIELD_KIND_UTF8;
    h[nh].value.value.bytes = amqp_cstring_bytes(mid);
    nh++;
    if (*tp) {
        h[nh].key = amqp_cstring_bytes("traceparent");
        h[nh].value.kind = AMQP_FIELD_KIND_UTF8;
        h[nh].value.value.bytes = amqp_cstring_bytes(tp);
        nh++;
    }
    h[nh].key = amqp_cstring_bytes("x-retry-count");
    h[nh].value.kind = AMQP_FIELD_KIND_I32;
    h[nh].value.value.i32 = m->retry_count;
    nh++;
    if (p->orig_exchange && *p->orig_exchange) {
        h[nh].key = amqp_cstring_bytes("x-original-exchange");
        h[nh].value.kind = AMQP_FIELD_KIND_UTF8;
        h[nh].value.value.bytes = amqp_cstring_bytes(p->orig_exchange);
        nh++;
    }

    amqp_basic_properties_t props;
    memset(&props, 0, sizeof(props));
    props._flags =
        AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    props.headers.num_entries = nh;
    props.headers.entries = h;
    if (*mid) {
        props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        props.message_id = amqp_cstring_bytes(mid);
    }
    amqp_bytes_t body = {m->len, (void *)m->body};
    return amqp_basic_publish(p->conn, AMQP_CHANNEL,
                              amqp_cstring_bytes(m->exchange ? m->exchange : ""),
                              amqp_cstring_bytes(m->routing_key ? m->routing_key : ""),
                              1 /* mandatory */, 0 /* immediate */, &props, body);
}

/* Marks tag (or every tag up to it when multiple) with verdict v (1 ack, -1 nack). */
static size_t settle(signed char *state, size_t n, uint64_t first_tag, uint64_t tag, int multiple,
                     signed char v)
{
    size_t settled = 0;
    if (tag < first_tag)
        return 0; /* belongs to an earlier batch */
    uint64_t hi = tag - first_tag;
    uint64_t lo = multiple ? 0 : hi;
    for (uint64_t i = lo; i <= hi && i < n; i++) {
        if (state[i] == 0) {
            state[i] = v;
            settled++;
        }
    }
    return settled;
}

/* basic.return names no delivery tag; it is matched to the first unsettled message
 * with the same message id (the broker sends the return before that message's ack).
 * Returns 0 when matched. */
static int mark_returned(const oms_amqp_msg *msgs, size_t n, const signed char *state,
                         unsigned char *returned, amqp_bytes_t mid)
{
    for (size_t i = 0; i < n; i++) {
        const char *m = msgs[i].message_id ? msgs[i].message_id : "";
        if (state[i] == 0 && !returned[i] && strlen(m) == mid.len &&
            memcmp(m, mid.bytes, mid.len) == 0) {
            returned[i] = 1;
            return 0;
        }
    }
    return -1;
}

int oms_amqp_publish(oms_amqp_publisher *p, const oms_amqp_msg *msgs, size_t n, int *confirmed,
                     int timeout_ms, oms_error *err)
{
    signed char *state = NULL;      /* 0 pending, 1 acked, -1 nacked */
    unsigned char *returned = NULL; /* 1: came back unroutable */
    char why[300] = "";
    int rc = OMS_OK;
    oms_error local; /* the reason is logged even when the caller wants none */
    if (!err)
        err = &local;

    if (confirmed)
        memset(confirmed, 0, n * sizeof(*confirmed));
    if (n == 0)
        return OMS_OK;
    if (!msgs)
        return oms_error_set(err, OMS_INVALID, "amqp publish: no messages");
    if (p->cfg.invalid)
        return oms_error_set(err, OMS_INVALID, "amqp publish: %s", p->cfg.invalid);

    rc = pub_ensure(p, err);
    if (rc != OMS_OK)
        return rc;
    rc = pub_declare_extra(p, msgs, n, err);
    if (rc != OMS_OK) {
        pub_lost(p, err->msg);
        return rc;
    }

    state = oms_xcalloc(n, 1);
    returned = oms_xcalloc(n, 1);
    uint64_t first_tag = p->next_tag;
    for (size_t i = 0; i < n; i++) {
        int st = pub_send(p, &msgs[i]);
        if (st != AMQP_STATUS_OK) {
            snprintf(why, sizeof(why), "publish: %s", amqp_error_string2(st));
            rc = OMS_UNAVAILABLE;
            goto lost;
        }
        p->next_tag++;
    }

    size_t pending = n;
    int64_t deadline = oms_mono_ms() + (timeout_ms > 0 ? timeout_ms : AMQP_IO_TIMEOUT_MS);
    int unmatched_return = 0;
    while (pending > 0) {
        int64_t left = deadline - oms_mono_ms();
        if (left <= 0) {
            snprintf(why, sizeof(why), "no confirm for %zu of %zu messages within %d ms", pending,
                     n, timeout_ms);
            rc = OMS_UNAVAILABLE;
            goto lost;
        }
        struct timeval tv;
        ms_to_tv((int)left, &tv);
        amqp_frame_t f;
        int st = amqp_simple_wait_frame_noblock(p->conn, &f, &tv);
        if (st == AMQP_STATUS_TIMEOUT)
            continue;
        if (st != AMQP_STATUS_OK) {
            snprintf(why, sizeof(why), "waiting for confirms: %s", amqp_error_string2(st));
            rc = OMS_UNAVAILABLE;
            goto lost;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue; /* heartbeats are handled inside the library */
        switch (f.payload.method.id) {
        case AMQP_BASIC_ACK_METHOD: {
            const amqp_basic_ack_t *a = f.payload.method.decoded;
            pending -= settle(state, n, first_tag, a->delivery_tag, a->multiple, 1);
            break;
        }
        case AMQP_BASIC_NACK_METHOD: {
            const amqp_basic_nack_t *a = f.payload.method.decoded;
            pending -= settle(state, n, first_tag, a->delivery_tag, a->multiple, -1);
            break;
        }
        case AMQP_BASIC_RETURN_METHOD: {
            /* The returned message's header and body frames follow; they must be read
             * off the connection before anything else. */
            const amqp_basic_return_t *ret = f.payload.method.decoded;
            char rtext[128];
            snprintf(rtext, sizeof(rtext), "%.*s", (int)ret->reply_text.len,
                     (const char *)ret->reply_text.bytes);
            amqp_message_t msg;
            amqp_rpc_reply_t r = amqp_read_message(p->conn, f.channel, &msg, 0);
            if (r.reply_type != AMQP_RESPONSE_NORMAL) {
                char desc[200];
                reply_describe(r, desc, sizeof(desc));
                snprintf(why, sizeof(why), "reading returned message: %s", desc);
                rc = OMS_UNAVAILABLE;
                goto lost;
            }
            amqp_bytes_t mid = amqp_empty_bytes;
            if (msg.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
                mid = msg.properties.message_id;
            if (mark_returned(msgs, n, state, returned, mid) != 0)
                unmatched_return = 1;
            amqp_destroy_message(&msg);
            if (!*why)
                snprintf(why, sizeof(why), "message returned by broker: %s", rtext);
            break;
        }
        case AMQP_CHANNEL_CLOSE_METHOD: {
            const amqp_channel_close_t *c = f.payload.method.decoded;
            snprintf(why, sizeof(why), "channel closed by broker: %u %.*s", c->reply_code,
                     (int)c->reply_text.len, (const char *)c->reply_text.bytes);
            /* A channel error (e.g. 404 no such exchange) is the caller's mistake, not
             * an outage; the connection is still replaced since the channel is gone. */
            rc = OMS_ERR;
            goto lost;
        }
        case AMQP_CONNECTION_CLOSE_METHOD: {
            const amqp_connection_close_t *c = f.payload.method.decoded;
            snprintf(why, sizeof(why), "connection closed by broker: %u %.*s", c->reply_code,
                     (int)c->reply_text.len, (const char *)c->reply_text.bytes);
            rc = OMS_UNAVAILABLE;
            goto lost;
        }
        default: break;
        }
    }

    p->last_used_ms = oms_mono_ms();
    amqp_maybe_release_buffers(p->conn);
    size_t failed = 0, nacked = 0;
    for (size_t i = 0; i < n; i++) {
        /* An unmatched return cannot be pinned on one message: distrust the batch. */
        int ok = state[i] == 1 && !returned[i] && !unmatched_return;
        if (confirmed)
            confirmed[i] = ok;
        failed += !ok;
        nacked += state[i] == -1;
    }
    if (failed) {
        rc = oms_error_set(err, OMS_ERR, "amqp %s: %zu of %zu messages not accepted (%s)",
                           p->cfg.nodes[p->node].addr, failed, n, *why ? why : "nacked by broker");
    }
    /* A channel that published to a quorum queue while it had no leader can go on
     * nacking every publish to that queue after a new leader is elected (seen on
     * RabbitMQ 3.10 when the leader's node was killed); a new channel works at once.
     * So a nack costs the connection, and the next call opens another one on the same
     * node (a returned message is our routing's business and keeps it). */
    if (nacked)
        conn_drop(&p->conn);
    goto out;

lost:
    /* Whatever was acked before the connection went is still confirmed. */
    if (confirmed)
        for (size_t i = 0; i < n; i++)
            confirmed[i] = state[i] == 1 && !returned[i];
    oms_error_set(err, rc, "amqp %s: %s", p->cfg.nodes[p->node].addr, why);
    pub_lost(p, why);
out:
    free(state);
    free(returned);
    return rc;
}

/* Drops the publisher's connection quietly and points it at `node` (the consumer does
 * this when its own connection died: the publisher's is almost certainly dead too, and
 * it should follow the consumer to the node that one tries next). */
static void pub_reset(oms_amqp_publisher *p, size_t node)
{
    conn_drop(&p->conn);
    p->node = p->cfg.nnodes ? node % p->cfg.nnodes : 0;
}

/* ---- ping -------------------------------------------------------------------------- */

int oms_amqp_ping(const oms_amqp_config *cfg, int timeout_ms, oms_error *err)
{
    amqp_settings s;
    amqp_connection_state_t conn = NULL;
    size_t node = 0;
    int rc = settings_parse(&s, cfg, err);
    if (rc == OMS_OK)
        rc = conn_open(&s, &node, timeout_ms > 0 ? timeout_ms : AMQP_IO_TIMEOUT_MS, &conn, err);
    if (rc == OMS_OK)
        conn_close(&conn);
    settings_free(&s);
    return rc;
}

/* ---- consumer ------------------------------------------------------------------------ */

struct oms_amqp_consumer {
    amqp_settings cfg;
    char *queue, *retry_queue, *dlq;
    char **exchanges;
    size_t nexchanges;
    int prefetch, max_retries, retry_delay_ms;
    oms_amqp_handler fn;
    void *ud;
    int transient;
    void (*on_connect)(void *ud);

    int worker; /* 0 for the first of the queue's workers */
    pthread_t thread;
    atomic_int stop;
    atomic_int connected;
    atomic_int at; /* node consumed from while connected, else -1 */

    struct oms_amqp_consumer *next_worker; /* the queue's other workers (chain) */

    /* Owned by the consumer thread. */
    amqp_connection_state_t conn;
    size_t node;             /* connected to, or the first to try next */
    oms_amqp_publisher *pub; /* republishes to Q.retry / Q.dlq, with confirms */
    link_log link;
    int conflict_logged; /* the queue-type error was logged since the last connect */
};

static void consumer_free(oms_amqp_consumer *c)
{
    settings_free(&c->cfg);
    free(c->queue);
    free(c->retry_queue);
    free(c->dlq);
    for (size_t i = 0; i < c->nexchanges; i++)
        free(c->exchanges[i]);
    free(c->exchanges);
    oms_amqp_publisher_free(c->pub);
    free(c);
}

static char *str_concat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = oms_xmalloc(la + lb + 1);
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

/* queue.declare (durable). A queue that exists with other arguments makes the broker
 * close the channel with 406 PRECONDITION_FAILED: that is OMS_CONFLICT, with a message
 * saying what to do, since retrying cannot fix it. */
static int declare_queue(amqp_connection_state_t conn, const char *name, amqp_table_t args,
                         int quorum, oms_error *err)
{
    amqp_queue_declare(conn, AMQP_CHANNEL, amqp_cstring_bytes(name), 0 /* passive */,
                       1 /* durable */, 0 /* exclusive */, 0 /* auto_delete */, args);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD &&
        r.reply.decoded) {
        const amqp_channel_close_t *m = r.reply.decoded;
        if (m->reply_code == AMQP_PRECONDITION_FAILED) {
            char text[300];
            snprintf(text, sizeof(text), "%.*s", (int)m->reply_text.len,
                     (const char *)m->reply_text.bytes);
            /* The broker names the first inequivalent argument in its own order, which
             * for a queue of the other type is often not x-queue-type (our classic and
             * quorum queues differ in their dead-letter arguments too). */
            if (strstr(text, "x-message-ttl"))
                return oms_error_set(err, OMS_CONFLICT,
                                     "queue '%s' already exists with another x-message-ttl "
                                     "(RETRY_DELAY_MS changed): drain and delete it, or set "
                                     "RETRY_DELAY_MS back (broker: %s)",
                                     name, text);
            return oms_error_set(err, OMS_CONFLICT,
                                 "queue '%s' already exists as another type than "
                                 "RABBITMQ_QUEUE_TYPE=%s (or with other arguments): drain and "
                                 "delete it, or set RABBITMQ_QUEUE_TYPE to its type (broker: %s)",
                                 name, quorum ? "quorum" : "classic", text);
        }
    }
    char what[300];
    snprintf(what, sizeof(what), "declare queue '%s'", name);
    return check_reply(conn, what, err);
}

/* A quorum queue counts a delivery that ends without an ack (its consumer's connection
 * died) and, past x-delivery-limit, dead-letters the message (to Q.dlq, see
 * consumer_declare_queues) instead of delivering it again. Our retries do not count
 * toward it: a failed message is acked and republished to Q.retry as a new message,
 * its count kept in our own x-retry-count header (MAX_RETRIES). So the limit only
 * catches a message that never gets an ack, e.g. one that crashes its consumer every
 * time: after this many hand-outs it is parked instead of crash-looping the service
 * forever. A failover also counts once for every message unacked at that moment,
 * hence a limit well above MAX_RETRIES' default (5) and any plausible run of node
 * losses. */
#define AMQP_DELIVERY_LIMIT 20

static void arg_str(amqp_table_entry_t *e, const char *key, const char *v)
{
    e->key = amqp_cstring_bytes(key);
    e->value.kind = AMQP_FIELD_KIND_UTF8;
    e->value.value.bytes = amqp_cstring_bytes(v);
}

static void arg_int(amqp_table_entry_t *e, const char *key, int v)
{
    e->key = amqp_cstring_bytes(key);
    e->value.kind = AMQP_FIELD_KIND_I32;
    e->value.value.i32 = v;
}

/* Dead-lettering from a quorum queue is at most once unless asked: the broker could
 * drop the message when the target queue has no leader at that moment. At least once
 * (RabbitMQ 3.10+) keeps it until the target confirms, and requires reject-publish
 * overflow (which never triggers: our queues have no length limit). Writes 2 entries
 * at a, 4 for a quorum queue; returns how many. */
static int args_dead_letter(amqp_table_entry_t *a, const char *routing_key, int quorum)
{
    int n = 0;
    arg_str(&a[n++], "x-dead-letter-exchange", "");
    arg_str(&a[n++], "x-dead-letter-routing-key", routing_key);
    if (quorum) {
        arg_str(&a[n++], "x-dead-letter-strategy", "at-least-once");
        arg_str(&a[n++], "x-overflow", "reject-publish");
    }
    return n;
}

/* Q, Q.retry (TTL, dead-lettering back to Q) and Q.dlq, classic or quorum. Classic
 * queues are declared exactly as before quorum support existed (Q and Q.dlq without
 * arguments), so existing deployments keep their queues. A quorum Q also dead-letters
 * to Q.dlq, which only its delivery limit (AMQP_DELIVERY_LIMIT) makes it do. */
static int consumer_declare_queues(oms_amqp_consumer *c, oms_error *err)
{
    amqp_connection_state_t conn = c->conn;
    int q = c->cfg.quorum;
    if (c->transient) {
        amqp_queue_declare(conn, AMQP_CHANNEL, amqp_cstring_bytes(c->queue), 0 /* passive */,
                           0 /* durable */, 1 /* exclusive */, 1 /* auto_delete */,
                           amqp_empty_table);
        char what[300];
        snprintf(what, sizeof(what), "declare queue '%s'", c->queue);
        return check_reply(conn, what, err);
    }
    amqp_table_entry_t a[8];
    int n = 0;
    if (q) {
        arg_str(&a[n++], "x-queue-type", "quorum");
        arg_int(&a[n++], "x-delivery-limit", AMQP_DELIVERY_LIMIT);
        n += args_dead_letter(&a[n], c->dlq, q);
    }
    int rc = declare_queue(conn, c->queue, (amqp_table_t){n, a}, q, err);
    if (rc != OMS_OK)
        return rc;

    n = 0;
    if (q)
        arg_str(&a[n++], "x-queue-type", "quorum");
    arg_int(&a[n++], "x-message-ttl", c->retry_delay_ms);
    n += args_dead_letter(&a[n], c->queue, q);
    rc = declare_queue(conn, c->retry_queue, (amqp_table_t){n, a}, q, err);
    if (rc != OMS_OK)
        return rc;

    n = 0;
    if (q)
        arg_str(&a[n++], "x-queue-type", "quorum");
    return declare_queue(conn, c->dlq, (amqp_table_t){n, a}, q, err);
}

/* Exchanges, queues (consumer_declare_queues), bindings, QoS, and basic.consume with
 * manual ack. */
static int consumer_setup(oms_amqp_consumer *c, oms_error *err)
{
    amqp_connection_state_t conn = c->conn;
    int rc = declare_event_exchanges(conn, err);
    for (size_t i = 0; rc == OMS_OK && i < c->nexchanges; i++)
        rc = declare_exchange(conn, c->exchanges[i], err);
    if (rc == OMS_OK)
        rc = consumer_declare_queues(c, err);
    for (size_t i = 0; rc == OMS_OK && i < c->nexchanges; i++) {
        amqp_queue_bind(conn, AMQP_CHANNEL, amqp_cstring_bytes(c->queue),
                        amqp_cstring_bytes(c->exchanges[i]), amqp_empty_bytes, amqp_empty_table);
        char what[600];
        snprintf(what, sizeof(what), "bind '%s' to '%s'", c->queue, c->exchanges[i]);
        rc = check_reply(conn, what, err);
    }
    if (rc == OMS_OK) {
        amqp_basic_qos(conn, AMQP_CHANNEL, 0, (uint16_t)c->prefetch, 0);
        rc = check_reply(conn, "basic.qos", err);
    }
    if (rc == OMS_OK) {
        amqp_basic_consume(conn, AMQP_CHANNEL, amqp_cstring_bytes(c->queue), amqp_empty_bytes,
                           0 /* no_local */, 0 /* no_ack */, 0 /* exclusive */, amqp_empty_table);
        rc = check_reply(conn, "basic.consume", err);
    }
    return rc;
}

/* Heap, NUL-terminated copy of b (owned by the caller). */
static char *bytes_dup(amqp_bytes_t b)
{
    char *s = oms_xmalloc(b.len + 1);
    if (b.len)
        memcpy(s, b.bytes, b.len);
    s[b.len] = '\0';
    return s;
}

static const amqp_field_value_t *header_get(const amqp_basic_properties_t *p, const char *key)
{
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return NULL;
    size_t kl = strlen(key);
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        if (e->key.len == kl && memcmp(e->key.bytes, key, kl) == 0)
            return &e->value;
    }
    return NULL;
}

static int header_string(const amqp_field_value_t *v, amqp_bytes_t *out)
{
    if (v && (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES)) {
        *out = v->value.bytes;
        return 1;
    }
    return 0;
}

/* x-retry-count as any integer kind (other clients pick other widths), clamped. */
static int header_retry_count(const amqp_field_value_t *v)
{
    long long n = 0;
    if (!v)
        return 0;
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8: n = v->value.i8; break;
    case AMQP_FIELD_KIND_U8: n = v->value.u8; break;
    case AMQP_FIELD_KIND_I16: n = v->value.i16; break;
    case AMQP_FIELD_KIND_U16: n = v->value.u16; break;
    case AMQP_FIELD_KIND_I32: n = v->value.i32; break;
    case AMQP_FIELD_KIND_U32: n = v->value.u32; break;
    case AMQP_FIELD_KIND_I64: n = v->value.i64; break;
    case AMQP_FIELD_KIND_U64: n = v->value.u64 > INT_MAX ? INT_MAX : (long long)v->value.u64; break;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES: {
        char buf[24];
        size_t l = v->value.bytes.len < sizeof(buf) - 1 ? v->value.bytes.len : sizeof(buf) - 1;
        if (l) /* an empty value may come with a NULL pointer (fuzz_amqp_decode) */
            memcpy(buf, v->value.bytes.bytes, l);
        buf[l] = '\0';
        n = strtoll(buf, NULL, 10);
        break;
    }
    default: break;
    }
    if (n < 0)
        n = 0;
    if (n > INT_MAX)
        n = INT_MAX;
    return (int)n;
}

/* bytes_dup for a raw pointer and length (NULL with 0 gives ""). */
static char *mem_dup(const void *p, size_t len)
{
    amqp_bytes_t b = {len, (void *)p};
    return bytes_dup(len ? b : amqp_empty_bytes);
}

void oms_amqp_decode(const amqp_basic_properties_t *props, const void *exchange,
                     size_t exchange_len, const void *body, size_t len, oms_amqp_decoded *out)
{
    amqp_bytes_t b = amqp_empty_bytes;
    memset(out, 0, sizeof(*out));
    /* A retried message arrives through the default exchange; report the one it was
     * first published to. */
    if (header_string(header_get(props, "x-original-exchange"), &b) && b.len > 0)
        out->exchange = bytes_dup(b);
    else
        out->exchange = mem_dup(exchange, exchange_len);
    b = amqp_empty_bytes;
    if (header_string(header_get(props, "message-id"), &b) && b.len > 0)
        out->message_id = bytes_dup(b);
    else if (props->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
        out->message_id = bytes_dup(props->message_id);
    else
        out->message_id = oms_strdup("");
    b = amqp_empty_bytes;
    (void)header_string(header_get(props, "traceparent"), &b);
    out->traceparent = bytes_dup(b);
    out->retry_count = header_retry_count(header_get(props, "x-retry-count"));
    /* An oversized body is not copied: the caller dead-letters it as it is. */
    out->len = len;
    out->body = len > AMQP_MAX_BODY ? NULL : mem_dup(body, len);
}

void oms_amqp_decoded_free(oms_amqp_decoded *d)
{
    free(d->exchange);
    free(d->message_id);
    free(d->traceparent);
    free(d->body);
    memset(d, 0, sizeof(*d));
}

/* events_{consumed,retried,dead_lettered}_total{queue}: what became of a delivery,
 * counted once the broker has its ack (and, for the last two, the republish confirm). */
#define CONSUMED_TOTAL "events_consumed_total"
#define CONSUMED_HELP "Deliveries handled and acknowledged (applied, or recognised as duplicates)"
#define RETRIED_TOTAL "events_retried_total"
#define RETRIED_HELP "Deliveries that failed and were sent to <queue>.retry"
#define DEAD_TOTAL "events_dead_lettered_total"
#define DEAD_HELP "Deliveries moved to <queue>.dlq (invalid, or out of retries)"

static void count_outcome(const char *queue, const char *name, const char *help, double v)
{
    char labels[320] = "";
    oms_metrics_label(labels, sizeof(labels), "queue", queue);
    oms_metrics_counter_add(name, help, labels, v);
}

/* The CONSUMER span of one delivery, "<queue> process" (OpenTelemetry messaging
 * conventions): a child of the publish span whose context the message carries, or a
 * new trace when it carries none (or a malformed one). It is the thread's current
 * context while the handler runs. */
static oms_span *consume_span_start(const oms_amqp_consumer *c, const oms_amqp_decoded *d,
                                    uint64_t delivery_tag)
{
    char name[300];
    oms_trace_ctx parent;
    snprintf(name, sizeof(name), "%s process", c->queue);
    oms_span *s = oms_traceparent_parse(d->traceparent, &parent) == OMS_OK
                      ? oms_span_start(name, OMS_SPAN_CONSUMER, &parent)
                      : oms_span_start_root(name, OMS_SPAN_CONSUMER);
    oms_span_set_str(s, "messaging.system", "rabbitmq");
    oms_span_set_str(s, "messaging.operation.type", "process");
    oms_span_set_str(s, "messaging.destination.name", d->exchange);
    oms_span_set_str(s, "messaging.destination.subscription.name", c->queue);
    oms_span_set_str(s, "messaging.message.id", d->message_id);
    oms_span_set_int(s, "messaging.message.body.size", (long long)d->len);
    oms_span_set_int(s, "messaging.rabbitmq.message.delivery_tag", (long long)delivery_tag);
    if (d->retry_count > 0)
        oms_span_set_int(s, "messaging.message.retry_count", d->retry_count);
    return s;
}

/* Handles one delivery: calls fn under the message's trace context, then acks, or
 * republishes to Q.retry / Q.dlq with confirms and acks. Returns OMS_OK, or an error
 * when the connection must be torn down (the broker then redelivers). */
static int consumer_handle(oms_amqp_consumer *c, amqp_envelope_t *env, oms_error *err)
{
    oms_amqp_decoded dec;
    int rc;

    oms_amqp_decode(&env->message.properties, env->exchange.bytes, env->exchange.len,
                    env->message.body.bytes, env->message.body.len, &dec);
    const char *exchange = dec.exchange, *mid = dec.message_id, *tp = dec.traceparent;
    const char *body = dec.body;
    int retry = dec.retry_count;

    int verdict;
    oms_span *span = consume_span_start(c, &dec, env->delivery_tag);
    if (!body) {
        oms_log_warn("amqp message too large, dead-lettering", "queue", c->queue, "message_id",
                     mid);
        verdict = OMS_INVALID;
    } else {
        oms_amqp_delivery d = {exchange, mid, tp, retry, body, env->message.body.len};
        verdict = c->fn(&d, c->ud);
    }

    const char *target = NULL;
    int next_retry = retry;
    if (c->transient || verdict == OMS_OK || verdict == OMS_DUPLICATE) {
        target = NULL;
    } else if (verdict == OMS_INVALID) {
        target = c->dlq;
        oms_log_warn("amqp message rejected as invalid, moved to dead-letter queue", "queue",
                     c->queue, "message_id", mid);
    } else if (retry + 1 > c->max_retries) {
        target = c->dlq;
        oms_log_warn("amqp message failed after max retries, moved to dead-letter queue", "queue",
                     c->queue, "message_id", mid);
    } else {
        target = c->retry_queue;
        next_retry = retry + 1;
    }

    if (target) {
        /* Body of an oversized message was not copied; the original bytes are still in
         * the envelope and are forwarded as they are. */
        oms_amqp_msg m = {"",
                          target,
                          mid,
                          tp,
                          next_retry,
                          body ? body : (const char *)env->message.body.bytes,
                          env->message.body.len};
        int confirmed = 0;
        c->pub->orig_exchange = exchange;
        rc = oms_amqp_publish(c->pub, &m, 1, &confirmed, AMQP_REPUBLISH_TIMEOUT_MS, err);
        c->pub->orig_exchange = NULL;
        if (rc != OMS_OK || !confirmed) {
            if (rc == OMS_OK)
                rc = oms_error_set(err, OMS_UNAVAILABLE, "republish to %s not confirmed", target);
            goto out; /* no ack: the broker redelivers once we reconnect */
        }
    }
    if (amqp_basic_ack(c->conn, AMQP_CHANNEL, env->delivery_tag, 0) != AMQP_STATUS_OK) {
        rc = oms_error_set(err, OMS_UNAVAILABLE, "amqp ack on %s failed", c->queue);
        goto out;
    }
    if (!target)
        count_outcome(c->queue, CONSUMED_TOTAL, CONSUMED_HELP, 1);
    else if (target == c->retry_queue)
        count_outcome(c->queue, RETRIED_TOTAL, RETRIED_HELP, 1);
    else
        count_outcome(c->queue, DEAD_TOTAL, DEAD_HELP, 1);
    if (target)
        oms_span_add_event(span, target == c->retry_queue ? "retry scheduled" : "dead-lettered",
                           "messaging.destination.name", target);
    rc = OMS_OK;
out:
    if (verdict != OMS_OK && verdict != OMS_DUPLICATE)
        oms_span_set_status(span, OMS_SPAN_ERROR, oms_status_text(verdict));
    else if (rc != OMS_OK)
        oms_span_set_status(span, OMS_SPAN_ERROR, err->msg);
    oms_span_end(span); /* restores the consumer thread's empty context */
    oms_amqp_decoded_free(&dec);
    return rc;
}

/* After consume_message reported a non-delivery frame: read it and decide whether the
 * connection is still usable. */
static int consumer_other_frame(oms_amqp_consumer *c, oms_error *err)
{
    struct timeval tv;
    amqp_frame_t f;
    ms_to_tv(AMQP_POLL_MS, &tv);
    int st = amqp_simple_wait_frame_noblock(c->conn, &f, &tv);
    if (st == AMQP_STATUS_TIMEOUT)
        return OMS_OK;
    if (st != AMQP_STATUS_OK)
        return oms_error_set(err, OMS_UNAVAILABLE, "amqp read: %s", amqp_error_string2(st));
    if (f.frame_type != AMQP_FRAME_METHOD)
        return OMS_OK;
    switch (f.payload.method.id) {
    case AMQP_CHANNEL_CLOSE_METHOD: {
        const amqp_channel_close_t *m = f.payload.method.decoded;
        return oms_error_set(err, OMS_UNAVAILABLE, "channel closed by broker: %u %.*s",
                             m->reply_code, (int)m->reply_text.len,
                             (const char *)m->reply_text.bytes);
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        const amqp_connection_close_t *m = f.payload.method.decoded;
        return oms_error_set(err, OMS_UNAVAILABLE, "connection closed by broker: %u %.*s",
                             m->reply_code, (int)m->reply_text.len,
                             (const char *)m->reply_text.bytes);
    }
    case AMQP_BASIC_CANCEL_METHOD:
        /* Queue deleted under us: reconnecting re-declares it. */
        return oms_error_set(err, OMS_UNAVAILABLE, "consumer on %s cancelled by broker", c->queue);
    default: return OMS_OK;
    }
}

/* Consumes until an error or stop. */
static void consumer_run(oms_amqp_consumer *c, oms_error *err)
{
    while (!atomic_load(&c->stop)) {
        struct timeval tv;
        amqp_envelope_t env;
        ms_to_tv(AMQP_POLL_MS, &tv);
        amqp_maybe_release_buffers(c->conn);
        amqp_rpc_reply_t r = amqp_consume_message(c->conn, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT)
            continue;
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            if (consumer_other_frame(c, err) != OMS_OK)
                return;
            continue;
        }
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            char desc[256];
            reply_describe(r, desc, sizeof(desc));
            oms_error_set(err, OMS_UNAVAILABLE, "amqp consume on %s: %s", c->queue, desc);
            return;
        }
        int rc = consumer_handle(c, &env, err);
        amqp_destroy_envelope(&env);
        if (rc != OMS_OK)
            return;
    }
}

/* Sleeps ms in slices so a stop request is noticed within AMQP_POLL_MS. */
static void consumer_sleep(oms_amqp_consumer *c, int ms)
{
    int64_t until = oms_mono_ms() + ms;
    while (!atomic_load(&c->stop)) {
        int64_t left = until - oms_mono_ms();
        if (left <= 0)
            return;
        if (left > AMQP_POLL_MS)
            left = AMQP_POLL_MS;
        struct timespec ts = {0, (long)left * 1000000L};
        nanosleep(&ts, NULL); /* EINTR just shortens one slice */
    }
}

/* A queue exists with another type or arguments (OMS_CONFLICT from the declare): an
 * operator's job, not an outage. One error line per queue (its first worker's), not one
 * per worker and retry; the workers keep retrying with backoff, so deleting the queue
 * is enough to recover. */
static void consumer_conflict(oms_amqp_consumer *c, const char *why)
{
    if (c->worker != 0 || c->conflict_logged)
        return;
    c->conflict_logged = 1;
    oms_log_error("amqp queue exists with another type or arguments; not consuming", "queue",
                  c->queue, "queue_type", c->cfg.quorum ? "quorum" : "classic", "error", why);
}

/* Connect, declare, consume until the connection breaks or stop, then again. A broken
 * connection moves the next attempt to the following node at once (failover); a round
 * in which no node could be set up waits with backoff before the next one. */
static void *consumer_thread(void *arg)
{
    oms_amqp_consumer *c = arg;
    int backoff = AMQP_BACKOFF_MIN_MS;
    oms_thread_background();
    while (!atomic_load(&c->stop)) {
        oms_error err;
        oms_error_clear(&err);
        int rc = conn_open(&c->cfg, &c->node, AMQP_IO_TIMEOUT_MS, &c->conn, &err);
        int reached = rc == OMS_OK;
        if (rc == OMS_OK) {
            rc = consumer_setup(c, &err);
            if (rc != OMS_OK)
                conn_drop(&c->conn);
        }
        if (rc != OMS_OK) {
            if (rc == OMS_CONFLICT)
                consumer_conflict(c, err.msg);
            else
                link_down(&c->link, c->queue, &c->cfg, reached ? (int)c->node : -1, err.msg);
            if (reached) /* it answered but could not serve us: try the next one first */
                c->node = node_after(&c->cfg, c->node);
            consumer_sleep(c, backoff);
            backoff = backoff * 2 > AMQP_BACKOFF_MAX_MS ? AMQP_BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        backoff = AMQP_BACKOFF_MIN_MS;
        c->conflict_logged = 0;
        link_up(&c->link, c->queue, &c->cfg, c->node);
        atomic_store(&c->at, (int)c->node);
        atomic_store(&c->connected, 1);
        if (c->on_connect)
            c->on_connect(c->ud);
        consumer_run(c, &err);
        atomic_store(&c->connected, 0);
        atomic_store(&c->at, -1);
        if (atomic_load(&c->stop)) {
            conn_close(&c->conn);
            break;
        }
        conn_drop(&c->conn);
        link_down(&c->link, c->queue, &c->cfg, (int)c->node, err.msg);
        c->node = node_after(&c->cfg, c->node);
        pub_reset(c->pub, c->node);
    }
    return NULL;
}

/* One worker: its own connection, publisher and thread. */
static int consumer_start_one(oms_amqp_consumer **out, const oms_amqp_config *cfg,
                              const oms_amqp_consumer_config *cc, int worker, oms_error *err)
{
    oms_amqp_consumer *c = oms_xcalloc(1, sizeof(*c));
    if (settings_parse(&c->cfg, cfg, err) != OMS_OK) {
        settings_free(&c->cfg);
        free(c);
        return OMS_INVALID;
    }
    c->worker = worker;
    c->link.node = -1;
    c->queue = oms_strdup(cc->queue);
    c->retry_queue = str_concat(cc->queue, ".retry");
    c->dlq = str_concat(cc->queue, ".dlq");
    c->nexchanges = cc->nexchanges;
    c->exchanges = oms_xcalloc(cc->nexchanges ? cc->nexchanges : 1, sizeof(char *));
    for (size_t i = 0; i < cc->nexchanges; i++)
        c->exchanges[i] = oms_strdup(cc->exchanges[i]);
    c->prefetch = cc->prefetch > 0 ? (cc->prefetch > 65535 ? 65535 : cc->prefetch) : 16;
    c->max_retries = cc->max_retries > 0 ? cc->max_retries : 5;
    c->retry_delay_ms = cc->retry_delay_ms > 0 ? cc->retry_delay_ms : 1000;
    c->fn = cc->fn;
    c->ud = cc->ud;
    c->transient = cc->transient;
    c->on_connect = cc->on_connect;
    /* Zero series: a scrape shows every queue's counters before its first message. */
    count_outcome(c->queue, CONSUMED_TOTAL, CONSUMED_HELP, 0);
    count_outcome(c->queue, RETRIED_TOTAL, RETRIED_HELP, 0);
    count_outcome(c->queue, DEAD_TOTAL, DEAD_HELP, 0);
    atomic_init(&c->stop, 0);
    atomic_init(&c->connected, 0);
    atomic_init(&c->at, -1);
    (void)oms_amqp_publisher_new(&c->pub, cfg); /* cannot fail: aborts on OOM */

    int e = pthread_create(&c->thread, NULL, consumer_thread, c);
    if (e != 0) {
        consumer_free(c);
        return oms_error_set(err, OMS_ERR, "amqp consumer %s: pthread_create: %s", cc->queue,
                             strerror(e));
    }
    *out = c;
    return OMS_OK;
}

#define CONSUMER_WORKERS_MAX 64

int oms_amqp_consumer_start(oms_amqp_consumer **out, const oms_amqp_config *cfg,
                            const oms_amqp_consumer_config *cc, oms_error *err)
{
    if (!out || !cc || !cc->queue || !*cc->queue || !cc->fn)
        return oms_error_set(err, OMS_INVALID, "amqp consumer: queue and handler are required");
    if (cc->nexchanges && !cc->exchanges)
        return oms_error_set(err, OMS_INVALID, "amqp consumer %s: exchanges missing", cc->queue);
    if (strlen(cc->queue) > 240)
        return oms_error_set(err, OMS_INVALID, "amqp consumer: queue name '%.40s...' too long",
                             cc->queue);
    if (cc->workers < 0 || cc->workers > CONSUMER_WORKERS_MAX)
        return oms_error_set(err, OMS_INVALID, "amqp consumer %s: workers must be 1 to %d",
                             cc->queue, CONSUMER_WORKERS_MAX);
    int rc = oms_amqp_config_check(cfg, err);
    if (rc != OMS_OK)
        return rc;
    int n = cc->workers ? cc->workers : 1;
    oms_amqp_consumer *head = NULL, **tail = &head;
    for (int i = 0; i < n; i++) {
        oms_amqp_consumer *c = NULL;
        rc = consumer_start_one(&c, cfg, cc, i, err);
        if (rc != OMS_OK) {
            oms_amqp_consumer_stop(head);
            return rc;
        }
        *tail = c; /* in start order: head is worker 0 */
        tail = &c->next_worker;
    }
    *out = head;
    return OMS_OK;
}

const char *oms_amqp_consumer_node(const oms_amqp_consumer *c)
{
    int i = c ? atomic_load(&c->at) : -1;
    return i >= 0 ? c->cfg.nodes[i].addr : NULL;
}

int oms_amqp_consumer_connected(const oms_amqp_consumer *c)
{
    if (!c)
        return 0;
    for (; c; c = c->next_worker)
        if (!atomic_load(&c->connected))
            return 0;
    return 1;
}

void oms_amqp_consumer_stop(oms_amqp_consumer *c)
{
    /* All flags first, so the workers wind down together rather than one by one. */
    for (oms_amqp_consumer *w = c; w; w = w->next_worker)
        atomic_store(&w->stop, 1);
    while (c) {
        oms_amqp_consumer *next = c->next_worker;
        int e = pthread_join(c->thread, NULL);
        if (e != 0)
            oms_log_errorf("amqp consumer %s: pthread_join: %s", c->queue, strerror(e));
        consumer_free(c);
        c = next;
    }
}
