/* A service as a declaration (nginx's modules, run by one loop in
 * src/os/unix/ngx_process_cycle.c): main.c fills a static const oms_service_def --
 * its configuration rows, database, gRPC methods, HTTP routes, consumed events,
 * outbox, the gRPC clients it needs, tickers and its own start/stop hooks -- and calls
 * oms_service_run, which owns everything every service does the same way: the shared
 * configuration rows and --help, logging and tracing, start in order, readiness, the
 * signal wait and the stop in reverse order. */
#ifndef OMS_APP_H
#define OMS_APP_H

#include <stddef.h>

#include "oms/config.h"
#include "oms/db.h"
#include "oms/events.h"
#include "oms/grpc_client.h"
#include "oms/grpc_server.h"
#include "oms/http.h"
#include "oms/outbox.h"
#include "oms/status.h"

/* The settings every service shares (targets of the OMS_APP_* rows below). */
typedef struct oms_app_common {
    char *log_level;
    char *log_format;
    char *rabbitmq_host;
    long long rabbitmq_port;
    char *rabbitmq_user;
    char *rabbitmq_password;
    char *rabbitmq_vhost;
    char *rabbitmq_addrs;      /* RABBITMQ_ADDRS: cluster nodes, "" = host/port */
    char *rabbitmq_queue_type; /* RABBITMQ_QUEUE_TYPE: classic | quorum */
    long long max_retries;
    long long retry_delay_ms;
    long long consumer_workers;
    long long outbox_retention_s;
    long long inbox_retention_s;
    oms_http_limits http;
    oms_db_pool_config db_pool;
    long long grpc_max_in_flight; /* GRPC_MAX_IN_FLIGHT, services with a gRPC server */
} oms_app_common;

/* Row sets for oms_app_common; the runner puts in a service's table those it uses (log
 * and HTTP always, AMQP with consumers or an outbox, the pool with a database). */
// clang-format off
#define OMS_APP_LOG_CONFIG(c) \
    OMS_CFG_ENUM_ROW("LOG_LEVEL", "info", "debug|info|warn|error", &(c)->log_level, \
        "lowest level logged"), \
    OMS_CFG_ENUM_ROW("LOG_FORMAT", "json", "json|console", &(c)->log_format, \
        "json lines, or console for humans")
#define OMS_APP_AMQP_CONFIG(c) \
    OMS_APP_AMQP_CONN_CONFIG(c), \
    OMS_APP_AMQP_QUEUE_CONFIG(c)
/* The connection alone: a service that only reads events into a queue of its own. */
#define OMS_APP_AMQP_CONN_CONFIG(c) \
    OMS_CFG_STR_ROW("RABBITMQ_HOST", "127.0.0.1", &(c)->rabbitmq_host, "RabbitMQ host"), \
    OMS_CFG_INT_ROW("RABBITMQ_PORT", "5672", 1, 65535, &(c)->rabbitmq_port, "RabbitMQ AMQP port"), \
    OMS_CFG_STR_ROW("RABBITMQ_USER", "guest", &(c)->rabbitmq_user, "RabbitMQ user"), \
    OMS_CFG_STR_ROW("RABBITMQ_PASSWORD", "guest", &(c)->rabbitmq_password, \
        "RabbitMQ password (never logged)"), \
    OMS_CFG_STR_ROW("RABBITMQ_VHOST", "/", &(c)->rabbitmq_vhost, "RabbitMQ virtual host"), \
    OMS_CFG_STR_ROW("RABBITMQ_ADDRS", "", &(c)->rabbitmq_addrs, \
        "cluster nodes host:port,...; a lost connection moves to the next (default: HOST:PORT)")
#define OMS_APP_AMQP_QUEUE_CONFIG(c) \
    OMS_CFG_ENUM_ROW("RABBITMQ_QUEUE_TYPE", "classic", "classic|quorum", &(c)->rabbitmq_queue_type, \
        "quorum: every consumer queue is replicated on the cluster's nodes"), \
    OMS_CFG_INT_ROW("MAX_RETRIES", "5", 0, 100, &(c)->max_retries, \
        "deliveries of a failing message before it goes to <queue>.dlq"), \
    OMS_CFG_INT_ROW("RETRY_DELAY_MS", "1000", 1, 3600000, &(c)->retry_delay_ms, \
        "delay before a failed message is retried"), \
    OMS_CFG_INT_ROW("CONSUMER_WORKERS", "4", 1, 64, &(c)->consumer_workers, \
        "consumers per event queue, handling deliveries concurrently"), \
    OMS_CFG_INT_ROW("OUTBOX_RETENTION_S", "86400", 0, 31622400, &(c)->outbox_retention_s, \
        "seconds a sent outbox row is kept (0: forever)"), \
    OMS_CFG_INT_ROW("INBOX_RETENTION_S", "604800", 0, 31622400, &(c)->inbox_retention_s, \
        "seconds a processed message id is kept against redelivery (0: forever)")
