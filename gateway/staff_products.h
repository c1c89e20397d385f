/* The back office's menu and stock routes (README "Back office: menu and stock"):
 *   GET  /api/staff/products              every product with its stock levels
 *   PUT  /api/staff/products/{id}         create a product or change the fields given
 *   POST /api/staff/products/{id}/stock   {"delta":N,"reason"} or {"set":N,"reason"}
 * Staff only; the changes also need the shop's own Origin. The signed-in name goes to
 * stock as the member of staff who made the change (never a name from the body). */
#ifndef GATEWAY_STAFF_PRODUCTS_H
#define GATEWAY_STAFF_PRODUCTS_H

#include "oms/http.h"

/* Route handlers; the server's user data must be a gateway_ctx (http_routes.h). */
void gw_staff_products_list(const oms_http_req *req, oms_http_resp *resp);
void gw_staff_product_put(const oms_http_req *req, oms_http_resp *resp);
void gw_staff_product_stock(const oms_http_req *req, oms_http_resp *resp);

#endif
