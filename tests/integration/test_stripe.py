"""payments with PAYMENT_PROCESSOR=stripe against a fake Stripe API in this test:
the exact request we send (form fields, Authorization, Idempotency-Key) and what
happens when Stripe refuses once (the consumer retries; the log names the error)."""
import json
import os
import subprocess
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from oms_harness import BUILD, http, wait_for
from test_webhook import header

KEY = "sk_test_x"
# Stripe mode refuses to start with a published example secret: a random one per run.
SECRET = "whsec_" + uuid.uuid4().hex
STRIPE_ENV = {"PAYMENT_PROCESSOR": "stripe", "STRIPE_KEY": KEY, "STRIPE_WEBHOOK_SECRET": SECRET}
# data/catalog.json: (unit price in cents, name) of products 1 and 4
CHEESE = (450, "Cheese")
FLAT_WHITE = (380, "Flat white")


class FakeStripe:
    """POST /v1/checkout/sessions answered like Stripe. `failures` is a list of
    (status, error body) answered first, one per request, before successes."""

    def __init__(self, failures=()):
        self.failures = list(failures)
        self.requests = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep pytest output clean
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                req = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                       "raw": raw.decode(), "form": urllib.parse.parse_qs(raw.decode(), keep_blank_values=True,
                                                                          strict_parsing=True) if raw else {}}
                with fake.lock:
                    fake.requests.append(req)
                    failure = fake.failures.pop(0) if fake.failures else None
                if failure:
                    status, body = failure
                elif self.path == "/v1/refunds":
                    status, body = 200, {"id": "re_test_" + uuid.uuid4().hex, "object": "refund",
                                         "status": "succeeded"}
                elif self.path.endswith("/expire"):
                    sid = self.path.split("/")[-2]
                    status, body = 200, {"id": sid, "object": "checkout.session", "status": "expired"}
                else:
                    sid = "cs_test_" + uuid.uuid4().hex
                    status, body = 200, {"id": sid, "object": "checkout.session",
                                         "url": f"https://checkout.stripe.com/c/pay/{sid}"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answered(self):
        """Every request received so far, in order."""
        with self.lock:
            return list(self.requests)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def fake_stripe():
    fakes = []

    def factory(failures=()):
        f = FakeStripe(failures)
        fakes.append(f)
        return f
    yield factory
    for f in fakes:
        f.stop()


def stripe_shop(make_shop, fake):
    shop = make_shop(env=dict(STRIPE_ENV, STRIPE_API_BASE=fake.base))
    if "payments" not in shop.svc:
        pytest.skip("oms-payments is not built")
    return shop


def single(form, key):
    v = form.get(key)
    assert v is not None and len(v) == 1, (key, form)
    return v[0]


def check_request(req, shop, customer, oid, items):
    assert req["path"] == "/v1/checkout/sessions"
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    assert req["headers"]["idempotency-key"] == f"oms-{oid}"
    assert req["headers"]["content-type"].startswith("application/x-www-form-urlencoded")
    form = req["form"]
    q = urllib.parse.urlencode({"customerID": customer, "orderID": oid}, quote_via=urllib.parse.quote, safe="")
    expected = {
        "mode": "payment",
        "success_url": f"{shop.gateway}/success.html?{q}",
        "cancel_url": f"{shop.gateway}/cancel.html?{q}",
        "client_reference_id": oid,
        "metadata[orderID]": oid,
        "metadata[customerID]": customer,
    }
    for i, ((cents, name), qty) in enumerate(items):
        # Our catalog's amounts, never a priceID whose price could differ at Stripe.
        expected[f"line_items[{i}][price_data][currency]"] = "usd"
        expected[f"line_items[{i}][price_data][unit_amount]"] = str(cents)
        expected[f"line_items[{i}][price_data][product_data][name]"] = name
        expected[f"line_items[{i}][quantity]"] = str(qty)
    got = {k: single(form, k) for k in form}
    # The checkout deadline: CHECKOUT_TTL (default 30 min) after the session opened.
    expires = int(got.pop("expires_at"))
    assert abs(expires - (time.time() + 1800)) < 120, expires
    assert got == expected


def test_session_created_at_stripe(make_shop, fake_stripe):
    fake = fake_stripe()
    shop = stripe_shop(make_shop, fake)
    customer = "cust.stripe:1"  # ':' must arrive percent-encoded inside the URLs
    st, _, body = shop.create(customer, [{"productID": "1", "quantity": 2}, {"productID": "4", "quantity": 1}])
    assert st == 201, body
    oid = body["order"]["orderID"]
    order = shop.wait_status(customer, oid, "waiting_payment")
    reqs = fake.answered()
    assert len(reqs) == 1, reqs
    check_request(reqs[0], shop, customer, oid, [(CHEESE, 2), (FLAT_WHITE, 1)])
    assert order["PaymentLink"].startswith("https://checkout.stripe.com/c/pay/cs_test_")
    assert metric_value(shop, 'payments_sessions_created_total{processor="stripe"}') == 1
    log = open(shop.svc["payments"].log_path, errors="replace").read()
    assert KEY not in log, "the Stripe key must never be logged"


def metric_value(shop, series):
    st, _, text = http("GET", shop.payments + "/metrics")
    assert st == 200
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("status,error", [
    (402, {"type": "card_error", "code": "card_declined", "message": "Your card was declined."}),
    (400, {"type": "invalid_request_error", "code": "resource_missing",
           "message": "No such price: 'price_1RWg6C07x6KdXnTOR532hPIw'"}),
    (500, {"type": "api_error", "message": "Something went wrong on Stripe's end."}),
])
def test_refused_once_then_retried(make_shop, fake_stripe, status, error):
    fake = fake_stripe(failures=[(status, {"error": error})])
    shop = stripe_shop(make_shop, fake)
    st, _, body = shop.create("c-retry", [{"productID": "1", "quantity": 1}])
    assert st == 201, body
    oid = body["order"]["orderID"]
    order = shop.wait_status("c-retry", oid, "waiting_payment")
    assert order["PaymentLink"].startswith("https://checkout.stripe.com/c/pay/cs_test_")
    reqs = fake.answered()
    assert len(reqs) == 2, reqs  # the refusal, then the retry
    for r in reqs:  # the retry is the same request: Stripe dedupes it by the key
        check_request(r, shop, "c-retry", oid, [(CHEESE, 1)])
    log_path = shop.svc["payments"].log_path

    def logged():
        lines = [json.loads(l) for l in open(log_path, errors="replace") if l.startswith("{")]
        return [l for l in lines if l.get("message") == error["message"]]
    entry = wait_for(logged, 10, "the Stripe error in the log")[0]
    assert entry["status"] == str(status) and entry["type"] == error["type"]
    assert entry.get("code", "") == error.get("code", "")
    assert KEY not in open(log_path, errors="replace").read()


def test_stripe_call_is_a_client_span_of_the_order(make_shop, fake_stripe):
    """The request to Stripe appears in the order's trace as a CLIENT span with the
    method, URL, status code and order.id; a refusal marks it as an error."""
    from obs_helpers import OtlpCollector
    collector = OtlpCollector()
    try:
        fake = fake_stripe(failures=[(500, {"error": {"type": "api_error", "message": "down"}})])
        shop = make_shop(env=dict(STRIPE_ENV, STRIPE_API_BASE=fake.base, RETRY_DELAY_MS=100,
                                  OTEL_EXPORTER_OTLP_ENDPOINT=collector.url, OTEL_BSP_SCHEDULE_DELAY=100))
        st, hdrs, body = shop.create("cust-span", [{"productID": "1", "quantity": 1}])
        assert st == 201, body
        oid = body["order"]["orderID"]
        tid = (hdrs.get("traceparent") or hdrs.get("Traceparent")).split("-")[1]
        shop.wait_status("cust-span", oid, "waiting_payment")

        def stripe_spans():
            return [s for s in collector.spans()
                    if s["service"] == "payments" and s["name"] == "POST /v1/checkout/sessions"]
        wait_for(lambda: len(stripe_spans()) >= 2, 15, "both Stripe calls to be exported")
        spans = stripe_spans()
        assert all(s["kind"] == 3 and s["traceId"] == tid for s in spans), spans  # CLIENT, the order's trace
        assert all(s["attrs"].get("order.id") == oid for s in spans)
        assert all(s["attrs"].get("url.full") == fake.base + "/v1/checkout/sessions" for s in spans)
        codes = sorted(int(s["attrs"].get("http.response.status_code")) for s in spans)
        assert codes == [200, 500], codes
        failed = [s for s in spans if int(s["attrs"]["http.response.status_code"]) == 500]
        assert failed[0]["status"]["code"] == 2, failed  # ERROR
    finally:
        collector.stop()


@pytest.mark.parametrize("first,calls", [
    ((500, {"error": {"type": "api_error", "message": "Something went wrong on Stripe's end."}}), 2),
    ((400, {"error": {"type": "invalid_request_error", "code": "checkout_session_not_open",
                      "message": "Only Checkout Sessions with a status of open can be expired."}}), 1),
])
def test_cancel_expires_the_session_at_stripe(make_shop, fake_stripe, first, calls):
    """Cancelling an order expires its Checkout Session at Stripe, so it cannot be paid
    there any more: a 5xx is retried, a refusal (the session is no longer open) is not;
    either way the session is closed here too."""
    fake = fake_stripe()
    shop = make_shop(env=dict(STRIPE_ENV, STRIPE_API_BASE=fake.base, RETRY_DELAY_MS=100))
    if "payments" not in shop.svc:
        pytest.skip("oms-payments is not built")
    st, _, body = shop.create("cust-cancel", [{"productID": "1", "quantity": 1}])
    assert st == 201, body
    oid = body["order"]["orderID"]
    order = shop.wait_status("cust-cancel", oid, "waiting_payment")
    sid = order["PaymentLink"].rsplit("/", 1)[1]
    with fake.lock:
        fake.failures.append(first)
    st, _, body = http("POST", f"{shop.gateway}/api/customers/cust-cancel/orders/{oid}/cancel", b"")
    assert st == 200 and body["status"] == "cancelled", (st, body)

    def expires():
        return [r for r in fake.answered() if r["path"] == f"/v1/checkout/sessions/{sid}/expire"]
    wait_for(lambda: shop.scalar("payments", "SELECT status FROM checkout_sessions WHERE order_id = ?",
                                 (oid,)) == "cancelled", 20, "payments to close the session")
    reqs = expires()
    assert len(reqs) == calls, reqs
    assert all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in reqs)