#define OMS_APP_HTTP_CONFIG(c) \
    OMS_CFG_INT_ROW("HTTP_TIMEOUT_S", "30", 1, 3600, &(c)->http.timeout_s, \
        "seconds a connection may idle, and a whole request may take to arrive"), \
    OMS_CFG_INT_ROW("HTTP_CONN_LIMIT", "512", 1, 100000, &(c)->http.conn_limit, \
        "open HTTP connections (split over the server's threads)"), \
    OMS_CFG_INT_ROW("HTTP_PER_IP_LIMIT", "128", 0, 100000, &(c)->http.per_ip_limit, \
        "open HTTP connections from one address (0: no limit, e.g. behind a proxy)"), \
    OMS_CFG_INT_ROW("HTTP_MAX_IN_FLIGHT", "64", 0, 100000, &(c)->http.max_in_flight, \
        "requests being handled or waiting for a worker; one more is 503 at once (0: no bound)"), \
    OMS_CFG_INT_ROW("HTTP_MAX_QUEUE_MS", "10", 0, 600000, &(c)->http.max_queue_ms, \
        "a request is 503 at once while the oldest one waiting for a worker has waited this long (0: no bound)"), \
    OMS_CFG_INT_ROW("HTTP_MAX_STREAMS", "2000", 1, 100000, &(c)->http.max_streams, \
        "open event streams (Server-Sent Events); one more is 503"), \
    OMS_CFG_INT_ROW("HTTP_SSE_HEARTBEAT_MS", "15000", 10, 3600000, &(c)->http.heartbeat_ms, \
        "a comment line on every event stream this often (keeps it open, finds gone clients)")
#define OMS_APP_GRPC_CONFIG(c) \
    OMS_CFG_INT_ROW("GRPC_MAX_IN_FLIGHT", "64", 1, 10000, &(c)->grpc_max_in_flight, \
        "gRPC calls queued or running; one more is RESOURCE_EXHAUSTED at once (health never)")
#define OMS_APP_DB_CONFIG(c) \
    OMS_CFG_INT_ROW("DB_POOL_SIZE", "8", 1, 256, &(c)->db_pool.size, \
        "PostgreSQL connections of this process"), \
    OMS_CFG_INT_ROW("DB_POOL_WAIT_MS", "5000", 1, 600000, &(c)->db_pool.wait_ms, \
        "ms a transaction waits for a free PostgreSQL connection before 503 / UNAVAILABLE")
// clang-format on

/* ---- the declaration ----------------------------------------------------------------- */

#define OMS_SERVICE_MAX_CLIENTS 4
#define OMS_SERVICE_MAX_TICKERS 2

/* What the runner has started, handed to the hooks. Fields are NULL for parts the
 * service does not declare. */
typedef struct oms_service_rt {
    const struct oms_service_def *def; /* the declaration being run */
    oms_db *db;                        /* the database (owned by the runner) */
    oms_outbox_relay *relay;           /* its outbox relay (wake it after a commit) */
    oms_grpc_client *clients[OMS_SERVICE_MAX_CLIENTS]; /* in the order of def->clients */
    /* The service: user data of the gRPC methods, HTTP routes, event handlers and
     * tickers. The start hook sets it. */
    void *ud;
    /* The broker settings (with def->broker, consumers or an outbox), for parts the
     * service connects itself; NULL otherwise. Valid while the service runs. */
    const struct oms_amqp_config *amqp;
    /* The HTTP routes served: def->http's, unless the prepare hook picks others. */
    const oms_http_route *routes;
    size_t nroutes;
} oms_service_rt;

/* A hook's start returns OMS_OK or an error with a message saying what failed (the
 * runner logs it and stops what had started: exit 1). stop may be NULL; it runs only
 * when start succeeded. */
typedef struct oms_service_hook {
    int (*start)(oms_service_rt *rt, oms_error *err);
    void (*stop)(oms_service_rt *rt);
} oms_service_hook;

/* One delivery of a consumed event as its handler gets it; valid during the call. */
typedef struct oms_event_delivery {
    oms_event event;        /* the exchange is oms_event_exchanges[event] */
    const char *queue;      /* "<service>.<exchange>", also the inbox consumer name */
    const char *message_id; /* "" when the publisher set none */
    const char *body;
    size_t len;
} oms_event_delivery;

