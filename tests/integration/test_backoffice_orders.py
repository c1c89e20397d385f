"""The back office's order routes on one shop: who may call them (staff session, the
shop's own Origin for the refund), every customer's orders with filters, one order's
history, a staff refund end to end (orders -> order.refunded -> payments' refund row ->
the customer's view), refusals that change nothing, the day's figures and the merged
audit. Runs on SQLite and, with OMS_TEST_DB=postgres, on PostgreSQL."""
import datetime
import urllib.parse

import pytest

from oms_harness import http, serve_shop, wait_for

BIG = {"currency": "usd", "products": [
    {"productID": "1", "name": "Cheese", "priceID": "price_cheese", "unitPrice": 450, "quantity": 1000},
    {"productID": "2", "name": "Chocolate", "priceID": "price_chocolate", "unitPrice": 250, "quantity": 1000},
]}
READY = "ready for pick-up"


@pytest.fixture(scope="module")
def shop(rabbit, workdir):
    yield from serve_shop(rabbit, workdir, catalog=BIG)


def need(shop, *names):
    missing = [n for n in names if n not in shop.svc]
    if missing:
        pytest.skip(f"services not built yet: {missing}")


def staff(shop, method, path, body=None, headers=None):
    h = dict(shop.staff_cookie())
    if method == "POST":
        h["Origin"] = shop.gateway
    if isinstance(body, str):  # urllib would call raw text a form
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    return http(method, shop.gateway + path, body, headers=h)


def place(shop, customer, items=None):
    st, _, body = shop.create(customer, items or [{"productID": "1", "quantity": 2}])
    assert st == 201, body
    return body["order"]["orderID"]


def pay(shop, customer, oid):
    order = shop.wait_status(customer, oid, "waiting_payment")
    st, _, body = http("POST", order["PaymentLink"] + "/pay", b"")
    assert st == 200, (st, body)


def ready_order(shop, customer, items=None):
    oid = place(shop, customer, items)
    pay(shop, customer, oid)
    return shop.wait_status(customer, oid, READY)


def today():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def audit_rows(shop, oid):
    return shop.scalar("orders", "SELECT COUNT(*) FROM orders_audit WHERE subject = ?", (oid,))


def refund_events(shop, oid):
    return shop.scalar("orders", "SELECT COUNT(*) FROM outbox WHERE exchange = 'order.refunded'"
                       " AND body LIKE ?", (f"%{oid}%",))


ROUTES = [("GET", "/api/staff/orders"), ("GET", "/api/staff/orders/abc"),
          ("POST", "/api/staff/orders/abc/refund"), ("GET", "/api/staff/summary"),
          ("GET", "/api/staff/audit")]


@pytest.mark.parametrize("method,path", ROUTES)
def test_every_route_needs_a_staff_session(shop, method, path):
    body = {"reason": "x"} if method == "POST" else None
    st, _, err = http(method, shop.gateway + path, body, headers={"Origin": shop.gateway})
    assert st == 401, (st, err)
    st, _, err = http(method, shop.gateway + path, body,
                      headers={"Origin": shop.gateway, "Cookie": "oms_staff=" + "0" * 64})
    assert st == 401, (st, err)


def test_refund_from_another_origin_is_refused(shop):
    need(shop, "payments", "kitchen")
    o = ready_order(shop, "bo-origin")
    st, _, err = staff(shop, "POST", f"/api/staff/orders/{o['orderID']}/refund", {"reason": "x"},
                       headers={"Origin": "https://evil.example"})
    assert st == 403, err
    assert shop.get("bo-origin", o["orderID"])[2]["status"] == READY
    assert audit_rows(shop, o["orderID"]) == 0