def test_stripe_mode_closed_and_refunds_at_stripe(make_shop, fake_stripe):
    """Stripe mode: no local checkout routes; a payment for a cancelled order is refunded
    at Stripe (POST /v1/refunds with the payment_intent and an Idempotency-Key; a 5xx is
    retried with the same key) and the order ends refunded."""
    fake = fake_stripe()
    shop = make_shop(env=dict(STRIPE_ENV, STRIPE_API_BASE=fake.base, RETRY_DELAY_MS=100))
    if "payments" not in shop.svc:
        pytest.skip("oms-payments is not built")
    for method, path in [("GET", "/checkout/cs_test_x"), ("POST", "/checkout/cs_test_x/pay"),
                         ("POST", "/checkout/cs_test_x/cancel")]:
        st, _, _ = http(method, shop.payments + path, b"" if method == "POST" else None)
        assert st == 404, (method, path, st)
    st, _, body = shop.create("cust-refund", [{"productID": "1", "quantity": 1}])
    oid = body["order"]["orderID"]
    order = shop.wait_status("cust-refund", oid, "waiting_payment")
    sid = order["PaymentLink"].rsplit("/", 1)[1]
    st, _, _ = http("POST", f"{shop.gateway}/api/customers/cust-refund/orders/{oid}/cancel", b"")
    assert st == 200
    wait_for(lambda: shop.scalar("payments", "SELECT status FROM checkout_sessions WHERE order_id = ?",
                                 (oid,)) == "cancelled", 20, "the session to close")
    with fake.lock:
        fake.failures.append((500, {"error": {"type": "api_error", "message": "try later"}}))
    event = json.dumps({
        "id": "evt_" + uuid.uuid4().hex, "object": "event", "type": "checkout.session.completed",
        "created": int(time.time()), "livemode": False,
        "data": {"object": {"id": sid, "object": "checkout.session", "status": "complete",
                            "payment_status": "paid", "payment_intent": "pi_3Late",
                            "amount_total": order["total"], "currency": order["currency"],
                            "metadata": {"orderID": oid, "customerID": "cust-refund"}}}}).encode()
    st, _, _ = http("POST", shop.payments + "/webhook", event,
                    headers={"Content-Type": "application/json",
                             "Stripe-Signature": header(event, secret=SECRET)})
    assert st == 200
    shop.wait_status("cust-refund", oid, "refunded")

    def refunds():
        return [r for r in fake.answered() if r["path"] == "/v1/refunds"]
    wait_for(lambda: len(refunds()) == 2 and shop.scalar(
        "payments", "SELECT COUNT(*) FROM refunds WHERE order_id = ?", (oid,)) == 1, 20,
        "the refund, retried once after the 5xx")
    for r in refunds():
        assert r["headers"]["idempotency-key"] == f"oms-refund-{oid}"
        assert r["headers"]["authorization"] == f"Bearer {KEY}"
        assert single(r["form"], "payment_intent") == "pi_3Late"
        assert single(r["form"], "metadata[orderID]") == oid
    assert shop.scalar("payments", "SELECT refund_id FROM refunds WHERE order_id = ?", (oid,)).startswith("re_test_")
    assert metric_value(shop, 'payments_refunds_total{reason="order_cancelled"}') == 1


