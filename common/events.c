#include "oms/events.h"

const char *const oms_event_exchanges[OMS_EVENT__COUNT] = {
#define OMS_EVENT_NAME(name, ex) ex,
    OMS_EVENT_MAP(OMS_EVENT_NAME)
#undef OMS_EVENT_NAME
};
