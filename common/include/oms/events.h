/* Event types: each is a fanout exchange of the same name (the original's naming). */
#ifndef OMS_EVENTS_H
#define OMS_EVENTS_H

/* XX(NAME, "exchange") */
#define OMS_EVENT_MAP(XX)                                                                          \
    XX(ORDER_CREATED, "order.created")                                                             \
    XX(ORDER_PAID, "order.paid")                                                                   \
    XX(ORDER_COOKING, "order.cooking")                                                             \
    XX(ORDER_READY, "order.ready")                                                                 \
    XX(ORDER_CANCELLED, "order.cancelled")                                                         \
    XX(ORDER_REFUNDED, "order.refunded")                                                           \
    XX(ORDER_COLLECTED, "order.collected")

typedef enum {
#define OMS_EVENT_ENUM(name, ex) OMS_EVENT_##name,
    OMS_EVENT_MAP(OMS_EVENT_ENUM)
#undef OMS_EVENT_ENUM
        OMS_EVENT__COUNT
} oms_event;

extern const char *const oms_event_exchanges[OMS_EVENT__COUNT];

#endif