def test_staff_refund_reaches_stripe(make_shop, fake_stripe):
    """A staff refund of a paid order (POST /api/staff/orders/{id}/refund) goes to
    Stripe as POST /v1/refunds for the order's payment_intent, with the per-order
    Idempotency-Key, and is recorded once under the reason "staff"."""
    fake = fake_stripe()
    shop = stripe_shop(make_shop, fake)
    st, _, body = shop.create("cust-staff-refund", [{"productID": "1", "quantity": 1}])
    assert st == 201, body
    oid = body["order"]["orderID"]
    order = shop.wait_status("cust-staff-refund", oid, "waiting_payment")
    sid = order["PaymentLink"].rsplit("/", 1)[1]
    event = json.dumps({
        "id": "evt_" + uuid.uuid4().hex, "object": "event", "type": "checkout.session.completed",
        "created": int(time.time()), "livemode": False,
        "data": {"object": {"id": sid, "object": "checkout.session", "status": "complete",
                            "payment_status": "paid", "payment_intent": "pi_3Staff",
                            "amount_total": order["total"], "currency": order["currency"],
                            "metadata": {"orderID": oid, "customerID": "cust-staff-refund"}}}}).encode()
    st, _, _ = http("POST", shop.payments + "/webhook", event,
                    headers={"Content-Type": "application/json",
                             "Stripe-Signature": header(event, secret=SECRET)})
    assert st == 200
    shop.wait_status("cust-staff-refund", oid, "ready for pick-up")
    assert not [r for r in fake.answered() if r["path"] == "/v1/refunds"]

    st, _, body = http("POST", f"{shop.gateway}/api/staff/orders/{oid}/refund", {"reason": "wrong dish"},
                       headers=dict(shop.staff_cookie(), Origin=shop.gateway))
    assert st == 200 and body["status"] == "refunded", body

    def refunds():
        return [r for r in fake.answered() if r["path"] == "/v1/refunds"]
    wait_for(lambda: refunds() and shop.scalar(
        "payments", "SELECT COUNT(*) FROM refunds WHERE order_id = ?", (oid,)) == 1, 20,
        "the refund at Stripe")
    (r,) = refunds()
    assert r["headers"]["idempotency-key"] == f"oms-refund-{oid}"
    assert r["headers"]["authorization"] == f"Bearer {KEY}"
    assert single(r["form"], "payment_intent") == "pi_3Staff"
    assert single(r["form"], "metadata[orderID]") == oid
    assert single(r["form"], "metadata[reason]") == "staff"
    assert shop.scalar("payments", "SELECT refund_id FROM refunds WHERE order_id = ?", (oid,)).startswith("re_test_")
    assert metric_value(shop, 'payments_refunds_total{reason="staff"}') == 1


