"""payments: the local checkout and the Stripe webhook over the real services
(gateway -> orders -> stock, order.created -> payments -> UpdateOrder, webhook ->
order.paid / order.cancelled through the outbox)."""
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid

import pytest

from oms_harness import SRC, http, wait_for

SECRET = "whsec_test_secret"  # what the harness gives every service
PAID = ("paid", "cooking", "ready for pick-up")  # kitchen may move a paid order on
NODE_DIR = os.path.join(SRC, "tests", "node")


# ---- helpers -------------------------------------------------------------------------

def sign(body, secret=SECRET, t=None):
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return t, mac


def header(body, secret=SECRET, t=None):
    t, mac = sign(body, secret, t)
    return f"t={t},v1={mac}"


def event(etype, session_id, order, payment_status="paid", status="complete", evt_id=None):
    """A checkout.session event in Stripe's shape."""
    return json.dumps({
        "id": evt_id or "evt_test_" + uuid.uuid4().hex,
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "type": etype,
        "data": {"object": {
            "id": session_id, "object": "checkout.session", "mode": "payment", "status": status,
            "payment_status": payment_status, "amount_total": order["total"], "currency": order["currency"],
            "client_reference_id": order["orderID"],
            "metadata": {"orderID": order["orderID"], "customerID": order["customerID"]},
        }},
    }).encode()


def post_webhook(shop, body, sig, ctype="application/json"):
    hdrs = {"Content-Type": ctype}
    if sig is not None:
        hdrs["Stripe-Signature"] = sig
    return http("POST", shop.payments + "/webhook", body, headers=hdrs)


def order_waiting(shop, customer, items):
    """Creates an order and waits for payments to give it a local checkout link.
    Returns (order, session id)."""
    st, _, body = shop.create(customer, items)
    assert st == 201, body
    oid = body["order"]["orderID"]
    order = shop.wait_status(customer, oid, "waiting_payment")
    m = re.fullmatch(re.escape(shop.payments) + r"/checkout/(cs_local_[0-9a-f]{24})", order["PaymentLink"])
    assert m, order["PaymentLink"]
    return order, m.group(1)


def wait_paid(shop, customer, oid):
    def paid():
        st, _, o = shop.get(customer, oid)
        return o if st == 200 and o["status"] in PAID else None
    return wait_for(paid, 30, f"order {oid} to be paid")


def metric(shop, name, **labels):
    """The value of one series on payments' /metrics (0 when absent)."""
    st, _, text = http("GET", shop.payments + "/metrics")
    assert st == 200
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):line.rindex("}") + 1]))
        if got == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Tap:
    """A private queue bound to an event exchange through the management API, to see
    exactly which messages reached the broker."""

    def __init__(self, shop, exchange):
        rabbit = self.rabbit = shop.rabbit
        # Newer harnesses give each shop its own broker vhost.
        self.vhost = urllib.parse.quote(getattr(shop, "vhost", "/"), safe="")
        self.name = f"test.tap.{uuid.uuid4().hex[:12]}"
        # The exchange is declared by the services' consumers when they connect.
        wait_for(lambda: rabbit.api(f"exchanges/{self.vhost}/{exchange}"), 20, f"exchange {exchange}")
        self._call("PUT", f"queues/{self.vhost}/{self.name}", {"durable": False, "auto_delete": False})
        self._call("POST", f"bindings/{self.vhost}/e/{exchange}/q/{self.name}", {"routing_key": ""})
        self.seen = []

    def _call(self, method, path, body):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.rabbit.mgmt_port}/api/{path}", data=json.dumps(body).encode(), method=method,
            headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def drain(self):
        msgs = self._call("POST", f"queues/{self.vhost}/{self.name}/get",
                          {"count": 100, "ackmode": "ack_requeue_false", "encoding": "auto"})
        self.seen += [json.loads(m["payload"]) for m in msgs]
        return self.seen

    def count(self, oid):
        return sum(1 for m in self.seen if m["orderID"] == oid)

    def delete(self):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.rabbit.mgmt_port}/api/queues/{self.vhost}/{self.name}", method="DELETE",
            headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
        urllib.request.urlopen(req, timeout=5).close()


@pytest.fixture
def pshop(make_shop):
    """A fresh shop (queues and counters of its own test) with payments ready."""
    shop = make_shop()
    if "payments" not in shop.svc:
        pytest.skip("oms-payments is not built")
    for url in (shop.payments, shop.orders_admin):
        wait_for(lambda: http("GET", url + "/readyz", timeout=2)[0] == 200, 30, f"{url} ready")
    return shop


# ---- tests ---------------------------------------------------------------------------

