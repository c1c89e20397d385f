#include "stock_client.h"

#include "oms/stock_calls.h"

static int commit(void *ud, const char *order_id, oms_error *err)
{
    return oms_stock_commit(ud, order_id, err);
}

static int release(void *ud, const char *order_id, oms_error *err)
{
    return oms_stock_release(ud, order_id, err);
}

void payments_stock_client_port(payments_stock_port *port, oms_grpc_client *client)
{
    port->commit = commit;
    port->release = release;
    port->ud = client;
}
