/* The orders port of payments_service over gRPC (OrderService.UpdateOrder). */
#ifndef PAYMENTS_ORDERS_CLIENT_H
#define PAYMENTS_ORDERS_CLIENT_H

#include "oms/grpc_client.h"
#include "service.h"

/* Fills port with functions calling through client (borrowed; must outlive port). */
void payments_orders_client_port(payments_orders_port *port, oms_grpc_client *client);

#endif