def test_list_filters_and_paging(shop):
    need(shop, "payments", "kitchen")
    a = place(shop, "bo-list")
    b = place(shop, "bo-list", [{"productID": "2", "quantity": 1}])
    c = ready_order(shop, "bo-list")["orderID"]
    st, hdrs, body = staff(shop, "GET", "/api/staff/orders?customerID=bo-list")
    assert st == 200, body
    assert [o["orderID"] for o in body["orders"]] == [c, b, a]  # newest first
    assert all(o["customerID"] == "bo-list" for o in body["orders"])
    assert body["nextPageToken"] == ""
    assert hdrs.get("Cache-Control") == "no-store"

    q = urllib.parse.urlencode({"customerID": "bo-list", "status": READY})
    st, _, body = staff(shop, "GET", "/api/staff/orders?" + q)
    assert st == 200 and [o["orderID"] for o in body["orders"]] == [c], body
    st, _, body = staff(shop, "GET", f"/api/staff/orders?orderID={b}")
    assert st == 200 and [o["orderID"] for o in body["orders"]] == [b], body
    st, _, body = staff(shop, "GET", f"/api/staff/orders?orderID={b}&status=paid")
    assert st == 200 and body["orders"] == [], body

    tomorrow = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)).strftime("%Y-%m-%d")
    st, _, body = staff(shop, "GET", f"/api/staff/orders?customerID=bo-list&since={tomorrow}")
    assert st == 200 and body["orders"] == [], body
    st, _, body = staff(shop, "GET", f"/api/staff/orders?customerID=bo-list&until={tomorrow}")
    assert st == 200 and len(body["orders"]) == 3, body
    st, _, body = staff(shop, "GET", f"/api/staff/orders?customerID=bo-list&since={today()}&until={tomorrow}")
    assert st == 200 and len(body["orders"]) == 3, body
    since = urllib.parse.quote(shop.get("bo-list", b)[2]["createdAt"])
    st, _, body = staff(shop, "GET", f"/api/staff/orders?customerID=bo-list&since={since}")
    assert st == 200 and [o["orderID"] for o in body["orders"]][-1] == b, body

    st, _, p1 = staff(shop, "GET", "/api/staff/orders?customerID=bo-list&pageSize=2")
    assert st == 200 and [o["orderID"] for o in p1["orders"]] == [c, b] and p1["nextPageToken"], p1
    tok = urllib.parse.quote(p1["nextPageToken"])
    st, _, p2 = staff(shop, "GET", f"/api/staff/orders?customerID=bo-list&pageSize=2&pageToken={tok}")
    assert st == 200 and [o["orderID"] for o in p2["orders"]] == [a] and p2["nextPageToken"] == "", p2


def test_history_oldest_first(shop):
    need(shop, "payments", "kitchen")
    oid = ready_order(shop, "bo-hist")["orderID"]
    st, _, body = staff(shop, "GET", f"/api/staff/orders/{oid}")
    assert st == 200, body
    assert body["order"]["orderID"] == oid and body["order"]["customerID"] == "bo-hist"
    got = [h["status"] for h in body["history"]]
    # events travel on separate queues: cooking may arrive before paid, or ready before
    # cooking, and a status skipped that way is never applied afterwards (no going back)
    chain = ["pending", "waiting_payment", "paid", "cooking", READY]
    assert got[:2] == chain[:2] and got[-1] == READY, got
    assert [chain.index(s) for s in got] == sorted(chain.index(s) for s in got), got
    times = [datetime.datetime.fromisoformat(h["at"].replace("Z", "+00:00")) for h in body["history"]]
    assert times == sorted(times)
    assert body["history"][0]["cause"] == "created" and all(h["cause"] for h in body["history"])
    st, _, err = staff(shop, "GET", "/api/staff/orders/no-such-order")
    assert st == 404, err


def test_refund_of_a_ready_order_returns_the_money_once(shop):
    need(shop, "payments", "kitchen")
    o = ready_order(shop, "bo-refund")
    oid = o["orderID"]
    st, _, body = staff(shop, "POST", f"/api/staff/orders/{oid}/refund", {"reason": "cold food"})
    assert st == 200, body
    assert body["orderID"] == oid and body["status"] == "refunded"
    assert shop.get("bo-refund", oid)[2]["status"] == "refunded"
    wait_for(lambda: shop.scalar("payments", "SELECT COUNT(*) FROM refunds WHERE order_id = ?", (oid,)) == 1,
             20, "payments to record the refund")
    assert shop.scalar("payments", "SELECT amount FROM refunds WHERE order_id = ?", (oid,)) == o["total"]
    assert shop.scalar("payments", "SELECT reason FROM refunds WHERE order_id = ?", (oid,)) == "staff"
    st, _, h = staff(shop, "GET", f"/api/staff/orders/{oid}")
    assert h["history"][-1]["status"] == "refunded"
    assert h["history"][-1]["cause"] == "staff admin: cold food"

    # twice: the same answer, no second audit row, no second event, one refund
    st, _, again = staff(shop, "POST", f"/api/staff/orders/{oid}/refund", {"reason": "again"})
    assert st == 200 and again["status"] == "refunded", again
    assert audit_rows(shop, oid) == 1
    assert refund_events(shop, oid) == 1
    assert shop.scalar("payments", "SELECT COUNT(*) FROM refunds WHERE order_id = ?", (oid,)) == 1

    st, _, audit = staff(shop, "GET", "/api/staff/audit?limit=200")
    assert st == 200, audit
    mine = [e for e in audit["entries"] if e["subject"] == oid]
    assert len(mine) == 1, audit
    e = mine[0]
    assert (e["service"], e["action"], e["staff"], e["reason"]) == ("orders", "order.refund", "admin", "cold food")
    assert e["before"] == {"status": READY} and e["after"] == {"status": "refunded"}
    assert isinstance(e["atMs"], int) and e["at"].endswith("Z")


