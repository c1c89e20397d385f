"""The back office's menu and stock on one shop: the three staff routes (who may call
them, cross-site requests), a restock seen by the storefront, a count below what is
reserved refused, a new dish ordered at its price, a price change that leaves an
existing order alone, a dish sold out, bad input refused with nothing changed, and an
audit row in stock's database for every change and none for a refusal."""
import re

import grpc
import pytest

from oms_harness import http, serve_shop

CROSS_SITE = "https://evil.example"


@pytest.fixture(scope="module")
def shop(rabbit, workdir):
    yield from serve_shop(rabbit, workdir)


def staff(shop, method, path, body=None, headers=None):
    """A staff request from the shop's own pages (cookie + same Origin)."""
    h = dict(shop.staff_cookie(), Origin=shop.gateway)
    h.update(headers or {})
    return http(method, shop.gateway + path, body, headers=h)


def products(shop):
    st, _, body = staff(shop, "GET", "/api/staff/products")
    assert st == 200, body
    return {p["productID"]: p for p in body["products"]}


def storefront(shop):
    st, _, body = http("GET", shop.gateway + "/api/products")
    assert st == 200, body
    return {p["productID"]: p for p in body["products"]}


def audit_count(shop, subject=None):
    if subject is None:
        return shop.scalar("stock", "SELECT COUNT(*) FROM stock_audit")
    return shop.scalar("stock", "SELECT COUNT(*) FROM stock_audit WHERE subject = ?", (subject,))


def test_routes_need_a_staff_session(shop):
    routes = [("GET", "/api/staff/products", None),
              ("PUT", "/api/staff/products/1", {"name": "Brie"}),
              ("POST", "/api/staff/products/1/stock", {"delta": 1, "reason": "delivery"})]
    before, audits = products(shop), audit_count(shop)
    for method, path, body in routes:
        st, _, out = http(method, shop.gateway + path, body, headers={"Origin": shop.gateway})
        assert st == 401, (method, path, st, out)
        st, _, out = http(method, shop.gateway + path, body,
                          headers={"Cookie": "oms_staff=" + "0" * 64, "Origin": shop.gateway})
        assert st == 401, (method, path, st, out)
    assert products(shop) == before and audit_count(shop) == audits

    p = products(shop)["1"]
    assert p == {"productID": "1", "name": "Cheese", "priceID": "price_1RWg6C07x6KdXnTOR532hPIw",
                 "unitPrice": 450, "currency": "USD", "onSale": True, "available": p["available"],
                 "reserved": p["reserved"], "sold": p["sold"]}


def test_cross_site_change_refused(shop):
    before, audits = products(shop), audit_count(shop)
    for method, path, body in [("PUT", "/api/staff/products/1", {"name": "Stolen"}),
                               ("POST", "/api/staff/products/1/stock", {"delta": 50, "reason": "x"})]:
        st, _, out = staff(shop, method, path, body, headers={"Origin": CROSS_SITE})
        assert st == 403, (st, out)
        # Refused before the session is even looked at: no cookie is the same 403.
        st, _, out = http(method, shop.gateway + path, body, headers={"Origin": CROSS_SITE})
        assert st == 403, (st, out)
    assert products(shop) == before and audit_count(shop) == audits


def test_restock_visible_on_the_storefront(shop):
    start = storefront(shop)["4"]["available"]
    st, _, body = staff(shop, "POST", "/api/staff/products/4/stock", {"delta": 5, "reason": "milk delivery"})
    assert st == 200, body
    assert body["available"] == start + 5 and body["productID"] == "4"
    assert storefront(shop)["4"]["available"] == start + 5
    row = shop.scalar("stock", "SELECT after_json FROM stock_audit WHERE subject = ? AND reason = ?",
                      ("4", "milk delivery"))
    assert row is not None and f'"available":{start + 5}' in row
    assert shop.scalar("stock", "SELECT staff FROM stock_audit WHERE subject = ? AND reason = ?",
                       ("4", "milk delivery")) == "admin"

    st, _, body = staff(shop, "POST", "/api/staff/products/4/stock", {"set": 40, "reason": "evening count"})
    assert st == 200 and body["available"] + body["reserved"] == 40, body
    assert storefront(shop)["4"]["available"] == body["available"]


def test_count_below_reserved_refused(shop):
    st, _, body = shop.create("bo-reserve", [{"productID": "5", "quantity": 2}])
    assert st == 201, body
    before, audits = products(shop)["5"], audit_count(shop, "5")
    assert before["reserved"] >= 2
    r = before["reserved"]
    st, _, body = staff(shop, "POST", "/api/staff/products/5/stock", {"set": r - 1, "reason": "count"})
    assert st == 409, body
    assert body["error"] == f"cannot set Apple pie to {r - 1}: {r} are reserved"
    st, _, body = staff(shop, "POST", "/api/staff/products/5/stock",
                        {"delta": -(before["available"] + 1), "reason": "dropped"})
    assert st == 409 and f"{before['available']} are free" in body["error"], body
    assert products(shop)["5"] == before and audit_count(shop, "5") == audits


