/* StockService over gRPC: the method table handed to oms_grpc_server_start. Handlers
 * convert protobuf messages to the plain structs of service.h and back. The server's
 * user data must be the stock_service. */
#ifndef STOCK_GRPC_HANDLERS_H
#define STOCK_GRPC_HANDLERS_H

#include <stddef.h>

#include "oms/grpc_server.h"

extern const oms_grpc_method stock_grpc_methods[];
extern const size_t stock_grpc_nmethods;

#endif
