/* The stock port of the orders service (service.h) over gRPC. */
#ifndef ORDERS_STOCK_CLIENT_H
#define ORDERS_STOCK_CLIENT_H

#include "oms/grpc_client.h"
#include "service.h"

/* Fills port with functions calling StockService through client (borrowed; must
 * outlive the port). */
void orders_stock_client_port(orders_stock_port *port, oms_grpc_client *client);

#endif