def test_new_dish_orderable_at_its_price(shop):
    st, _, body = staff(shop, "PUT", "/api/staff/products/soup",
                        {"name": "Tomato soup", "unitPrice": 650, "currency": "usd"})
    assert st == 201, body
    assert body == {"productID": "soup", "name": "Tomato soup", "priceID": "price_soup", "unitPrice": 650,
                    "currency": "USD", "onSale": True, "available": 0, "reserved": 0, "sold": 0}
    assert list(products(shop))[-1] == "soup"  # new dishes go last
    st, _, body = staff(shop, "POST", "/api/staff/products/soup/stock", {"delta": 10, "reason": "cooked"})
    assert st == 200 and body["available"] == 10, body
    assert storefront(shop)["soup"]["unitPrice"] == 650
    # A dish created after the start has its gauge too.
    st, _, metrics = http("GET", shop.stock_admin + "/metrics")
    assert st == 200 and re.search(r'^stock_available\{product="soup"\} 10(\.0+)?$', metrics, re.M), metrics

    st, _, body = shop.create("bo-soup", [{"productID": "soup", "quantity": 3}])
    assert st == 201, body
    order = body["order"]
    assert order["total"] == 3 * 650
    assert [(i["productID"], i["unitPrice"], i["quantity"]) for i in order["items"]] == [("soup", 650, 3)]
    assert shop.scalar("stock", "SELECT action FROM stock_audit WHERE subject = ? ORDER BY id LIMIT 1",
                       ("soup",)) == "product.create"


def test_price_change_leaves_existing_orders_alone(shop):
    st, _, body = staff(shop, "PUT", "/api/staff/products/pie", {"name": "Pork pie", "unitPrice": 500, "currency": "USD"})
    assert st == 201, body
    assert staff(shop, "POST", "/api/staff/products/pie/stock", {"delta": 10, "reason": "baked"})[0] == 200
    st, _, body = shop.create("bo-pie", [{"productID": "pie", "quantity": 2}])
    assert st == 201, body
    first = body["order"]
    assert first["total"] == 1000

    st, _, body = staff(shop, "PUT", "/api/staff/products/pie", {"unitPrice": 550})
    assert st == 200 and body["unitPrice"] == 550 and body["name"] == "Pork pie", body
    st, _, again = shop.get("bo-pie", first["orderID"])
    assert st == 200 and again["total"] == 1000 and again["items"][0]["unitPrice"] == 500, again
    st, _, body = shop.create("bo-pie", [{"productID": "pie", "quantity": 2}])
    assert st == 201 and body["order"]["total"] == 1100, body
    before = shop.scalar("stock", "SELECT before_json FROM stock_audit WHERE subject = ? AND action = ?",
                         ("pie", "product.update"))
    after = shop.scalar("stock", "SELECT after_json FROM stock_audit WHERE subject = ? AND action = ?",
                        ("pie", "product.update"))
    assert (before, after) == ('{"unitPrice":500}', '{"unitPrice":550}')


def test_sold_out_dish_not_listed_nor_orderable(shop):
    st, _, body = staff(shop, "PUT", "/api/staff/products/6", {"onSale": False})
    assert st == 200 and body["onSale"] is False, body
    assert "6" not in storefront(shop)
    assert products(shop)["6"]["onSale"] is False  # staff still see it
    st, _, body = shop.create("bo-sold-out", [{"productID": "6", "quantity": 1}])
    assert st == 409 and "is not on sale" in body["error"] and "Ham sandwich" in body["error"], (st, body)

    st, _, body = staff(shop, "PUT", "/api/staff/products/6", {"onSale": True})
    assert st == 200 and body["onSale"] is True
    assert "6" in storefront(shop)
    st, _, body = shop.create("bo-sold-out", [{"productID": "6", "quantity": 1}])
    assert st == 201, body
    assert audit_count(shop, "6") == 2


