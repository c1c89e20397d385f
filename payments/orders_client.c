#include "orders_client.h"

#include "oms.pb-c.h"

#define UPDATE_TIMEOUT_MS 5000

static int set_waiting_payment(void *ud, const char *order_id, const char *link, oms_error *err)
{
    Api__Order req = API__ORDER__INIT;
    /* protobuf-c fields are char * but only read while packing. */
    req.orderid = (char *)order_id;
    req.status = (char *)"waiting_payment";
    req.paymentlink = (char *)link;
    ProtobufCMessage *resp = NULL;
    int rc = oms_grpc_call(ud, "/api.OrderService/UpdateOrder", &req.base, &api__order__descriptor,
                           &resp, UPDATE_TIMEOUT_MS, err);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

void payments_orders_client_port(payments_orders_port *port, oms_grpc_client *client)
{
    port->set_waiting_payment = set_waiting_payment;
    port->ud = client;
}
