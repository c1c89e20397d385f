#include "stock_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms.pb-c.h"
#include "oms/order_pb.h"
#include "oms/stock_calls.h"
#include "oms/util.h"

#define STOCK_TIMEOUT_MS 3000

static int reserve(void *ud, const char *order_id, oms_order *o, oms_error *err)
{
    Api__ReserveItemsRequest req = API__RESERVE_ITEMS_REQUEST__INIT;
    req.orderid = (char *)order_id;
    req.n_items = o->nitems;
    req.items = oms_xcalloc(o->nitems, sizeof(*req.items));
    for (size_t i = 0; i < o->nitems; i++)
        req.items[i] = oms_order_item_to_pb(&o->items[i], NULL);
    ProtobufCMessage *resp = NULL;
    int rc = oms_grpc_call(ud, "/api.StockService/ReserveItems", &req.base,
                           &api__reserve_items_response__descriptor, &resp, STOCK_TIMEOUT_MS, err);
    for (size_t i = 0; i < o->nitems; i++)
        protobuf_c_message_free_unpacked(&req.items[i]->base, NULL);
    free(req.items);
    if (rc != OMS_OK)
        return rc;
    Api__ReserveItemsResponse *r = (Api__ReserveItemsResponse *)resp;
    for (size_t i = 0; i < o->nitems; i++)
        oms_order_item_free(&o->items[i]);
    free(o->items);
    o->items = NULL;
    o->nitems = 0;
    rc = oms_order_items_from_pb(r->items, r->n_items, o, err);
    if (rc == OMS_OK && r->n_items > 0 && r->items[0]->currency && r->items[0]->currency[0] &&
        strlen(r->items[0]->currency) < sizeof(o->currency))
        snprintf(o->currency, sizeof(o->currency), "%s", r->items[0]->currency);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

void orders_stock_client_port(orders_stock_port *port, oms_grpc_client *client)
{
    port->reserve = reserve;
    port->release = oms_stock_release;
    port->commit = oms_stock_commit;
    port->ud = client;
}
