/* Conversions between the plain order model (oms/order.h) and the protobuf-c messages
 * of proto/oms.proto, for the gRPC layers of gateway, orders and payments. */
#ifndef OMS_ORDER_PB_H
#define OMS_ORDER_PB_H

#include "oms.pb-c.h"
#include "oms/order.h"

/* A new message built with malloc (caller owns it; free with
 * protobuf_c_message_free_unpacked(&m->base, NULL)). */
Api__Order *oms_order_to_pb(const oms_order *o);
Api__OrderItem *oms_order_item_to_pb(const oms_order_item *it, const char *currency);
/* Fills out (initialised here; caller frees with oms_order_free). Unknown status
 * strings are OMS_INVALID. Ids are validated. */
int oms_order_from_pb(const Api__Order *m, oms_order *out, oms_error *err);
/* Copies items (product id + quantity + catalog fields when present) into o. */
int oms_order_items_from_pb(Api__OrderItem *const *items, size_t n, oms_order *o, oms_error *err);

#endif
