"""The gateway's HTTP API over the real gateway -> orders -> stock path."""
import concurrent.futures
import json

import grpc
import pytest

from oms_harness import http, wait_for

BIG = {"currency": "usd", "products": [
    {"productID": "1", "name": "Cheese", "priceID": "price_1RWg6C07x6KdXnTOR532hPIw", "unitPrice": 450, "quantity": 1000},
    {"productID": "2", "name": "Chocolate", "priceID": "price_1RT6Lg07x6KdXnTOdZW6J5rc", "unitPrice": 250, "quantity": 1000},
]}


def test_seed_readme_example(make_shop):
    shop = make_shop()
    st, _, body = shop.create("1", [{"productID": "1", "quantity": 2}, {"productID": "2", "quantity": 5}])
    assert st == 201, body
    order = body["order"]
    assert set(["orderID", "customerID", "items", "status", "PaymentLink"]) <= set(order)
    assert order["customerID"] == "1"
    assert order["status"] == "pending"
    assert order["PaymentLink"] == "none"
    assert order["items"] == [
        {"productID": "1", "productName": "Cheese", "quantity": 2, "priceID": "price_1RWg6C07x6KdXnTOR532hPIw", "unitPrice": 450},
        {"productID": "2", "productName": "Chocolate", "quantity": 5, "priceID": "price_1RT6Lg07x6KdXnTOdZW6J5rc", "unitPrice": 250},
    ]
    assert order["total"] == 2 * 450 + 5 * 250 and order["currency"] == "usd"
    assert order["createdAt"].endswith("Z") and order["updatedAt"].endswith("Z")
    assert body["redirectToURL"] == f"{shop.gateway}/success.html?customerID=1&orderID={order['orderID']}"

    st, _, got = shop.get("1", order["orderID"])
    assert st == 200, got
    assert got["orderID"] == order["orderID"] and got["items"] == order["items"]
    assert got["status"] in ("pending", "waiting_payment")

    # stock reserved, not sold
    stock = shop.stock()
    assert (stock["1"]["available"], stock["1"]["reserved"]) == (10, 2)
    assert (stock["2"]["available"], stock["2"]["reserved"]) == (2, 5)


def test_other_customer_and_unknown_order_get_404(shop):
    st, _, body = shop.create("alice", [{"productID": "3", "quantity": 1}])
    assert st == 201, body
    oid = body["order"]["orderID"]
    st, _, other = shop.get("mallory", oid)
    assert st == 404 and "not found" in other["error"]
    st, _, missing = shop.get("alice", "000000000000000000000000")
    assert st == 404 and "not found" in missing["error"]
    # the same body either way: nothing tells mallory the order exists
    assert other["error"].replace(oid, "X") == missing["error"].replace("000000000000000000000000", "X")


def test_unknown_product_404(shop):
    st, _, body = shop.create("c1", [{"productID": "99", "quantity": 1}])
    assert st == 404
    assert "product 99" in body["error"]


def test_not_enough_stock_409_names_product_and_left(make_shop):
    shop = make_shop()
    before = shop.stock()
    st, _, body = shop.create("c1", [{"productID": "1", "quantity": 1}, {"productID": "2", "quantity": 8}])
    assert st == 409, body
    assert "Chocolate" in body["error"] and "7 left" in body["error"]
    assert shop.stock() == before  # all or nothing: the Cheese was not reserved


@pytest.mark.parametrize("raw,field", [
    ('{"items":[{"productID":"1","quantity":2}', "malformed JSON"),
    ('{"items":[{"productID":"1","quantity":"two"}]}', "items[0].quantity"),
    ('{"items":[{"productID":"1","quantity":0}]}', "items[0].quantity"),
    ('{"items":[{"productID":"1","quantity":1001}]}', "items[0].quantity"),
    ('{"items":[{"productID":"1","quantity":-3}]}', "items[0].quantity"),
    ('{"items":[{"productID":1,"quantity":1}]}', "items[0].productID"),
    ('{"items":[{"productID":"../etc","quantity":1}]}', "items[0].productID"),
    ('{"items":[]}', "items"),
    ('{"items":{}}', "items"),
    ('{}', "items"),
    ('"hello"', "items"),
    ('{"items":[{"productID":"1","quantity":600},{"productID":"1","quantity":600}]}', "exceeds 1000"),
])
def test_invalid_bodies_400(shop, raw, field):
    before = shop.stock()
    st, _, body = shop.create("c1", None, raw=raw, headers={"Content-Type": "application/json"})
    assert st == 400, body
    assert field in body["error"]
    assert shop.stock() == before


