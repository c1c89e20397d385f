#include "http_routes.h"

#include <jansson.h>
#include <stdio.h>

#include "oms/admin.h"
#include "oms/util.h"
#include "service.h"

/* GET /stock -> {"products":[{"productID","name","available","reserved","sold","onSale"}]}:
 * every product, off sale too (its units are still counted). */
static void stock_levels(const oms_http_req *req, oms_http_resp *resp)
{
    stock_items items;
    oms_error err;
    stock_items_init(&items);
    oms_error_clear(&err);
    int rc = stock_list_products(req->ud, &items, &err);
    if (rc != OMS_OK) {
        oms_http_resp_error(resp, oms_status_to_http(rc), "%s", err.msg);
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; list && i < items.n; i++) {
        const stock_item *it = &items.v[i];
        json_t *p = json_pack("{s:s,s:s,s:I,s:I,s:I,s:b}", "productID", it->product_id, "name",
                              it->name ? it->name : "", "available", (json_int_t)it->available,
                              "reserved", (json_int_t)it->reserved, "sold", (json_int_t)it->sold,
                              "onSale", it->on_sale);
        if (!p || json_array_append_new(list, p) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    stock_items_free(&items);
    json_t *body = list ? json_pack("{s:o}", "products", list) : NULL;
    if (!body) {
        oms_http_resp_error(resp, 500, "out of memory building the stock listing");
        return;
    }
    oms_http_resp_json(resp, 200, body);
}

const oms_http_route stock_http_routes[] = {
    OMS_ADMIN_ROUTES,
    {"GET", "/stock", stock_levels},
};

const size_t stock_http_nroutes = OMS_NELEM(stock_http_routes);
