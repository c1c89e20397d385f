/* libFuzzer target: the webhook event parser (payments/event.c) that reads a verified
 * Stripe body. Every field it fills must be a NUL-terminated string inside its array,
 * and an accepted event has its two required fields. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "fuzz.h"

static void check_str(const char *s, size_t cap)
{
    if (memchr(s, 0, cap) == NULL)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = malloc(size ? size : 1);
    if (!body)
        return 0;
    if (size)
        memcpy(body, data, size);
    payments_event ev;
    oms_error err;
    int rc = payments_event_parse(body, size, &ev, &err);
    check_str(ev.id, sizeof(ev.id));
    check_str(ev.type, sizeof(ev.type));
    check_str(ev.object_id, sizeof(ev.object_id));
    check_str(ev.order_id, sizeof(ev.order_id));
    check_str(ev.customer_id, sizeof(ev.customer_id));
    check_str(ev.payment_status, sizeof(ev.payment_status));
    if (rc == OMS_OK && (!ev.id[0] || !ev.type[0]))
        abort();
    if (rc != OMS_OK && rc != OMS_INVALID)
        abort();
    free(body);
    return 0;
}
