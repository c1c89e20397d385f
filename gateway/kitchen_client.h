/* The gateway's reads of the kitchen's admin port (KITCHEN_ADMIN_URL): the ticket
 * listing the display relays and the day's late-ticket count of the back office. The
 * browser cannot be assumed to reach that port, so the gateway asks on its behalf,
 * with a short timeout and a cap on the answer. */
#ifndef GATEWAY_KITCHEN_CLIENT_H
#define GATEWAY_KITCHEN_CLIENT_H

#include <jansson.h>
#include <stddef.h>

#define GW_KITCHEN_TIMEOUT_MS 2000L
#define GW_KITCHEN_MAX_BODY (4u << 20)

/* GET base_url + path (path starts with '/'; the caller's trace continues there). On
 * OMS_OK *out is the parsed JSON object of a 200 answer (caller decrefs). OMS_AGAIN
 * when the kitchen cannot be reached or answers another status, OMS_ERR when its
 * answer is not a JSON object; why (whylen bytes) says which, for the reply. */
int gw_kitchen_get(const char *base_url, const char *path, json_t **out, char *why, size_t whylen);

#endif
