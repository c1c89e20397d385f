"""Tracing across the five services (docs/tracing.md): one order is one trace, exported as
OTLP/HTTP JSON; export never holds up an order; malformed traceparent headers start
a fresh trace."""
import json
import os
import socket
from http.client import HTTPConnection

import pytest

from obs_helpers import OtlpCollector, metric, parse_metrics, scrape
from oms_harness import BUILD, Service, free_port, http, wait_for

FIVE = {"gateway", "orders", "stock", "payments", "kitchen"}
BIG = {"currency": "usd", "products": [
    {"productID": "1", "name": "Cheese", "priceID": "price_cheese", "unitPrice": 450, "quantity": 1000},
    {"productID": "2", "name": "Chocolate", "priceID": "price_chocolate", "unitPrice": 250, "quantity": 1000},
]}
KIND_PRODUCER, KIND_CONSUMER = 4, 5


def need(shop, *names):
    missing = [n for n in names if n not in shop.svc]
    if missing:
        pytest.skip(f"services not built yet: {missing}")


@pytest.fixture
def collector():
    c = OtlpCollector()
    yield c
    c.stop()


def journey(shop, customer):
    """create -> waiting_payment -> Pay on the local checkout -> ready for pick-up.
    Returns (order id, trace id of the create request)."""
    st, hdrs, body = shop.create(customer, [{"productID": "1", "quantity": 2}, {"productID": "2", "quantity": 1}])
    assert st == 201, body
    oid = body["order"]["orderID"]
    tp = hdrs.get("traceparent") or hdrs.get("Traceparent")
    assert tp and len(tp) == 55, hdrs
    order = shop.wait_status(customer, oid, "waiting_payment")
    st, _, page = http("POST", order["PaymentLink"] + "/pay", b"")
    assert st == 200, page
    shop.wait_status(customer, oid, "ready for pick-up")
    return oid, tp.split("-")[1]


def test_one_trace_per_order_across_five_services(make_shop, collector):
    shop = make_shop(catalog=BIG, env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
                                       "OTEL_BSP_SCHEDULE_DELAY": 100})
    need(shop, *FIVE)
    oid, tid = journey(shop, "traced")

    def trace_complete():
        spans = [s for s in collector.spans() if s["traceId"] == tid]
        names = {(s["service"], s["name"]) for s in spans}
        # The last hop: orders applies order.ready from the kitchen.
        done = ("orders", "orders.order.ready process") in names and ("kitchen", "kitchen cook") in names
        return spans if done and FIVE <= {s["service"] for s in spans} else None
    spans = wait_for(trace_complete, 30, "the order's spans from all five services")

    assert all(p == "/v1/traces" for p, _ in collector.paths), collector.paths
    assert all(ct.startswith("application/json") for _, ct in collector.paths)
    by_id = {s["spanId"]: s for s in spans}
    assert len(by_id) == len(spans), "span ids are unique"
    # Every parent is in the trace: nothing hangs off a span that was never exported.
    roots = [s for s in spans if not s.get("parentSpanId")]
    assert len(roots) == 1 and roots[0]["service"] == "gateway", roots
    assert roots[0]["name"] == "POST /api/customers/{}/orders", roots[0]["name"]
    for s in spans:
        if s.get("parentSpanId"):
            assert s["parentSpanId"] in by_id, (s["service"], s["name"])
        assert int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]) > 0
    # Consume spans are children of their publish spans (messaging conventions).
    consumers = [s for s in spans if s["kind"] == KIND_CONSUMER]
    assert {s["name"] for s in consumers} >= {"payments.order.created process", "kitchen.order.paid process",
                                              "orders.order.paid process", "orders.order.cooking process",
                                              "orders.order.ready process"}
    for s in consumers:
        parent = by_id[s["parentSpanId"]]
        assert parent["kind"] == KIND_PRODUCER, (s["name"], parent["name"])
        assert parent["name"] == s["attrs"]["messaging.destination.name"] + " publish"
    # The order's id is on the spans of every service that knows it, all in this trace.
    tagged = {s["service"] for s in spans if s["attrs"].get("order.id") == oid}
    assert tagged == FIVE, tagged
    event_spans = [s for s in collector.spans() if s["attrs"].get("order.id") == oid
                   and s["service"] in ("payments", "kitchen")]
    assert event_spans and all(s["traceId"] == tid for s in event_spans)
    # gRPC: client and server spans with the RPC attributes; the server span is the
    # client span's child, so the outgoing traceparent was the client span's.
    create_srv = [s for s in spans if s["service"] == "orders" and s["name"] == "api.OrderService/CreateOrder"]
    assert len(create_srv) == 1
    srv = create_srv[0]
    assert srv["kind"] == 2 and srv["attrs"]["rpc.system"] == "grpc"
    assert srv["attrs"]["rpc.service"] == "api.OrderService" and srv["attrs"]["rpc.method"] == "CreateOrder"
    assert srv["attrs"]["rpc.grpc.status_code"] == 0
    client = by_id[srv["parentSpanId"]]
    assert client["kind"] == 3 and client["service"] == "gateway" and client["name"] == srv["name"]
    # HTTP server span attributes.
    assert roots[0]["attrs"]["http.route"] == "/api/customers/{}/orders"
    assert roots[0]["attrs"]["http.response.status_code"] == 201
    # Paying starts from a new browser request: the webhook work continues the order's
    # trace and links that request's own span.
    apply = [s for s in spans if s["name"] == "checkout.session.completed apply"]
    assert len(apply) == 1 and apply[0]["service"] == "payments"
    links = apply[0].get("links", [])
    assert links and links[0]["traceId"] != tid
    wait_for(lambda: [s for s in collector.spans() if s["spanId"] == links[0]["spanId"]], 10, "the Pay request span")
    pay_req = [s for s in collector.spans() if s["spanId"] == links[0]["spanId"]][0]
    assert pay_req["name"] == "POST /checkout/{}/pay" and pay_req["service"] == "payments"


