/* oms-payments, as a declaration (oms/app.h runs it): a checkout session per order
 * (consumer.c), the Stripe webhook and, in local mode, the local checkout pages over
 * HTTP, the checkout deadline ticker, an outbox for order.paid / order.cancelled /
 * order.refunded, and the orders and stock clients. gRPC serves grpc.health.v1 only. */
#include <string.h>

#include "consumer.h"
#include "http_routes.h"
#include "oms/app.h"
#include "oms/stock_calls.h"
#include "oms/log.h"
#include "oms/util.h"
#include "orders_client.h"
#include "processor/processor.h"
#include "service.h"
#include "store.h"

static struct {
    char *orders_addrs;
    char *stock_addrs;
    long long checkout_ttl_s;
    long long checkout_sweep_ms;
    char *processor;
    char *stripe_key;
    char *stripe_api_base;
    char *webhook_secret;
    char *gateway_url;
    char *public_url;
} cfg;

static const oms_cfg_def config[] = {
    OMS_CFG_STR_ROW("ORDERS_ADDRS", "127.0.0.1:2000", &cfg.orders_addrs,
                    "orders gRPC addresses (comma list: round robin)"),
    OMS_CFG_STR_ROW("STOCK_ADDRS", "127.0.0.1:2002", &cfg.stock_addrs,
                    "stock gRPC addresses: a payment commits its order's stock, a deadline "
                    "releases it"),
    OMS_CFG_INT_ROW("CHECKOUT_TTL", "1800", 1, 86400, &cfg.checkout_ttl_s,
                    "seconds a checkout can be paid; then the order is cancelled (stripe: "
                    "1800..86400)"),
    OMS_CFG_INT_ROW("CHECKOUT_SWEEP_MS", "1000", 10, 3600000, &cfg.checkout_sweep_ms,
                    "how often checkouts past their deadline are closed (ms)"),
    OMS_CFG_ENUM_ROW("PAYMENT_PROCESSOR", "local", "local|stripe", &cfg.processor,
                     "local (offline checkout page) or stripe (Stripe Checkout)"),
    OMS_CFG_STR_ROW("STRIPE_KEY", "", &cfg.stripe_key,
                    "Stripe secret key, required with stripe (never logged)"),
    OMS_CFG_URL_ROW("STRIPE_API_BASE", "https://api.stripe.com", &cfg.stripe_api_base,
                    "Stripe API base URL"),
    OMS_CFG_STR_ROW("STRIPE_WEBHOOK_SECRET", "whsec_local_dev", &cfg.webhook_secret,
                    "webhook signing secret (never logged); stripe mode needs a real whsec_ one"),
    OMS_CFG_URL_ROW("GATEWAY_HTTP_ADDR", "http://localhost:8080", &cfg.gateway_url,
                    "public gateway URL for the success/cancel pages"),
    OMS_CFG_URL_ROW("PAYMENTS_PUBLIC_URL", "http://localhost:8081", &cfg.public_url,
                    "public URL of this service (local checkout links)"),
};

static const payment_processor *processor;
static payments_processor_config pcfg;
static payments_service svc;

/* Secrets anyone can read in our repository or in Stripe's docs: with one of them a
 * stranger could sign a "payment completed" event. */
static const char *const public_secrets[] = {"whsec_local_dev", "whsec_test_secret", "whsec_test",
                                             "whsec_secret",    "whsec_changeme",    "whsec_"};

/* Stripe mode takes real money: refuse to start with a secret that signs nothing real,
 * or with a deadline Stripe would refuse (expires_at must be 30 min to 24 h away). */
