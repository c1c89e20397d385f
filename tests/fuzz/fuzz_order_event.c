/* libFuzzer target: the order event parser (oms_order_from_json_str), which reads
 * every order.* message body off the broker. An accepted event must survive a round
 * trip through the JSON shape unchanged in what consumers use (ids, status, items). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oms/order.h"
#include "oms/util.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    oms_order a, b;
    oms_error err;
    if (oms_order_from_json_str((const char *)data, size, &a, &err) != OMS_OK) {
        if (a.nitems != 0 || a.items != NULL || a.payment_link != NULL)
            abort(); /* a failed parse owns nothing */
        return 0;
    }
    if (!oms_valid_id(a.order_id) || !oms_valid_id(a.customer_id) || (int)a.status < 0 ||
        a.status >= OMS_ORDER__COUNT)
        abort();
    char *s = oms_order_to_json_str(&a);
    if (oms_order_from_json_str(s, strlen(s), &b, &err) != OMS_OK)
        abort(); /* what we write, we must read back */
    if (strcmp(a.order_id, b.order_id) != 0 || strcmp(a.customer_id, b.customer_id) != 0 ||
        a.status != b.status || a.nitems != b.nitems || a.total != b.total)
        abort();
    for (size_t i = 0; i < a.nitems; i++)
        if (strcmp(a.items[i].product_id, b.items[i].product_id) != 0 ||
            a.items[i].quantity != b.items[i].quantity)
            abort();
    free(s);
    oms_order_free(&a);
    oms_order_free(&b);
    return 0;
}