def test_export_down_never_blocks_orders(make_shop):
    closed = free_port()  # nothing listens here
    shop = make_shop(catalog=BIG, env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed}",
                                       "OTEL_BSP_SCHEDULE_DELAY": 100})
    need(shop, *FIVE)
    journey(shop, "untraced")
    # Spans that could not be delivered are dropped and counted (documented in the
    # README: otel_spans_dropped_total{reason="export_failed"}, otel_export_failures_total).
    for url in (shop.gateway, shop.orders_admin):
        def dropped():
            m = parse_metrics(scrape(url))
            return (metric(m, "otel_spans_dropped_total", reason="export_failed") > 0
                    and metric(m, "otel_export_failures_total") > 0)
        wait_for(dropped, 20, f"{url}: the drop counter to rise")


MALFORMED = [
    "",
    "garbage",
    "00",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",           # no flags
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 with more
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",        # uppercase
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",        # zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",        # zero span id
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",        # forbidden version
    "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",        # non-hex version
    "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",        # wrong separators
    "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",        # shifted dash
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",        # non-hex flags
    "00-4bf92f3577b34da6a3ce929d0e0e47é6-00f067aa0ba902b7-01",        # latin-1 byte
    "00-" + "4bf92f3577b34da6a3ce929d0e0e4736" * 40 + "-00f067aa0ba902b7-01",  # oversized
]


def test_malformed_traceparent_starts_a_fresh_trace(make_shop, collector):
    shop = make_shop(env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": 50},
                     services=["stock", "orders", "gateway"])
    seen = set()
    for bad in MALFORMED:
        st, hdrs, body = http("GET", shop.gateway + "/api/products", headers={"traceparent": bad})
        assert st == 200 and body, (bad, st, body)
        tp = hdrs.get("traceparent") or hdrs.get("Traceparent")
        parts = tp.split("-")
        assert len(tp) == 55 and len(parts) == 4 and parts[0] == "00", (bad, tp)
        assert parts[1] != "4bf92f3577b34da6a3ce929d0e0e4736" and parts[1] != "0" * 32, (bad, tp)
        assert parts[1] not in seen, ("every malformed header gets a new trace", bad)
        seen.add(parts[1])
    # The gateway's span of each is the root of its new trace, and the stock call it
    # made continues that trace.
    def exported():
        spans = collector.spans()
        roots = {s["traceId"] for s in spans if s["service"] == "gateway" and s["kind"] == 2
                 and not s.get("parentSpanId")}
        stock = {s["traceId"] for s in spans if s["service"] == "stock" and s["kind"] == 2}
        return seen <= roots and seen <= stock
    wait_for(exported, 15, "the requests' spans")
    # A valid header is continued, not replaced.
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    st, hdrs, _ = http("GET", shop.gateway + "/api/products", headers={"traceparent": good})
    tp = hdrs.get("traceparent") or hdrs.get("Traceparent")
    assert st == 200 and tp.split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736" and tp != good


