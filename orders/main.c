/* oms-orders, as a declaration (oms/app.h runs it): OrderService over gRPC, the events
 * that move an order's status (consumer.c), an outbox for the events it publishes, and
 * the stock client that reserves, commits and releases an order's items. */
#include "consumer.h"
#include "grpc_handlers.h"
#include "oms/app.h"
#include "oms/util.h"
#include "service.h"
#include "stock_client.h"
#include "store.h"

static struct {
    char *stock_addrs;
    long long grpc_threads;
    long long max_open_orders;
    long long max_pending;
    char *payments_public_url;
} cfg;

static const oms_cfg_def config[] = {
    OMS_CFG_STR_ROW("STOCK_ADDRS", "127.0.0.1:2002", &cfg.stock_addrs,
                    "stock gRPC addresses (comma list: round robin)"),
    OMS_CFG_INT_ROW("GRPC_THREADS", "4", 1, 64, &cfg.grpc_threads, "gRPC worker threads"),
    OMS_CFG_INT_ROW("MAX_OPEN_ORDERS", "5", 0, 1000000, &cfg.max_open_orders,
                    "unpaid orders one customer may hold at once (0: no limit); more is 429"),
    OMS_CFG_INT_ROW("ORDERS_MAX_PENDING", "500", 0, 10000000, &cfg.max_pending,
                    "orders still waiting for their payment link past which a new one is 503 "
                    "(the asynchronous side's backlog; 0: no bound)"),
    OMS_CFG_URL_ROW("PAYMENTS_PUBLIC_URL", "http://localhost:8081", &cfg.payments_public_url,
                    "local checkout base: the one non-https PaymentLink UpdateOrder accepts"),
};

static orders_service svc;
/* The backlog is counted this often: a stale count lets in at most a tenth of a
 * second's orders too many. */
static const long long pending_check_ms = 100;

static int orders_start(oms_service_rt *rt, oms_error *err)
{
    svc.db = rt->db;
    svc.max_open_orders = (int)cfg.max_open_orders;
    svc.max_pending = cfg.max_pending;
    svc.local_checkout_url = cfg.payments_public_url;
    orders_stock_client_port(&svc.stock, oms_service_client_of(rt, "stock"));
    svc.outbox_notify = oms_outbox_relay_wake;
    svc.outbox_ud = rt->relay;
    rt->ud = &svc;
    return OMS_OK;
}

static const oms_service_def orders = {
    .name = "orders",
    .config = config,
    .nconfig = OMS_NELEM(config),
    .start = {orders_start, NULL},
    .db_open = orders_store_open,
    .outbox = 1,
    .grpc = {"127.0.0.1:2000", "OrderService gRPC listen address", orders_grpc_methods,
             &orders_grpc_methods_count, &cfg.grpc_threads},
    .http = {"ADMIN_ADDR", "127.0.0.1:9000", "/healthz /readyz /metrics listen address"},
    .consumes = orders_consumers,
    .nconsumes = &orders_nconsumers,
    .clients = {{"stock", &cfg.stock_addrs}},
    .tickers = {{"pending count", &pending_check_ms, orders_pending_tick}},
};

int main(int argc, char **argv)
{
    return oms_service_run(&orders, argc, argv);
}