static void stripe_mode_check(void)
{
    const char *sec = cfg.webhook_secret;
    if (!sec[0] || strncmp(sec, "whsec_", 6) != 0)
        oms_app_config_fail("payments", "STRIPE_WEBHOOK_SECRET: PAYMENT_PROCESSOR=stripe needs "
                                        "the endpoint's signing secret (whsec_...) from Stripe");
    for (size_t i = 0; i < OMS_NELEM(public_secrets); i++)
        if (strcmp(sec, public_secrets[i]) == 0)
            oms_app_config_fail("payments",
                                "STRIPE_WEBHOOK_SECRET: a published example secret; set the "
                                "endpoint's signing secret from Stripe");
    if (cfg.checkout_ttl_s < 1800 || cfg.checkout_ttl_s > 86400)
        oms_app_config_fail("payments", "CHECKOUT_TTL=%lld: Stripe accepts 1800 to 86400 seconds",
                            cfg.checkout_ttl_s);
}

/* The processor, before anything that could hand it work. The local checkout pages
 * exist only in local mode: in stripe mode they would let anyone "pay" a Stripe
 * session for free. */
static int payments_prepare(oms_service_rt *rt, oms_error *err)
{
    int local_mode = strcmp(cfg.processor, "local") == 0;
    if (!local_mode)
        stripe_mode_check();
    rt->routes = local_mode ? payments_http_routes_local : payments_http_routes_stripe;
    rt->nroutes = local_mode ? payments_http_routes_local_count : payments_http_routes_stripe_count;
    processor = payments_processor_find(cfg.processor);
    if (!processor) /* the config enum makes this unreachable; stay safe anyway */
        return oms_error_set(err, OMS_INVALID, "unknown payment processor %s", cfg.processor);
    pcfg.gateway_url = cfg.gateway_url;
    pcfg.public_url = cfg.public_url;
    pcfg.stripe_key = cfg.stripe_key;
    pcfg.stripe_api = cfg.stripe_api_base;
    oms_error e;
    oms_error_clear(&e);
    if (processor->init && processor->init(&pcfg, &e) != OMS_OK)
        return oms_error_set(err, OMS_ERR, "cannot start payment processor %s: %s", processor->name,
                             e.msg);
    oms_log_info("payment processor ready", "processor", processor->name);
    return OMS_OK;
}

static void payments_unprepare(oms_service_rt *rt)
{
    if (processor->cleanup)
        processor->cleanup();
}

static int payments_start(oms_service_rt *rt, oms_error *err)
{
    svc.db = rt->db;
    svc.processor = processor;
    svc.pcfg = &pcfg;
    svc.checkout_ttl_ms = cfg.checkout_ttl_s * 1000;
    payments_orders_client_port(&svc.orders, oms_service_client_of(rt, "orders"));
    svc.stock = (payments_stock_port){oms_stock_commit, oms_stock_release,
                                      oms_service_client_of(rt, "stock")};
    svc.webhook_secret = cfg.webhook_secret;
    svc.gateway_url = cfg.gateway_url;
    svc.outbox_notify = oms_outbox_relay_wake;
    svc.outbox_ud = rt->relay;
    rt->ud = &svc;
    return OMS_OK;
}

/* Closes the checkouts whose CHECKOUT_TTL has passed. */
static int deadline_tick(void *ud, oms_error *err)
{
    return payments_expire_due(ud, NULL, err);
}

static const oms_service_def payments = {
    .name = "payments",
    .config = config,
    .nconfig = OMS_NELEM(config),
    .prepare = {payments_prepare, payments_unprepare},
    .start = {payments_start, NULL},
    .db_open = payments_store_open,
    .outbox = 1,
    .grpc = {"127.0.0.1:2001", "gRPC listen address (grpc.health.v1 only)"},
    .http = {"PAYMENTS_HTTP_ADDR", "127.0.0.1:8081",
             "webhook, local checkout and /healthz /readyz /metrics listen address"},
    .consumes = payments_consumers,
    .nconsumes = &payments_nconsumers,
    .clients = {{"orders", &cfg.orders_addrs}, {"stock", &cfg.stock_addrs}},
    .tickers = {{"checkout deadline", &cfg.checkout_sweep_ms, deadline_tick}},
};

int main(int argc, char **argv)
{
    return oms_service_run(&payments, argc, argv);
}
