#include "oms/stock_calls.h"

#include "oms.pb-c.h"

/* Stock answers from its own database in a few ms; 3 s covers a busy moment without
 * holding a consumer or a webhook long when stock is down. */
#define STOCK_CALL_TIMEOUT_MS 3000

static int reservation_call(void *client, const char *method, const char *order_id, oms_error *err)
{
    Api__ReservationRequest req = API__RESERVATION_REQUEST__INIT;
    req.orderid = (char *)order_id; /* protobuf-c reads it only while packing */
    ProtobufCMessage *resp = NULL;
    int rc = oms_grpc_call(client, method, &req.base, &api__reservation_response__descriptor, &resp,
                           STOCK_CALL_TIMEOUT_MS, err);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

int oms_stock_commit(void *client, const char *order_id, oms_error *err)
{
    return reservation_call(client, "/api.StockService/CommitReservation", order_id, err);
}

int oms_stock_release(void *client, const char *order_id, oms_error *err)
{
    return reservation_call(client, "/api.StockService/ReleaseReservation", order_id, err);
}