@pytest.mark.parametrize("env,named", [
    ({}, "STRIPE_WEBHOOK_SECRET"),                                         # the default
    ({"STRIPE_WEBHOOK_SECRET": "whsec_local_dev"}, "STRIPE_WEBHOOK_SECRET"),
    ({"STRIPE_WEBHOOK_SECRET": "abc123"}, "STRIPE_WEBHOOK_SECRET"),
    ({"STRIPE_WEBHOOK_SECRET": ""}, "STRIPE_WEBHOOK_SECRET"),
    ({"STRIPE_WEBHOOK_SECRET": SECRET, "CHECKOUT_TTL": "60"}, "CHECKOUT_TTL"),
    ({"STRIPE_WEBHOOK_SECRET": SECRET, "CHECKOUT_TTL": "90000"}, "CHECKOUT_TTL"),
])
def test_stripe_mode_refuses_to_start_without_a_real_secret(env, named):
    exe = os.path.join(BUILD, "oms-payments")
    if not os.path.exists(exe):
        pytest.skip("oms-payments is not built")
    full = {"PATH": os.environ.get("PATH", ""), "PAYMENT_PROCESSOR": "stripe", "STRIPE_KEY": KEY}
    for k in ("LSAN_OPTIONS", "ASAN_OPTIONS", "UBSAN_OPTIONS"):
        if k in os.environ:
            full[k] = os.environ[k]
    full.update(env)
    r = subprocess.run([exe], env=full, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and named in lines[0], r.stderr
    assert SECRET not in r.stderr


def test_reservation_ttl_must_outlive_the_checkout():
    exe = os.path.join(BUILD, "oms-stock")
    env = {"PATH": os.environ.get("PATH", ""), "RESERVATION_TTL": "3"}
    for k in ("LSAN_OPTIONS", "ASAN_OPTIONS", "UBSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    r = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "RESERVATION_TTL" in r.stderr and "CHECKOUT_TTL" in r.stderr, r.stderr
