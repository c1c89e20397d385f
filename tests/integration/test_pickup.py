"""The hand-over at the counter on one shop: a paid order gets a short pickup code
(the customer's order, the kitchen ticket and the events carry it), staff hand a
ready order over by bumping it or by typing its code, the customer sees `collected`,
the kitchen takes the ticket off its display, and what cannot be handed over is
refused without a change. Runs on SQLite and, with OMS_TEST_DB=postgres, on
PostgreSQL."""
import re

import pytest

from oms_harness import http, serve_shop, wait_for

CATALOG = {"currency": "usd", "products": [
    {"productID": "1", "name": "Cheese", "priceID": "price_cheese", "unitPrice": 450, "quantity": 1000},
]}
READY = "ready for pick-up"
CODE = re.compile(r"^[ACDEFGHJKMNPQRTUVWXY34679]{4}$")


@pytest.fixture(scope="module")
def shop(rabbit, workdir):
    # A short pick-up window, checked often: an uncollected order is flagged in seconds.
    yield from serve_shop(rabbit, workdir, catalog=CATALOG,
                          env={"PICKUP_WINDOW": 3, "KITCHEN_LATE_SCAN_MS": 100})


def staff(shop, method, path, origin=True):
    h = dict(shop.staff_cookie())
    if origin:
        h["Origin"] = shop.gateway
    return http(method, shop.gateway + path, b"" if method == "POST" else None, headers=h)


def order(shop, customer, pay=True, ready=True):
    st, _, body = shop.create(customer, [{"productID": "1", "quantity": 1}])
    assert st == 201, body
    oid = body["order"]["orderID"]
    o = shop.wait_status(customer, oid, "waiting_payment")
    if pay:
        st, _, body = http("POST", o["PaymentLink"] + "/pay", b"")
        assert st == 200, body
        o = shop.wait_status(customer, oid, READY if ready else "paid")
    return o


def ticket(shop, oid):
    st, _, body = http("GET", f"{shop.kitchen_admin}/tickets/{oid}")
    return body if st == 200 else None


def status_of(shop, customer, oid):
    st, _, body = shop.get(customer, oid)
    assert st == 200, body
    return body["status"]


def collected_events(shop, oid):
    return shop.scalar("orders", "SELECT COUNT(*) FROM outbox WHERE exchange = 'order.collected'"
                       " AND body LIKE ?", (f"%{oid}%",))


def test_paid_order_has_a_code_everywhere(shop):
    o = order(shop, "pick-1")
    assert CODE.match(o.get("pickupCode", "")), o
    t = wait_for(lambda: ticket(shop, o["orderID"]), 10, "the ticket")
    assert t["pickupCode"] == o["pickupCode"], t
    unpaid = order(shop, "pick-1b", pay=False)
    assert "pickupCode" not in unpaid, unpaid


def test_bump_hands_over_once(shop):
    o = order(shop, "pick-2")
    oid = o["orderID"]
    st, _, body = staff(shop, "POST", f"/api/staff/orders/{oid}/collect")
    assert st == 200 and body["status"] == "collected", (st, body)
    assert shop.wait_status("pick-2", oid, "collected")["pickupCode"] == o["pickupCode"]
    wait_for(lambda: ticket(shop, oid)["state"] == "collected", 10, "the ticket collected")
    # Again: the same answer, nothing new (one history line, one event, one audit row).
    st, _, body = staff(shop, "POST", f"/api/staff/orders/{oid}/collect")
    assert st == 200 and body["status"] == "collected", (st, body)
    assert collected_events(shop, oid) == 1
    assert shop.scalar("orders", "SELECT COUNT(*) FROM order_history WHERE order_id = ? AND status = 'collected'",
                       (oid,)) == 1
    assert shop.scalar("orders", "SELECT COUNT(*) FROM orders_audit WHERE subject = ? AND action = 'order.collect'",
                       (oid,)) == 1
    st, _, body = staff(shop, "GET", f"/api/staff/orders/{oid}")
    last = body["history"][-1]
    assert last["status"] == "collected" and "admin" in last["cause"], body["history"]


