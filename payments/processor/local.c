/* The offline processor: the session is ours alone. Its link points at the checkout
 * page payments itself serves (/checkout/{id}); paying there feeds a signed,
 * Stripe-shaped event through the webhook (http_routes.c, service.c). */
#include <stdio.h>
#include <string.h>

#include "oms/util.h"
#include "processor.h"
#include "../urls.h"

static int local_create_session(const payments_processor_config *cfg, const oms_order *o,
                                long long expires_at_s, payments_session *out, oms_error *err)
{
    (void)expires_at_s; /* the deadline is kept with the session in our database */
    char hex[25];
    memset(out, 0, sizeof(*out));
    if (oms_random_hex(hex, 12) != OMS_OK)
        return oms_error_set(err, OMS_AGAIN, "local processor: no randomness for a session id");
    snprintf(out->id, sizeof(out->id), "cs_local_%s", hex);
    char path[sizeof(out->id) + 16];
    snprintf(path, sizeof(path), "/checkout/%s", out->id);
    out->url = payments_join_url(cfg->public_url, path);
    return OMS_OK;
}

/* No money moved anywhere but in our records: the refund is the record payments keeps. */
static int local_refund(const payments_processor_config *cfg, const payments_refund_req *r,
                        char *refund_id, oms_error *err)
{
    (void)cfg;
    char hex[25];
    if (oms_random_hex(hex, 12) != OMS_OK)
        return oms_error_set(err, OMS_AGAIN, "local processor: no randomness for a refund id");
    snprintf(refund_id, PAYMENTS_REFUND_ID_MAX + 1, "re_local_%s", hex);
    (void)r;
    return OMS_OK;
}

const payment_processor payments_processor_local = {
    .name = "local",
    .init = NULL,
    .cleanup = NULL,
    .create_session = local_create_session,
    .refund = local_refund,
};