# ---- oms-tracestore: the offline store bounds what it accepts, keeps and answers ----

TRACESTORE_MAX_BODY = 4 << 20
TRACESTORE_TRACE_SPANS = 5000
TRACESTORE_RESULT_TRACES = 50


@pytest.fixture
def tracestore(tmp_path):
    if not os.path.exists(os.path.join(BUILD, "oms-tracestore")):
        pytest.skip("oms-tracestore not built")
    port = free_port()
    svc = Service("tracestore", {"TRACESTORE_ADDR": f"127.0.0.1:{port}",
                                 "TRACESTORE_DB": str(tmp_path / "traces.db")},
                  str(tmp_path), health_url=f"http://127.0.0.1:{port}/healthz")
    svc.start()
    yield port
    assert svc.stop() == 0, svc.tail()


def otlp(spans, service="orders"):
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": spans}]}]}


def span(trace_id, n, start, order_id=None):
    s = {"traceId": trace_id, "spanId": f"{n:016x}", "name": f"s{n}", "kind": 1,
         "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 10)}
    if order_id:
        s["attributes"] = [{"key": "order.id", "value": {"stringValue": order_id}}]
    return s


def post_declared(port, length):
    """POST /v1/traces announcing `length` bytes but sending none: the answer must come
    from the headers alone. Returns (status, parsed body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {length}\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def post_chunked(port, total):
    """POST /v1/traces with `total` bytes sent chunked (no length announced)."""
    def gen():
        left = total
        while left > 0:
            n = min(left, 1 << 16)
            left -= n
            yield b" " * n
    c = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("POST", "/v1/traces", body=gen(), encode_chunked=True,
                  headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def test_tracestore_bounds_body_spans_and_answers(tracestore):
    port = tracestore
    url = f"http://127.0.0.1:{port}"
    # A body over the cap is refused with 413 and a message naming the limit, whether
    # its length is announced or not.
    st, body = post_declared(port, TRACESTORE_MAX_BODY + 1)
    assert st == 413 and "too large" in body["error"] and str(TRACESTORE_MAX_BODY) in body["error"], body
    st, body = post_chunked(port, TRACESTORE_MAX_BODY + (1 << 20))
    assert st == 413 and "too large" in body["error"], body

    # One trace keeps its newest TRACESTORE_TRACE_SPANS spans: of 6000 sent in two
    # batches, the first 1000 to arrive are gone.
    tid = "0af7651916cd43dd8448eb211c80319c"
    for first in (1, 3001):
        st, _, body = http("POST", url + "/v1/traces",
                           otlp([span(tid, n, 1_000_000 + n) for n in range(first, first + 3000)]))
        assert st == 200, body
    st, _, body = http("GET", f"{url}/api/traces/{tid}")
    assert st == 200, body
    t = body["traces"][0]
    assert t["spanCount"] == TRACESTORE_TRACE_SPANS and "truncated" not in t, {k: t[k] for k in t if k != "spans"}
    assert {int(s["spanId"], 16) for s in t["spans"]} == set(range(1001, 6001))

    # One order's answer holds at most TRACESTORE_RESULT_TRACES traces: the newest,
    # oldest first, and it says that some were left out.
    tids = [f"{i + 1:032x}" for i in range(60)]
    st, _, body = http("POST", url + "/v1/traces",
                       otlp([span(t, 1, 2_000_000 + i * 1000, order_id="o-many") for i, t in enumerate(tids)]))
    assert st == 200, body
    st, _, body = http("GET", f"{url}/api/traces?order_id=o-many")
    assert st == 200, body
    assert body["truncated"] is True
    assert [t["traceId"] for t in body["traces"]] == tids[-TRACESTORE_RESULT_TRACES:]
    # Within the bounds nothing says "truncated".
    st, _, body = http("GET", f"{url}/api/traces?order_id=nothing-here")
    assert st == 200 and body["traces"] == [] and "truncated" not in body, body