@pytest.mark.parametrize("end", ["pending", "cancelled"])
def test_refund_refused_changes_nothing(shop, end):
    oid = place(shop, "bo-refuse")
    if end == "cancelled":
        st, _, _ = http("POST", f"{shop.gateway}/api/customers/bo-refuse/orders/{oid}/cancel", b"")
        assert st == 200
        names = ["cancelled"]
    else:
        # payments moves it to waiting_payment meanwhile: neither is refundable
        names = ["pending", "waiting_payment"]
    st, _, err = staff(shop, "POST", f"/api/staff/orders/{oid}/refund", {"reason": "no"})
    assert st == 409, err
    assert any(err["error"] == f"order {oid} is {n}: only a paid, cooking or ready order can be refunded"
               for n in names), err
    if end == "cancelled":
        wait_for(lambda: shop.scalar("payments", "SELECT status FROM checkout_sessions WHERE order_id = ?",
                                     (oid,)) in (None, "cancelled"), 20, "the checkout to close")
    assert shop.get("bo-refuse", oid)[2]["status"] in names
    assert audit_rows(shop, oid) == 0
    assert refund_events(shop, oid) == 0


def test_summary_of_the_day(shop):
    need(shop, "payments", "kitchen")
    day = today()
    st, _, s0 = staff(shop, "GET", f"/api/staff/summary?day={day}")
    assert st == 200, s0
    a = ready_order(shop, "bo-sum", [{"productID": "1", "quantity": 3}])
    b = ready_order(shop, "bo-sum", [{"productID": "1", "quantity": 1}, {"productID": "2", "quantity": 2}])
    place(shop, "bo-sum")  # created, never paid
    st, _, s1 = staff(shop, "GET", f"/api/staff/summary?day={day}")
    assert st == 200, s1
    assert s1["day"] == day and s1["tzOffsetMinutes"] == 0 and s1["currency"] == "usd"
    assert s1["orders"] - s0["orders"] == 3
    assert s1["paidOrders"] - s0["paidOrders"] == 2
    assert s1["revenue"] - s0["revenue"] == a["total"] + b["total"]
    units0 = {u["productID"]: u["quantity"] for u in s0["units"]}
    units1 = {u["productID"]: u["quantity"] for u in s1["units"]}
    assert units1["1"] - units0.get("1", 0) == 4 and units1["2"] - units0.get("2", 0) == 2
    assert {u["productName"] for u in s1["units"]} >= {"Cheese", "Chocolate"}
    assert len(s1["ordersPerHour"]) == 24 and sum(s1["ordersPerHour"]) == s1["orders"]
    assert 0 <= s1["paidToReadyP50Ms"] <= s1["paidToReadyP90Ms"]
    assert s1["lateTickets"] == 0
    # without day: today (UTC); another day: nothing
    st, _, s2 = staff(shop, "GET", "/api/staff/summary")
    assert st == 200 and s2["day"] == day, s2
    st, _, old = staff(shop, "GET", "/api/staff/summary?day=2020-01-01&tz=-300")
    assert st == 200 and old["orders"] == 0 and old["units"] == [] and old["tzOffsetMinutes"] == -300, old
    # a refund counts on the day it happened
    st, _, _ = staff(shop, "POST", f"/api/staff/orders/{a['orderID']}/refund", {"reason": "summary"})
    assert st == 200
    st, _, s3 = staff(shop, "GET", f"/api/staff/summary?day={day}")
    assert s3["refunds"] - s1["refunds"] == 1 and s3["refundedAmount"] - s1["refundedAmount"] == a["total"]


