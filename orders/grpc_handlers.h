/* OrderService over gRPC: the method table, handlers converting protobuf messages to
 * the service's plain structs. The server's user data is the orders_service. */
#ifndef ORDERS_GRPC_HANDLERS_H
#define ORDERS_GRPC_HANDLERS_H

#include "oms/grpc_server.h"

extern const oms_grpc_method orders_grpc_methods[];
extern const size_t orders_grpc_methods_count;

#endif