def test_code_hands_over_in_any_case(shop):
    o = order(shop, "pick-3")
    st, _, body = staff(shop, "POST", "/api/staff/pickup/" + o["pickupCode"].lower())
    assert st == 200 and body["orderID"] == o["orderID"] and body["status"] == "collected", (st, body)
    st, _, body = staff(shop, "POST", "/api/staff/pickup/" + o["pickupCode"])
    assert st == 200 and body["status"] == "collected", (st, body)   # again: a no-op
    assert collected_events(shop, o["orderID"]) == 1


def test_what_cannot_be_handed_over(shop):
    # Unknown codes (and anything that is not a code) are 404, without a hint.
    for code in ("ZZZZ", "AAAA", "abc%20d", "0000000000000000000"):
        st, _, body = staff(shop, "POST", "/api/staff/pickup/" + code)
        assert st == 404, (code, st, body)
    # Another day's code: the same code moved to yesterday is no longer today's.
    old = order(shop, "pick-4")
    shop.execute("orders", "UPDATE orders SET pickup_day = '2000-01-01' WHERE id = ?", (old["orderID"],))
    st, _, body = staff(shop, "POST", "/api/staff/pickup/" + old["pickupCode"])
    assert st == 404, (st, body)
    assert status_of(shop, "pick-4", old["orderID"]) == READY
    # Not ready yet (unpaid): 409 naming the status, nothing changed.
    unpaid = order(shop, "pick-5", pay=False)
    st, _, body = staff(shop, "POST", f"/api/staff/orders/{unpaid['orderID']}/collect")
    assert st == 409 and "waiting_payment" in body["error"], (st, body)
    assert status_of(shop, "pick-5", unpaid["orderID"]) == "waiting_payment"
    assert collected_events(shop, unpaid["orderID"]) == 0
    # Strangers and cross-site requests: refused before anything happens.
    st, _, _ = http("POST", f"{shop.gateway}/api/staff/orders/{old['orderID']}/collect", b"")
    assert st == 401
    st, _, _ = http("POST", f"{shop.gateway}/api/staff/orders/{old['orderID']}/collect", b"",
                    headers={**shop.staff_cookie(), "Origin": "https://evil.example"})
    assert st == 403
    assert status_of(shop, "pick-4", old["orderID"]) == READY


def late_metric(shop):
    st, _, text = http("GET", f"{shop.kitchen_admin}/metrics")
    m = re.search(r'^kitchen_late_tickets_total\{stage="ready"\} (\d+)', text, re.M)
    return int(m.group(1)) if m else 0


def test_uncollected_order_is_flagged_after_the_window(shop):
    before = late_metric(shop)
    o = order(shop, "pick-6")
    oid = o["orderID"]
    t = ticket(shop, oid)
    assert t["state"] == "ready" and t["late"] is False, t
    flagged = wait_for(lambda: (lambda t: t if t["late"] else None)(ticket(shop, oid)), 20, "the ticket flagged")
    assert flagged["state"] == "ready" and flagged["wasLate"] is True, flagged
    assert late_metric(shop) >= before + 1
    # The staff display's data says so too, and the day's figures count it.
    st, _, body = http("GET", f"{shop.gateway}/api/kitchen/tickets", headers=shop.staff_cookie())
    mine = [x for x in body["tickets"] if x["orderID"] == oid]
    assert st == 200 and mine and mine[0]["late"] is True and body["pickupWindowMs"] == 3000, body
    st, _, body = staff(shop, "GET", "/api/staff/summary", origin=False)
    assert st == 200 and body["lateTickets"] >= 1 and "partial" not in body, body
    # Collected at last: off the display, and never flagged again.
    st, _, body = staff(shop, "POST", f"/api/staff/orders/{oid}/collect")
    assert st == 200 and body["status"] == "collected", body
    wait_for(lambda: ticket(shop, oid)["state"] == "collected", 10, "collected")
