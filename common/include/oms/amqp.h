/* RabbitMQ over rabbitmq-c: a confirming publisher and a consumer thread, both
 * reconnecting by themselves with backoff and re-declaring topology (docs/amqp.md).
 *
 * Topology: every event type is a durable fanout exchange (oms/events.h). A consumer
 * queue Q is durable and bound to its exchanges; Q.retry (durable, x-message-ttl =
 * retry delay, dead-lettering to the default exchange with routing key Q) holds
 * messages waiting to be retried; Q.dlq (durable) holds dead letters.
 * Messages are persistent and carry headers message-id (also the AMQP message_id
 * property), traceparent and x-retry-count.
 *
 * Delivery is at least once, never exactly once: a publish whose confirm was lost with
 * its connection is reported unconfirmed and sent again by the caller, and a delivery
 * whose ack was lost (the consumer's node died) is delivered again. Either way a message
 * id can arrive twice; the consumers' inbox absorbs that. A confirmed message is never
 * lost, and with quorum queues on a cluster that holds while a minority of nodes dies.
 *
 * Cluster: with several nodes in addrs, every connection (a publisher's, each consumer
 * worker's) goes to one node; when that connection breaks, the next attempt starts at
 * the node after the failed one and tries each node once per round, rounds spaced by
 * the usual backoff. Queues survive a node only as quorum queues (queue_type). */
#ifndef OMS_AMQP_H
#define OMS_AMQP_H

#include <stddef.h>

#include "oms/status.h"

typedef struct oms_amqp_config {
    const char *host;     /* RABBITMQ_HOST */
    int port;             /* RABBITMQ_PORT */
    const char *user;     /* RABBITMQ_USER */
    const char *password; /* RABBITMQ_PASSWORD */
    const char *vhost;    /* "/" */
    /* RABBITMQ_ADDRS: cluster nodes, "host:port,host:port,..." (at most 16; IPv6 as
     * [addr]:port; a node without :port uses port). NULL or "": host:port alone. */
    const char *addrs;
    /* RABBITMQ_QUEUE_TYPE: "classic" (also NULL or "") or "quorum": the x-queue-type of
     * every queue a consumer declares (Q, Q.retry, Q.dlq). A queue that already exists
     * with the other type is refused by the broker; the consumer logs one error naming
     * RABBITMQ_QUEUE_TYPE and the queue, and keeps retrying (delete the queue, or set
     * the variable to match). */
    const char *queue_type;
} oms_amqp_config;

/* OMS_OK when addrs and queue_type are valid, else OMS_INVALID with a one-line message
 * naming the variable (RABBITMQ_ADDRS or RABBITMQ_QUEUE_TYPE). For start-up checks;
 * the functions below apply the same check. */
int oms_amqp_config_check(const oms_amqp_config *cfg, oms_error *err);

typedef struct oms_amqp_msg {
    const char *exchange;    /* "" = default exchange */
    const char *routing_key; /* "" for fanout */
    const char *message_id;
    const char *traceparent; /* may be NULL or "" */
    int retry_count;
    const char *body;
    size_t len;
} oms_amqp_msg;

typedef struct oms_amqp_publisher oms_amqp_publisher;

/* Copies cfg. Connects lazily on first publish. Not thread-safe: one per thread.
 * Never fails: with an invalid cfg (oms_amqp_config_check) every publish returns
 * OMS_INVALID with the reason. */
int oms_amqp_publisher_new(oms_amqp_publisher **out, const oms_amqp_config *cfg);
void oms_amqp_publisher_free(oms_amqp_publisher *p);
/* Publishes n messages (mandatory, persistent) and waits up to timeout_ms for the
 * broker's confirms. Declares the event exchanges on (re)connect. Returns OMS_OK when
 * every message was confirmed; otherwise OMS_UNAVAILABLE (connection lost: nothing
 * should be considered sent; reconnects on the next call) or OMS_ERR (a nack or an
 * unroutable message), with confirmed[i] = 1 for each message the broker did confirm
 * (confirmed may be NULL). */
int oms_amqp_publish(oms_amqp_publisher *p, const oms_amqp_msg *msgs, size_t n, int *confirmed,
                     int timeout_ms, oms_error *err);
int oms_amqp_publisher_connected(const oms_amqp_publisher *p);
/* The node p is connected to, "host:port" as listed in addrs, or NULL while
 * disconnected. Owned by p; valid until p is freed. Same thread as the publishes. */
const char *oms_amqp_publisher_node(const oms_amqp_publisher *p);