def test_invalid_customer_id_400(shop):
    st, _, body = shop.create("x" * 65, [{"productID": "1", "quantity": 1}])
    assert st == 400 and "customerID" in body["error"]


def test_body_over_64k_413(shop):
    raw = '{"items":[' + ",".join(['{"productID":"1","quantity":1}'] * 3000) + "]}"
    assert len(raw) > 64 * 1024
    st, _, body = shop.create("c1", None, raw=raw, headers={"Content-Type": "application/json"})
    assert st == 413, body
    assert "too large" in body["error"]


def test_wrong_content_type_415(shop):
    st, _, body = shop.create("c1", None, raw='{"items":[{"productID":"1","quantity":1}]}',
                              headers={"Content-Type": "text/plain"})
    assert st == 415 and "application/json" in body["error"]


def test_bare_array_body_accepted_and_duplicates_merged(make_shop):
    shop = make_shop(catalog=BIG)
    st, _, body = shop.create("c1", None, raw='[{"productID":"1","quantity":2},{"productID":"1","quantity":3}]',
                              headers={"Content-Type": "application/json"})
    assert st == 201, body
    assert [(i["productID"], i["quantity"]) for i in body["order"]["items"]] == [("1", 5)]
    assert shop.stock()["1"]["reserved"] == 5


def test_idempotency_key_gives_one_order(make_shop):
    shop = make_shop(catalog=BIG)
    items = [{"productID": "2", "quantity": 3}]
    st1, _, b1 = shop.create("c1", items, headers={"Idempotency-Key": "key-123"})
    st2, _, b2 = shop.create("c1", items, headers={"Idempotency-Key": "key-123"})
    assert st1 == 201 and st2 == 201
    assert b1["order"]["orderID"] == b2["order"]["orderID"]
    assert shop.stock()["2"]["reserved"] == 3
    # another customer with the same key gets its own order
    st3, _, b3 = shop.create("c2", items, headers={"Idempotency-Key": "key-123"})
    assert st3 == 201 and b3["order"]["orderID"] != b1["order"]["orderID"]
    assert shop.stock()["2"]["reserved"] == 6
    st, _, body = shop.create("c1", items, headers={"Idempotency-Key": "bad key!"})
    assert st == 400 and "Idempotency-Key" in body["error"]


def test_cancel_releases_stock(make_shop):
    shop = make_shop(catalog=BIG, services=["stock", "orders", "gateway"])
    st, _, body = shop.create("c1", [{"productID": "1", "quantity": 4}])
    assert st == 201
    oid = body["order"]["orderID"]
    assert shop.stock()["1"]["reserved"] == 4
    st, _, body = http("POST", f"{shop.gateway}/api/customers/mallory/orders/{oid}/cancel")
    assert st == 404
    st, _, body = http("POST", f"{shop.gateway}/api/customers/c1/orders/{oid}/cancel")
    assert st == 200 and body["status"] == "cancelled", body
    s = shop.stock()["1"]
    assert (s["available"], s["reserved"], s["sold"]) == (1000, 0, 0)
    st, _, body = http("POST", f"{shop.gateway}/api/customers/c1/orders/{oid}/cancel")
    assert st == 200 and body["status"] == "cancelled"  # idempotent
    assert shop.stock()["1"]["available"] == 1000


def test_products_and_listing(make_shop):
    shop = make_shop(catalog=BIG)
    st, _, body = http("GET", f"{shop.gateway}/api/products")
    assert st == 200
    names = {p["productID"]: p for p in body["products"]}
    assert names["1"]["name"] == "Cheese" and names["1"]["unitPrice"] == 450 and names["1"]["available"] == 1000
    ids = []
    for q in range(1, 6):
        st, _, b = shop.create("lister", [{"productID": "1", "quantity": q}])
        assert st == 201
        ids.append(b["order"]["orderID"])
    st, _, page1 = shop.list_orders("lister", f"pageSize=2")
    assert st == 200 and len(page1["orders"]) == 2 and page1["nextPageToken"]
    seen = [o["orderID"] for o in page1["orders"]]
    tok = page1["nextPageToken"]
    while tok:
        st, _, p = shop.list_orders("lister", f"pageSize=2&pageToken={tok}")
        assert st == 200
        seen += [o["orderID"] for o in p["orders"]]
        tok = p["nextPageToken"]
    assert seen == list(reversed(ids))  # newest first, each once
    st, _, b = shop.list_orders("lister", f"pageSize=0")
    assert st == 400 and "pageSize" in b["error"]
    st, _, b = shop.list_orders("lister", f"pageToken=garbage")
    assert st == 400 and "pageToken" in b["error"]


