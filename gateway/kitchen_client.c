#include "kitchen_client.h"

#include <curl/curl.h>
#include <stdio.h>

#include "oms/dynbuf.h"
#include "oms/status.h"
#include "oms/trace.h"

int gw_kitchen_get(const char *base_url, const char *path, json_t **out, char *why, size_t whylen)
{
    *out = NULL;
    char url[512];
    int un = snprintf(url, sizeof(url), "%s%s", base_url, path);
    if (un < 0 || (size_t)un >= sizeof(url)) {
        snprintf(why, whylen, "KITCHEN_ADMIN_URL is too long");
        return OMS_AGAIN;
    }
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(why, whylen, "cannot create an HTTP client");
        return OMS_AGAIN;
    }
    char tp[OMS_TRACEPARENT_LEN + 1], tph[OMS_TRACEPARENT_LEN + 16];
    struct curl_slist *hdrs = NULL;
    oms_trace_current_header(tp);
    if (tp[0]) {
        snprintf(tph, sizeof(tph), "traceparent: %s", tp);
        hdrs = curl_slist_append(NULL, tph);
    }
    oms_dynbuf b; /* over the cap the transfer ends with CURLE_WRITE_ERROR */
    oms_dynbuf_init(&b, GW_KITCHEN_MAX_BODY);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for timeouts */
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, GW_KITCHEN_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, GW_KITCHEN_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, oms_dynbuf_curl_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "oms-gateway/1");
    if (hdrs)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    if (cc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);

    int rc = OMS_OK;
    if (cc != CURLE_OK) {
        snprintf(why, whylen, "%s", curl_easy_strerror(cc));
        rc = OMS_AGAIN;
    } else if (status != 200) {
        snprintf(why, whylen, "it answered HTTP %ld", status);
        rc = OMS_AGAIN;
    } else if (!(*out = json_loadb(b.p ? b.p : "", b.len, 0, NULL)) || !json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        snprintf(why, whylen, "its answer is not a JSON object");
        rc = OMS_ERR;
    }
    oms_dynbuf_free(&b);
    return rc;
}
