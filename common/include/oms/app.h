/* What every service's main does the same way: the shared configuration entries
 * (logging, RabbitMQ), --help, loading and validating the table, and logger set-up. */
#ifndef OMS_APP_H
#define OMS_APP_H

#include "oms/amqp.h"
#include "oms/config.h"
#include "oms/retention.h"
#include "oms/grpc_server.h"
#include "oms/status.h"

typedef struct oms_app_common {
    char *log_level;
    char *log_format;
    char *rabbitmq_host;
    long long rabbitmq_port;
    char *rabbitmq_user;
    char *rabbitmq_password;
    char *rabbitmq_vhost;
    long long max_retries;
    long long retry_delay_ms;
    long long consumer_workers;
    long long outbox_retention_s;
    long long inbox_retention_s;
} oms_app_common;

/* Config entries for oms_app_common, to put in a service's table. */
#define OMS_APP_LOG_CONFIG(c)                                                                      \
    {"LOG_LEVEL", OMS_CFG_ENUM,         "info", 0, 0, "debug|info|warn|error", &(c)->log_level,    \
     NULL,        "lowest level logged"},                                                          \
    {                                                                                              \
        "LOG_FORMAT", OMS_CFG_ENUM, "json", 0, 0, "json|console", &(c)->log_format, NULL,          \
            "json lines, or console for humans"                                                    \
    }
#define OMS_APP_AMQP_CONFIG(c)                                                                     \
    {"RABBITMQ_HOST",     OMS_CFG_STR, "127.0.0.1",    0, 0, NULL,                                 \
     &(c)->rabbitmq_host, NULL,        "RabbitMQ host"},                                           \
        {"RABBITMQ_PORT",     OMS_CFG_INT, "5672", 1, 65535, NULL, &(c)->rabbitmq_port, NULL,      \
         "RabbitMQ AMQP port"},                                                                    \
        {"RABBITMQ_USER",     OMS_CFG_STR, "guest",        0, 0, NULL,                             \
         &(c)->rabbitmq_user, NULL,        "RabbitMQ user"},                                       \
        {"RABBITMQ_PASSWORD",                                                                      \
         OMS_CFG_STR,                                                                              \
         "guest",                                                                                  \
         0,                                                                                        \
         0,                                                                                        \
         NULL,                                                                                     \
         &(c)->rabbitmq_password,                                                                  \
         NULL,                                                                                     \
         "RabbitMQ password (never logged)"},                                                      \
        {"RABBITMQ_VHOST",       OMS_CFG_STR, "/", 0, 0, NULL, &(c)->rabbitmq_vhost, NULL,         \
         "RabbitMQ virtual host"},                                                                 \
        {"MAX_RETRIES",                                                                            \
         OMS_CFG_INT,                                                                              \
         "5",                                                                                      \
         0,                                                                                        \
         100,                                                                                      \
         NULL,                                                                                     \
         &(c)->max_retries,                                                                        \
         NULL,                                                                                     \
         "deliveries of a failing message before it goes to <queue>.dlq"},                         \
        {"RETRY_DELAY_MS",                                                                         \
         OMS_CFG_INT,                                                                              \
         "1000",                                                                                   \
         1,                                                                                        \
         3600000,                                                                                  \
         NULL,                                                                                     \
         &(c)->retry_delay_ms,                                                                     \
         NULL,                                                                                     \
         "delay before a failed message is retried"},                                              \
        {"CONSUMER_WORKERS",                                                                       \
         OMS_CFG_INT,                                                                              \
         "4",                                                                                      \
         1,                                                                                        \
         64,                                                                                       \
         NULL,                                                                                     \
         &(c)->consumer_workers,                                                                   \
         NULL,                                                                                     \
         "consumers per event queue, handling deliveries concurrently"},                           \
        {"OUTBOX_RETENTION_S",                                                                     \
         OMS_CFG_INT,                                                                              \
         "86400",                                                                                  \
         0,                                                                                        \
         31622400,                                                                                 \
         NULL,                                                                                     \
         &(c)->outbox_retention_s,                                                                 \
         NULL,                                                                                     \
         "seconds a sent outbox row is kept (0: forever)"},                                        \
    {                                                                                              \
        "INBOX_RETENTION_S", OMS_CFG_INT, "604800", 0, 31622400, NULL, &(c)->inbox_retention_s,    \
            NULL, "seconds a processed message id is kept against redelivery (0: forever)"         \
    }

/* Handles --help (prints the table, exits 0), loads the table (on error prints the
 * one-line message to stderr and exits 2), then initialises the logger from
 * common's LOG_LEVEL/LOG_FORMAT and the tracer from the OTEL_* variables (a table
 * shared by every service, printed by --help after the service's own). Blocks
 * SIGINT/SIGTERM first (oms_signals_block). */
void oms_app_start(const char *service, const oms_cfg_def *defs, size_t n,
                   const oms_app_common *common, int argc, char **argv);
/* A rule between variables that the table cannot state (RESERVATION_TTL later than
 * CHECKOUT_TTL; a real webhook secret in stripe mode): prints one line
 * "oms-<service>: config: <message>" on stderr and exits 2, like a bad value. */
void oms_app_config_fail(const char *service, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
/* The relay's retention from OUTBOX_RETENTION_S / INBOX_RETENTION_S. */
void oms_app_retention(const oms_app_common *common, oms_retention *out);
/* The last call of main: stops the readiness watcher if still running, flushes the
 * spans still queued (bounded wait) and frees what oms_app_start set up. */
void oms_app_stop(void);

/* Keeps grpc.health.v1 of s in step with /readyz: a thread runs
 * oms_admin_check_ready every second and reports SERVING or NOT_SERVING. Call after
 * oms_admin_set_ready; stop it with oms_app_ready_watch_stop before stopping s or
 * anything the readiness check reads. */
int oms_app_ready_watch_start(oms_grpc_server *s, oms_error *err);
/* Stops and joins the watcher; no-op when none runs. */
void oms_app_ready_watch_stop(void);
/* The broker settings from common (pointers borrowed from common). */
void oms_app_amqp_config(const oms_app_common *common, oms_amqp_config *out);

#endif