/* svc is rt->ud. OMS_OK or OMS_DUPLICATE: acknowledged. OMS_INVALID: dead-lettered.
 * Anything else: retried through <queue>.retry (MAX_RETRIES, RETRY_DELAY_MS). A failure
 * is logged by the runner with the queue, message id and err. */
typedef int (*oms_event_handler)(void *svc, const oms_event_delivery *d, oms_error *err);

/* One consumed event: durable queue <service>.<exchange> bound to the event's exchange,
 * CONSUMER_WORKERS consumers, 16 deliveries in flight each. */
typedef struct oms_service_consumer {
    oms_event event;
    oms_event_handler fn;
} oms_service_consumer;

/* A gRPC client the service needs; readiness depends on its health. */
typedef struct oms_service_client {
    const char *name;   /* the service it calls ("stock"): registry name and log field */
    char *const *addrs; /* the config field of its static address list (*_ADDRS) */
} oms_service_client;

/* fn(rt->ud, err) every *period_ms (oms/ticker.h), from after the consumers start. */
typedef struct oms_service_ticker {
    const char *name; /* "reservation expiry": thread and log name */
    const long long *period_ms;
    int (*fn)(void *ud, oms_error *err);
} oms_service_ticker;

/* Counts are pointers so a table defined in another file (extern const size_t) can be
 * named in a static initializer. */
typedef struct oms_service_def {
    const char *name;          /* "orders": logs, queue prefix, registry name */
    const oms_cfg_def *config; /* the service's own rows (targets in its own struct) */
    size_t nconfig;
    /* Hooks, in start order (stopped in reverse). prepare: right after the
     * configuration loaded, before anything starts -- rules between variables
     * (oms_app_config_fail) and parts that need no database (payments' processor).
     * start: once the database, clients and outbox relay run -- builds the service,
     * sets rt->ud, starts its own parts (stock's catalog, kitchen's stations). */
    oms_service_hook prepare;
    oms_service_hook start;
    /* DATABASE_URL (default var/<name>.db), opened by the store's function, which
     * applies its migrations; NULL: no database. */
    int (*db_open)(oms_db **out, const char *url, oms_error *err);
    int outbox; /* 1: an outbox relay (OUTBOX_RETENTION_S / INBOX_RETENTION_S) */
    /* 1: the service talks to the broker itself (the RABBITMQ_* rows, rt->amqp) though
     * it declares no consumer or outbox. */
    int broker;
    struct {
        const char *addr; /* default of GRPC_ADDR; NULL: no gRPC server */
        const char *help;
        const oms_grpc_method *methods; /* NULL: grpc.health.v1 only */
        const size_t *nmethods;
        const long long *threads; /* config field; NULL: 1 */
    } grpc;
    struct {
        const char *var;  /* its listen address variable, e.g. "ADMIN_ADDR" */
        const char *addr; /* default */
        const char *help;
        const oms_http_route *routes; /* NULL: OMS_ADMIN_ROUTES alone */
        const size_t *nroutes;
        char *const *static_dir;    /* config field of a directory of files; NULL: none */
        const long long *threads;   /* config field; NULL: 2 */
        const long long *budget_ms; /* config field: each request's deadline; NULL: none */
    } http;
    const oms_service_consumer *consumes; /* one queue each */
    const size_t *nconsumes;
    oms_service_client clients[OMS_SERVICE_MAX_CLIENTS]; /* up to the first NULL name */
    oms_service_ticker tickers[OMS_SERVICE_MAX_TICKERS]; /* up to the first NULL name */
} oms_service_def;

/* Runs the service until SIGINT/SIGTERM; returns main's exit code. --help prints the
 * table (the service's rows, then the shared ones, then tracing) and exits 0; a bad
 * value prints one line naming the variable and exits 2. Then, in order: prepare
 * hook, database, discovery, gRPC clients, outbox relay, start hook, consumers,
 * tickers, gRPC server, HTTP server, readiness watcher (gRPC health follows /readyz:
 * database, consumers, clients), registration in discovery. A step that fails is
 * logged and what started is stopped: 1. On a signal everything stops in reverse order,
 * discovery first so callers stop choosing this instance while it drains: 0. */
int oms_service_run(const oms_service_def *def, int argc, char **argv);

/* A rule between variables that the table cannot state (RESERVATION_TTL later than
 * CHECKOUT_TTL; a real webhook secret in stripe mode): prints one line
 * "oms-<service>: config: <message>" on stderr and exits 2, like a bad value. */
void oms_app_config_fail(const char *service, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/* The client declared under name (def->clients), or NULL. */
oms_grpc_client *oms_service_client_of(const oms_service_rt *rt, const char *name);

#endif