BAD_INPUT = [
    ("PUT", "/api/staff/products/1", {"unitPrice": 0}, "unitPrice"),
    ("PUT", "/api/staff/products/1", {"unitPrice": -1}, "unitPrice"),
    ("PUT", "/api/staff/products/1", {"unitPrice": "abc"}, "unitPrice"),
    ("PUT", "/api/staff/products/1", {"unitPrice": 4.5}, "unitPrice"),
    ("PUT", "/api/staff/products/1", {"unitPrice": 100000001}, "unitPrice"),
    ("PUT", "/api/staff/products/1", {"currency": "XYZ"}, "currency"),
    ("PUT", "/api/staff/products/1", {"currency": 840}, "currency"),
    ("PUT", "/api/staff/products/1", {"name": "x" * 10000}, "name"),
    ("PUT", "/api/staff/products/1", {"name": ""}, "name"),
    ("PUT", "/api/staff/products/1", {"name": "Bad\u0007bell"}, "name"),
    ("PUT", "/api/staff/products/1", {"name": "two\nlines"}, "name"),
    ("PUT", "/api/staff/products/1", {"priceID": "price with spaces"}, "priceID"),
    ("PUT", "/api/staff/products/1", {"onSale": "no"}, "onSale"),
    ("PUT", "/api/staff/products/1", {"name": "Brie", "colour": "white"}, "colour"),
    ("PUT", "/api/staff/products/1", {}, "fields"),
    ("PUT", "/api/staff/products/1", "[1,2]", "body"),
    ("PUT", "/api/staff/products/1", '{"name":', "body"),
    ("PUT", "/api/staff/products/new-dish", {"name": "No price"}, "unitPrice"),
    ("PUT", "/api/staff/products/bad%20id", {"name": "X"}, "productID"),
    ("POST", "/api/staff/products/1/stock", {"delta": 5}, "reason"),
    ("POST", "/api/staff/products/1/stock", {"delta": 5, "reason": ""}, "reason"),
    ("POST", "/api/staff/products/1/stock", {"delta": 5, "reason": "r" * 201}, "reason"),
    ("POST", "/api/staff/products/1/stock", {"delta": 5, "reason": "tab\there"}, "reason"),
    ("POST", "/api/staff/products/1/stock", {"delta": 5, "set": 5, "reason": "x"}, "delta, set"),
    ("POST", "/api/staff/products/1/stock", {"reason": "x"}, "delta or set"),
    ("POST", "/api/staff/products/1/stock", {"delta": 0, "reason": "x"}, "delta"),
    ("POST", "/api/staff/products/1/stock", {"delta": 2 ** 32 + 1, "reason": "x"}, "delta"),
    ("POST", "/api/staff/products/1/stock", {"delta": "5", "reason": "x"}, "delta"),
    ("POST", "/api/staff/products/1/stock", {"set": -1, "reason": "x"}, "set"),
    ("POST", "/api/staff/products/1/stock", {"set": 1000001, "reason": "x"}, "set"),
    ("POST", "/api/staff/products/1/stock", {"delta": 1, "reason": "x", "staff": "mallory"}, "staff"),
]


@pytest.mark.parametrize("method,path,body,field", BAD_INPUT,
                         ids=[f"{m}-{f}-{i}" for i, (m, _, _, f) in enumerate(BAD_INPUT)])
def test_bad_input_400_names_the_field_and_changes_nothing(shop, method, path, body, field):
    before, audits = products(shop), audit_count(shop)
    st, _, out = staff(shop, method, path, body, headers={"Content-Type": "application/json"})
    assert st == 400, (st, out)
    assert field in out["error"], out
    assert products(shop) == before and audit_count(shop) == audits


def test_unknown_product_404_and_wrong_type_415(shop):
    audits = audit_count(shop)
    st, _, out = staff(shop, "POST", "/api/staff/products/nope/stock", {"delta": 1, "reason": "x"})
    assert st == 404 and "nope" in out["error"], out
    st, _, out = staff(shop, "PUT", "/api/staff/products/1", "name=Brie",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert st == 415, out
    assert audit_count(shop) == audits


def test_audit_rows_through_list_audit(shop, pb):
    pb2, pb2_grpc = pb
    st, _, body = staff(shop, "POST", "/api/staff/products/3/stock", {"delta": -1, "reason": "dropped a loaf"})
    assert st == 200, body
    total = audit_count(shop)
    with grpc.insecure_channel(shop.grpc_addr("stock")) as ch:
        stock = pb2_grpc.StockServiceStub(ch)
        r = stock.ListAudit(pb2.ListAuditRequest(limit=200), timeout=10)
        assert len(r.entries) == total
        newest = r.entries[0]
        assert (newest.service, newest.staff, newest.action, newest.subject, newest.reason) == (
            "stock", "admin", "stock.adjust", "3", "dropped a loaf")
        assert newest.at.endswith("Z") and "." in newest.at
        ats = [e.atMs for e in r.entries]
        assert ats == sorted(ats, reverse=True)
        page = stock.ListAudit(pb2.ListAuditRequest(beforeMs=newest.atMs, limit=200), timeout=10)
        assert all(e.atMs < newest.atMs for e in page.entries)
        with pytest.raises(grpc.RpcError) as e:
            stock.ListAudit(pb2.ListAuditRequest(limit=201), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit" in e.value.details()