def test_unknown_route_404_json(shop):
    st, _, body = http("GET", f"{shop.gateway}/api/nothing")
    assert st == 404 and "error" in body


def test_twenty_concurrent_orders_for_seven_chocolates(make_shop):
    shop = make_shop(services=["stock", "orders", "gateway"])

    def one(i):
        return shop.create(f"cust{i}", [{"productID": "2", "quantity": 1}])

    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        results = list(ex.map(one, range(20)))
    codes = sorted(r[0] for r in results)
    assert codes.count(201) == 7, codes
    assert codes.count(409) == 13, codes
    for st, _, body in results:
        if st == 409:
            assert "Chocolate" in body["error"]
    s = shop.stock()["2"]
    assert (s["available"], s["reserved"]) == (0, 7)


def test_grpc_interop_with_python_client(make_shop, pb):
    pb2, pb2_grpc = pb
    shop = make_shop(catalog=BIG, services=["stock", "orders"])
    with grpc.insecure_channel(f"127.0.0.1:{shop.ports['orders_grpc']}") as ch:
        orders = pb2_grpc.OrderServiceStub(ch)
        md = (("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),)
        o = orders.CreateOrder(pb2.CreateOrderRequest(customerID="py", items=[
            pb2.OrderItem(productID="1", quantity=2), pb2.OrderItem(productID="2", quantity=1)]), timeout=10, metadata=md)
        assert o.customerID == "py" and o.status == "pending" and o.PaymentLink == "none"
        assert [(i.productID, i.productName, i.quantity, i.priceID) for i in o.items] == [
            ("1", "Cheese", 2, "price_1RWg6C07x6KdXnTOR532hPIw"), ("2", "Chocolate", 1, "price_1RT6Lg07x6KdXnTOdZW6J5rc")]
        g = orders.GetOrder(pb2.GetOrderRequest(orderID=o.orderID), timeout=10)
        assert g.orderID == o.orderID and g.total == 2 * 450 + 250
        with pytest.raises(grpc.RpcError) as e:
            orders.GetOrder(pb2.GetOrderRequest(orderID="nope"), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and "not found" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            orders.CreateOrder(pb2.CreateOrderRequest(customerID="py", items=[pb2.OrderItem(productID="1", quantity=0)]), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "quantity" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            orders.CreateOrder(pb2.CreateOrderRequest(customerID="py", items=[pb2.OrderItem(productID="2", quantity=1000)]), timeout=10)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "Chocolate" in e.value.details()
        u = orders.UpdateOrder(pb2.Order(orderID=o.orderID, status="waiting_payment", PaymentLink="https://pay.example/x"), timeout=10)
        assert u.status == "waiting_payment" and u.PaymentLink == "https://pay.example/x"
        with pytest.raises(grpc.RpcError) as e:
            orders.UpdateOrder(pb2.Order(orderID=o.orderID, status="pending"), timeout=10)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with grpc.insecure_channel(f"127.0.0.1:{shop.ports['stock_grpc']}") as ch:
        stock = pb2_grpc.StockServiceStub(ch)
        r = stock.GetItems(pb2.GetItemsRequest(ItemIDs=["1", "2", "404"]), timeout=10)
        assert [(i.productID, i.productName, i.priceID) for i in r.Items] == [
            ("1", "Cheese", "price_1RWg6C07x6KdXnTOR532hPIw"), ("2", "Chocolate", "price_1RT6Lg07x6KdXnTOdZW6J5rc")]
        assert r.Items[0].quantity == 998  # available after the order above
        c = stock.CheckIfItemsAreInStock(pb2.CheckIfItemsAreInStockRequest(Items=[pb2.OrderItem(productID="1", quantity=5)]), timeout=10)
        assert c.InStock and c.Items[0].quantity == 5 and c.Items[0].priceID == "price_1RWg6C07x6KdXnTOR532hPIw"
        c = stock.CheckIfItemsAreInStock(pb2.CheckIfItemsAreInStockRequest(Items=[pb2.OrderItem(productID="1", quantity=999)]), timeout=10)
        assert not c.InStock
