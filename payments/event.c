#include "event.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "oms/util.h"

#define STRIPE_API_VERSION "2024-06-20"

/* Copies an optional string member into out. Absent or null: "". Another type or too
 * long: OMS_INVALID naming the field. */
static int opt_str(const json_t *obj, const char *key, const char *field, char *out, size_t n,
                   oms_error *err)
{
    const json_t *v = json_object_get(obj, key);
    out[0] = '\0';
    if (!v || json_is_null(v))
        return OMS_OK;
    if (!json_is_string(v))
        return oms_error_set(err, OMS_INVALID, "%s: must be a string", field);
    if (json_string_length(v) >= n || strlen(json_string_value(v)) != json_string_length(v))
        return oms_error_set(err, OMS_INVALID, "%s: too long or contains NUL", field);
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return OMS_OK;
}

static int req_str(const json_t *obj, const char *key, const char *field, char *out, size_t n,
                   oms_error *err)
{
    int rc = opt_str(obj, key, field, out, n, err);
    if (rc == OMS_OK && !out[0])
        rc = oms_error_set(err, OMS_INVALID, "%s: required", field);
    return rc;
}

int payments_event_parse(const char *body, size_t len, payments_event *out, oms_error *err)
{
    memset(out, 0, sizeof(*out));
    json_error_t je;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    int rc = OMS_OK;
    if (!j)
        return oms_error_set(err, OMS_INVALID, "malformed JSON: %s", je.text);
    if (!json_is_object(j)) {
        rc = oms_error_set(err, OMS_INVALID, "event: must be a JSON object");
        goto done;
    }
    rc = req_str(j, "id", "id", out->id, sizeof(out->id), err);
    if (rc == OMS_OK)
        rc = req_str(j, "type", "type", out->type, sizeof(out->type), err);
    if (rc != OMS_OK)
        goto done;
    const json_t *data = json_object_get(j, "data");
    if (!json_is_object(data)) {
        rc = oms_error_set(err, OMS_INVALID, "data: must be an object");
        goto done;
    }
    const json_t *obj = json_object_get(data, "object");
    if (!json_is_object(obj)) {
        rc = oms_error_set(err, OMS_INVALID, "data.object: must be an object");
        goto done;
    }
    rc = opt_str(obj, "id", "data.object.id", out->object_id, sizeof(out->object_id), err);
    if (rc == OMS_OK)
        rc = opt_str(obj, "payment_status", "data.object.payment_status", out->payment_status,
                     sizeof(out->payment_status), err);
    if (rc == OMS_OK)
        rc = opt_str(obj, "payment_intent", "data.object.payment_intent", out->payment_intent,
                     sizeof(out->payment_intent), err);
    if (rc == OMS_OK)
        rc = opt_str(obj, "currency", "data.object.currency", out->currency, sizeof(out->currency),
                     err);
    if (rc != OMS_OK)
        goto done;
    const json_t *amt = json_object_get(obj, "amount_total");
    if (amt && !json_is_null(amt) && !json_is_integer(amt)) {
        rc = oms_error_set(err, OMS_INVALID, "data.object.amount_total: must be an integer");
        goto done;
    }
    out->has_amount = json_is_integer(amt);
    out->amount_total = out->has_amount ? (long long)json_integer_value(amt) : 0;
    const json_t *md = json_object_get(obj, "metadata");
    if (md && !json_is_null(md) && !json_is_object(md)) {
        rc = oms_error_set(err, OMS_INVALID, "data.object.metadata: must be an object");
        goto done;
    }
    rc = opt_str(md, "orderID", "data.object.metadata.orderID", out->order_id,
                 sizeof(out->order_id), err);
    if (rc == OMS_OK)
        rc = opt_str(md, "customerID", "data.object.metadata.customerID", out->customer_id,
                     sizeof(out->customer_id), err);
done:
    json_decref(j);
    return rc;
}

char *payments_event_build_local(const payments_local_event *e)
{
    char hex[25], id[40];
    if (oms_random_hex(hex, 12) != OMS_OK)
        return NULL;
    snprintf(id, sizeof(id), "evt_local_%s", hex);
    json_t *obj = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:{s:s, s:s}, s:s, s:s, s:I, s:b}", "id",
        e->session_id, "object", "checkout.session", "mode", "payment", "status", e->session_status,
        "payment_status", e->payment_status, "amount_total", (json_int_t)e->amount, "currency",
        e->currency, "client_reference_id", e->order_id, "metadata", "orderID", e->order_id,
        "customerID", e->customer_id, "success_url", e->success_url, "url", e->session_url,
        "created", (json_int_t)e->created, "livemode", 0);
    if (!obj)
        return NULL;
    if (json_object_set_new(obj, "payment_intent",
                            e->payment_intent ? json_string(e->payment_intent) : json_null()) !=
        0) {
        json_decref(obj);
        return NULL;
    }
    /* "o" steals obj, also when packing fails. */
    json_t *evt = json_pack("{s:s, s:s, s:s, s:I, s:b, s:i, s:{s:n, s:n}, s:s, s:{s:o}}", "id", id,
                            "object", "event", "api_version", STRIPE_API_VERSION, "created",
                            (json_int_t)e->created, "livemode", 0, "pending_webhooks", 1, "request",
                            "id", "idempotency_key", "type", e->type, "data", "object", obj);
    if (!evt)
        return NULL;
    char *s = json_dumps(evt, JSON_COMPACT);
    json_decref(evt);
    return s;
}