def test_checkout_page_shows_items_and_total(pshop):
    order, sid = order_waiting(pshop, "c-page", [{"productID": "1", "quantity": 2}, {"productID": "2", "quantity": 1}])
    st, hdrs, page = http("GET", order["PaymentLink"])
    assert st == 200 and hdrs["Content-Type"].startswith("text/html")
    assert "Cheese" in page and "Chocolate" in page
    assert "$11.50" in page  # 2 x 4.50 + 2.50, written as the shop writes it
    assert f'action="/checkout/{sid}/pay"' in page and f'action="/checkout/{sid}/cancel"' in page
    assert ">Pay</button>" in page and ">Cancel</button>" in page
    assert 'name="viewport"' in page and 'lang="en"' in page
    st, _, page = http("GET", pshop.payments + "/checkout/cs_local_000000000000000000000000")
    assert st == 404 and "not found" in page.lower()


def test_rejected_signatures_change_nothing(pshop):
    order, sid = order_waiting(pshop, "c-bad", [{"productID": "3", "quantity": 1}])
    body = event("checkout.session.completed", sid, order)
    cases = [
        (header(body, secret="whsec_wrong"), "no signatures found"),
        (header(body, t=int(time.time()) - 310), "tolerance"),  # well past 300 s: clocks tick in whole seconds
        (None, "no Stripe-Signature header"),
        ("t=abc,v1=00", "malformed"),
        (header(b'{"tampered":true}' + body), "no signatures found"),
    ]
    for sig, msg in cases:
        st, _, resp = post_webhook(pshop, body, sig)
        assert st == 400, (sig, resp)
        assert msg in resp["error"], (sig, resp)
    st, _, resp = post_webhook(pshop, body, header(body), ctype="text/plain")
    assert st == 415, resp
    st, _, o = pshop.get("c-bad", order["orderID"])
    assert o["status"] == "waiting_payment"
    # the session is still payable: the rejected deliveries recorded nothing
    assert metric(pshop, "payments_webhooks_total", type="checkout.session.completed", result="applied") == 0
    st, _, page = http("GET", order["PaymentLink"])
    assert st == 200 and ">Pay</button>" in page


def test_paid_once_even_when_delivered_twice(pshop):
    tap = Tap(pshop, "order.paid")
    try:
        order, sid = order_waiting(pshop, "c-pay", [{"productID": "4", "quantity": 2}])
        oid = order["orderID"]
        body = event("checkout.session.completed", sid, order)
        t, right = sign(body)
        _, wrong1 = sign(body, secret="whsec_old")
        _, wrong2 = sign(body, secret="whsec_older")
        sig = f"t={t},v1={wrong1},v1={right},v1={wrong2},v0={wrong1}"
        st, _, resp = post_webhook(pshop, body, sig)
        assert st == 200 and resp == {"received": True}, resp
        wait_paid(pshop, "c-pay", oid)
        wait_for(lambda: tap.drain() and tap.count(oid) >= 1, 20, "order.paid on the broker")

        st, _, resp = post_webhook(pshop, body, sig)  # Stripe redelivers
        assert st == 200 and resp == {"received": True, "duplicate": True}, resp
        labels = dict(type="checkout.session.completed")
        assert metric(pshop, "payments_webhooks_total", result="applied", **labels) == 1
        assert metric(pshop, "payments_webhooks_total", result="duplicate", **labels) == 1

        # Barrier: the relay publishes in outbox order, so once a later order's
        # order.paid is on the broker, a second one for the first would be there too.
        later, lsid = order_waiting(pshop, "c-pay", [{"productID": "4", "quantity": 1}])
        lbody = event("checkout.session.completed", lsid, later)
        assert post_webhook(pshop, lbody, header(lbody))[0] == 200
        wait_for(lambda: tap.drain() and tap.count(later["orderID"]) >= 1, 20, "the later order.paid")
        assert tap.count(oid) == 1, tap.seen
        paid = [m for m in tap.seen if m["orderID"] == oid][0]
        assert paid["status"] == "paid" and paid["customerID"] == "c-pay"
        assert paid["items"][0]["productID"] == "4" and paid["total"] == 2 * 380
        st, _, o = pshop.get("c-pay", oid)
        assert o["status"] in PAID
    finally:
        tap.delete()


def test_header_from_stripe_library_is_accepted(pshop):
    if shutil.which("node") is None:
        pytest.skip("node is not installed: cannot run Stripe's official library")
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "stripe")):
        npm = shutil.which("npm")
        assert npm, "node is installed but npm is not: cannot install tests/node"
        subprocess.run([npm, "ci", "--prefix", NODE_DIR, "--no-audit", "--no-fund"], check=True,
                       stdout=subprocess.DEVNULL, timeout=300)
    order, sid = order_waiting(pshop, "c-npm", [{"productID": "5", "quantity": 1}])
    body = event("checkout.session.completed", sid, order)
    out = subprocess.run(["node", os.path.join(NODE_DIR, "stripe_sign.js")], input=body, capture_output=True,
                         check=True, timeout=60, env=dict(os.environ, STRIPE_WEBHOOK_SECRET=SECRET))
    sig = out.stdout.decode().strip()
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", sig), sig
    st, _, resp = post_webhook(pshop, body, sig)
    assert st == 200, resp
    wait_paid(pshop, "c-npm", order["orderID"])