typedef struct oms_amqp_delivery {
    const char *exchange;
    const char *message_id;  /* "" when absent */
    const char *traceparent; /* "" when absent */
    int retry_count;
    const char *body; /* NUL-terminated copy */
    size_t len;
} oms_amqp_delivery;

/* What a consumer reads from one delivery, decoded by oms_amqp_decode. Owns its
 * strings (free with oms_amqp_decoded_free). */
typedef struct oms_amqp_decoded {
    char *exchange;    /* header x-original-exchange (a retried message), else the delivery's */
    char *message_id;  /* header message-id, else the message_id property, else "" */
    char *traceparent; /* header traceparent as sent (unvalidated), "" when absent */
    int retry_count;   /* header x-retry-count (any integer kind or digits), 0..INT_MAX */
    char *body;        /* NUL-terminated copy; NULL when over the 4 MiB limit */
    size_t len;        /* body length as delivered */
} oms_amqp_decoded;

struct amqp_basic_properties_t_;
/* Pure decoding of a delivery's properties (headers table, message_id property),
 * exchange name and body into out; no connection involved, so it can be fuzzed.
 * Never fails: missing or mistyped headers decode to their defaults. */
void oms_amqp_decode(const struct amqp_basic_properties_t_ *props, const void *exchange,
                     size_t exchange_len, const void *body, size_t len, oms_amqp_decoded *out);
void oms_amqp_decoded_free(oms_amqp_decoded *d);

/* Returns OMS_OK or OMS_DUPLICATE: ack. OMS_AGAIN (or any other error): retry later
 * via Q.retry, dead-lettered to Q.dlq after max_retries. OMS_INVALID: unparseable,
 * straight to Q.dlq. The delivery's CONSUMER span ("<queue> process", a child of its
 * traceparent, oms/tracer.h) is the thread's current context
 * during the call. */
typedef int (*oms_amqp_handler)(const oms_amqp_delivery *d, void *ud);

typedef struct oms_amqp_consumer_config {
    const char *queue;            /* "orders.order.paid" */
    const char *const *exchanges; /* bound to queue */
    size_t nexchanges;
    int prefetch;       /* 0 = 16 */
    int max_retries;    /* MAX_RETRIES; 0 = 5 */
    int retry_delay_ms; /* 0 = 1000 */
    /* Consumers on the queue, each with its own connection and thread (0 = 1). With
     * more than one, deliveries are handled concurrently and in no fixed order, so fn
     * must allow that (an inbox and status guards make ours safe). A handler that
     * waits on another service (payments calling orders) keeps several in flight. */
    int workers;
    oms_amqp_handler fn;
    void *ud;
    /* 1: a queue of this process alone (a gateway's view of the events): exclusive,
     * auto-delete, not durable, no .retry or .dlq; every delivery is acknowledged
     * whatever fn returns (nothing to retry: it only tells watchers). */
    int transient;
    /* Called by the consumer thread each time it is consuming again after (re)connecting,
     * with ud; NULL: none. Events published while it was away are lost for a transient
     * queue, so this is where its owner catches up. */
    void (*on_connect)(void *ud);
} oms_amqp_consumer_config;

typedef struct oms_amqp_consumer oms_amqp_consumer;

/* Starts `workers` threads that each connect (retrying with backoff until stopped),
 * declare the topology, consume with manual ack, and call fn for each delivery, one at
 * a time per thread. cfg and cc are copied. OMS_INVALID for a bad cfg or cc. */
int oms_amqp_consumer_start(oms_amqp_consumer **out, const oms_amqp_config *cfg,
                            const oms_amqp_consumer_config *cc, oms_error *err);
/* 1 while every worker is connected and consuming (for /readyz). */
int oms_amqp_consumer_connected(const oms_amqp_consumer *c);
/* The node ("host:port" as listed in addrs) the consumer's first worker is consuming
 * from, or NULL while it is not. Owned by c; valid until oms_amqp_consumer_stop. Any
 * thread. */
const char *oms_amqp_consumer_node(const oms_amqp_consumer *c);
/* Stops the threads (each finishing the message in hand), closes and frees. NULL: no-op. */
void oms_amqp_consumer_stop(oms_amqp_consumer *c);

/* OMS_OK when a TCP+AMQP login to one of the nodes succeeds within timeout_ms (per
 * node, tried in order). */
int oms_amqp_ping(const oms_amqp_config *cfg, int timeout_ms, oms_error *err);

#endif
