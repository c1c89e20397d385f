/* The stock port of the payments service (service.h) over gRPC. */
#ifndef PAYMENTS_STOCK_CLIENT_H
#define PAYMENTS_STOCK_CLIENT_H

#include "oms/grpc_client.h"
#include "service.h"

/* Fills port with functions calling StockService through client (borrowed; must
 * outlive the port). */
void payments_stock_client_port(payments_stock_port *port, oms_grpc_client *client);

#endif