def test_expired_event_cancels_and_releases_stock(pshop):
    before = pshop.stock()["6"]
    order, sid = order_waiting(pshop, "c-exp", [{"productID": "6", "quantity": 3}])
    assert pshop.stock()["6"]["reserved"] == before["reserved"] + 3
    body = event("checkout.session.expired", sid, order, payment_status="unpaid", status="expired")
    st, _, resp = post_webhook(pshop, body, header(body))
    assert st == 200, resp
    pshop.wait_status("c-exp", order["orderID"], "cancelled")

    def released():
        s = pshop.stock()["6"]
        return s if (s["available"], s["reserved"]) == (before["available"], before["reserved"]) else None
    wait_for(released, 20, "stock released")
    # a late payment for the expired session is refunded; the stock stays released
    late = event("checkout.session.completed", sid, order)
    assert post_webhook(pshop, late, header(late))[0] == 200
    assert metric(pshop, "payments_webhooks_total", type="checkout.session.completed", result="refunded") == 1
    pshop.wait_status("c-exp", order["orderID"], "refunded")
    s = pshop.stock()["6"]
    assert (s["available"], s["reserved"], s["sold"]) == (before["available"], before["reserved"], before["sold"])


def test_async_payment_failed_marks_order(pshop):
    order, sid = order_waiting(pshop, "c-fail", [{"productID": "3", "quantity": 1}])
    # completed but not yet paid (a delayed payment method): nothing happens yet
    pending = event("checkout.session.completed", sid, order, payment_status="unpaid")
    assert post_webhook(pshop, pending, header(pending))[0] == 200
    assert pshop.get("c-fail", order["orderID"])[2]["status"] == "waiting_payment"
    body = event("checkout.session.async_payment_failed", sid, order, payment_status="unpaid")
    assert post_webhook(pshop, body, header(body))[0] == 200
    pshop.wait_status("c-fail", order["orderID"], "payment_failed")


def test_unknown_session_and_other_types_are_acknowledged(pshop):
    fake = {"orderID": "nope", "customerID": "x", "total": 1, "currency": "usd"}
    body = event("checkout.session.completed", "cs_unknown", fake)
    st, _, resp = post_webhook(pshop, body, header(body))
    assert st == 200, resp
    other = json.dumps({"id": "evt_other_" + uuid.uuid4().hex, "type": "charge.refunded",
                        "data": {"object": {"id": "ch_1"}}}).encode()
    assert post_webhook(pshop, other, header(other))[0] == 200
    assert metric(pshop, "payments_webhooks_total", type="other", result="ignored") == 1
    bad = b'{"id": 5}'
    st, _, resp = post_webhook(pshop, bad, header(bad))
    assert st == 400 and "id" in resp["error"]


def test_local_pay_and_cancel_buttons(pshop):
    order, sid = order_waiting(pshop, "c-btn", [{"productID": "1", "quantity": 1}])
    oid = order["orderID"]
    status_page = f"{pshop.gateway}/success.html?customerID=c-btn&orderID={oid}"

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None
    opener = urllib.request.build_opener(NoRedirect)

    def post(url):
        req = urllib.request.Request(url, data=b"", method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            with opener.open(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    st, hdrs, _ = post(f"{pshop.payments}/checkout/{sid}/pay")
    assert st == 303 and hdrs["Location"] == status_page
    wait_paid(pshop, "c-btn", oid)
    st, _, page = post(f"{pshop.payments}/checkout/{sid}/pay")  # paying twice
    assert st == 409 and "already paid" in page.lower() and status_page.replace("&", "&amp;") in page
    assert metric(pshop, "payments_webhooks_total", type="checkout.session.completed", result="applied") == 1

    order2, sid2 = order_waiting(pshop, "c-btn", [{"productID": "1", "quantity": 1}])
    st, hdrs, _ = post(f"{pshop.payments}/checkout/{sid2}/cancel")
    assert st == 303 and hdrs["Location"].endswith(f"orderID={order2['orderID']}")
    pshop.wait_status("c-btn", order2["orderID"], "cancelled")
    st, _, page = post(f"{pshop.payments}/checkout/{sid2}/pay")
    assert st == 409 and ">Pay</button>" not in page
    assert post(f"{pshop.payments}/checkout/cs_local_nope/pay")[0] == 404


def test_customer_cancel_closes_the_checkout(pshop):
    order, sid = order_waiting(pshop, "c-cc", [{"productID": "2", "quantity": 1}])
    st, _, body = http("POST", f"{pshop.gateway}/api/customers/c-cc/orders/{order['orderID']}/cancel")
    assert st == 200, body

    def closed():
        st, _, page = http("GET", order["PaymentLink"])
        return st == 200 and ">Pay</button>" not in page
    wait_for(closed, 20, "the checkout to close after the customer cancelled")
    st, _, _ = http("POST", f"{pshop.payments}/checkout/{sid}/pay", b"")
    assert st == 409
    assert pshop.get("c-cc", order["orderID"])[2]["status"] == "cancelled"