def test_audit_pages_back_and_reports_a_missing_stock_side(shop):
    need(shop, "payments", "kitchen")
    for i in range(3):
        oid = ready_order(shop, "bo-audit")["orderID"]
        st, _, _ = staff(shop, "POST", f"/api/staff/orders/{oid}/refund", {"reason": f"audit {i}"})
        assert st == 200
    st, _, all_ = staff(shop, "GET", "/api/staff/audit?limit=200")
    assert st == 200, all_
    times = [e["atMs"] for e in all_["entries"]]
    assert times == sorted(times, reverse=True) and len(times) >= 3
    # stock's side is built separately: until it answers, the orders' side is marked partial
    assert all_.get("partial", ["stock"]) == ["stock"]
    st, _, p1 = staff(shop, "GET", "/api/staff/audit?limit=1")
    assert st == 200 and len(p1["entries"]) == 1 and p1["nextBefore"] == p1["entries"][0]["atMs"], p1
    st, _, p2 = staff(shop, "GET", f"/api/staff/audit?limit=1&before={p1['nextBefore']}")
    assert st == 200 and len(p2["entries"]) == 1 and p2["entries"][0]["atMs"] < p1["nextBefore"], p2
    st, _, last = staff(shop, "GET", "/api/staff/audit?limit=200&before=1")
    assert st == 200 and last["entries"] == [] and last["nextBefore"] is None, last


BAD = [
    ("GET", "/api/staff/orders?status=shipped", None, "status"),
    ("GET", "/api/staff/orders?customerID=a%20b", None, "customerID"),
    ("GET", "/api/staff/orders?orderID=" + "x" * 65, None, "orderID"),
    ("GET", "/api/staff/orders?since=2026-13-01", None, "since"),
    ("GET", "/api/staff/orders?until=yesterday", None, "until"),
    ("GET", "/api/staff/orders?since=2026-12-01&tz=900", None, "tz"),
    ("GET", "/api/staff/orders?pageSize=0", None, "pageSize"),
    ("GET", "/api/staff/orders?pageToken=garbage", None, "pageToken"),
    ("GET", "/api/staff/summary?day=2026-02-30", None, "day"),
    ("GET", "/api/staff/summary?day=26-12-01", None, "day"),
    ("GET", "/api/staff/summary?tz=841", None, "tz"),
    ("GET", "/api/staff/summary?tz=-841", None, "tz"),
    ("GET", "/api/staff/summary?tz=1.5", None, "tz"),
    ("GET", "/api/staff/audit?before=-1", None, "before"),
    ("GET", "/api/staff/audit?limit=201", None, "limit"),
    ("GET", "/api/staff/audit?limit=abc", None, "limit"),
    ("POST", "REFUND", {"reason": "x" * 10000}, "reason"),
    ("POST", "REFUND", {"reason": "a\u0001b"}, "reason"),
    ("POST", "REFUND", {"reason": "line\nbreak"}, "reason"),
    ("POST", "REFUND", {"reason": ""}, "reason"),
    ("POST", "REFUND", {"reason": 5}, "reason"),
    ("POST", "REFUND", {}, "reason"),
    ("POST", "REFUND", "not json", "reason"),
    ("POST", "/api/staff/orders/bad%20id/refund", {"reason": "x"}, "orderID"),
]


@pytest.fixture(scope="module")
def victim(shop):
    """A ready order that the bad refunds below must leave as it is."""
    need(shop, "payments", "kitchen")
    return ready_order(shop, "bo-bad")


@pytest.mark.parametrize("method,path,body,field", BAD)
def test_bad_input_is_400_naming_the_field(shop, victim, method, path, body, field):
    oid = victim["orderID"]
    path = f"/api/staff/orders/{oid}/refund" if path == "REFUND" else path
    st, _, err = staff(shop, method, path, body)
    assert st == 400, (st, err)
    assert err["error"].startswith(field + ":"), err
    assert shop.get("bo-bad", oid)[2]["status"] == READY
    assert audit_rows(shop, oid) == 0


def test_refund_needs_a_json_body(shop, victim):
    st, _, err = staff(shop, "POST", f"/api/staff/orders/{victim['orderID']}/refund", b"reason=x",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert st == 415, err
    assert audit_rows(shop, victim["orderID"]) == 0
