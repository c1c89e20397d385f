/* libFuzzer target: the create-order body parser (oms_order_parse_request), the first
 * code to see a customer's bytes. Besides "no crash, no leak, no UB" it checks the
 * contract of a success: 1..100 merged items, valid ids, quantities 1..1000, no
 * productID twice. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oms/order.h"
#include "oms/util.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    oms_order o;
    oms_error err;
    memset(&err, 0, sizeof(err));
    if (oms_order_parse_request((const char *)data, size, &o, &err) != OMS_OK) {
        /* A failure leaves o empty and always says why. */
        if (o.nitems != 0 || o.items != NULL || err.msg[0] == '\0')
            abort();
        return 0;
    }
    if (o.nitems < 1 || o.nitems > OMS_MAX_ITEMS)
        abort();
    for (size_t i = 0; i < o.nitems; i++) {
        const oms_order_item *it = &o.items[i];
        if (!oms_valid_id(it->product_id) || it->quantity < OMS_MIN_QUANTITY ||
            it->quantity > OMS_MAX_QUANTITY)
            abort();
        for (size_t j = 0; j < i; j++)
            if (strcmp(o.items[j].product_id, it->product_id) == 0)
                abort();
    }
    oms_order_free(&o);
    return 0;
}
