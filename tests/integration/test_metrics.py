"""Metrics, health and readiness of every service: /metrics passes
`promtool check metrics`, counters move by exactly what a known workload does, and
readiness (HTTP /readyz and grpc.health.v1) follows the broker."""
import shutil
import subprocess

import pytest

from obs_helpers import grpc_health, metric, metric_sum, parse_metrics, scrape
from oms_harness import http, wait_for

FIVE = ["gateway", "orders", "stock", "payments", "kitchen"]


def need(shop, *names):
    missing = [n for n in names if n not in shop.svc]
    if missing:
        pytest.skip(f"services not built yet: {missing}")


def base_urls(shop):
    return {"gateway": shop.gateway, "orders": shop.orders_admin, "stock": shop.stock_admin,
            "payments": shop.payments, "kitchen": shop.kitchen_admin}


def test_every_metrics_endpoint_passes_promtool(make_shop):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool missing: Debian package prometheus (scripts/deps.sh installs it)")
    shop = make_shop()
    need(shop, *FIVE)
    # Some traffic first, so histograms, labels and every family are present.
    st, _, body = shop.create("prom", [{"productID": "1", "quantity": 1}])
    assert st == 201, body
    shop.wait_status("prom", body["order"]["orderID"], "waiting_payment")
    http("GET", shop.gateway + "/api/customers/prom/orders/nope")
    for name, url in base_urls(shop).items():
        text = scrape(url)
        r = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
        assert r.returncode == 0, f"{name}: promtool: {r.stdout.decode()}{r.stderr.decode()}\n{text}"
        m = parse_metrics(text)
        names = {n for n, _ in m}
        assert {"process_resident_memory_bytes", "process_open_fds"} <= names, name
        assert "otel_spans_dropped_total" in names, name
    per = {n: parse_metrics(scrape(u)) for n, u in base_urls(shop).items()}
    names = {svc: {n for n, _ in m} for svc, m in per.items()}
    for svc in ("orders", "payments", "kitchen"):
        assert {"outbox_backlog", "outbox_oldest_age_seconds", "events_consumed_total", "events_retried_total",
                "events_dead_lettered_total"} <= names[svc], svc
    assert "stock_reservations" in names["stock"]
    assert "kitchen_queue_depth" in names["kitchen"]  # cook time: kitchen_cook_seconds, once cooked
    for svc in ("orders", "stock"):
        assert {"grpc_server_handled_total", "grpc_server_handling_seconds_bucket"} <= names[svc], svc
    assert {"grpc_client_handled_total", "grpc_client_handling_seconds_bucket",
            "http_requests_total", "http_request_duration_seconds_bucket"} <= names["gateway"]


def test_counters_move_by_the_workload(make_shop):
    shop = make_shop()
    need(shop, *FIVE)
    urls = base_urls(shop)
    route = "/api/customers/{}/orders"
    create = "/api.OrderService/CreateOrder"

    def snapshot():
        g, o, s, p = (parse_metrics(scrape(urls[n])) for n in ("gateway", "orders", "stock", "payments"))
        return {
            "http": metric(g, "http_requests_total", route=route, method="POST", code="201"),
            "client": metric(g, "grpc_client_handled_total", method=create, code="OK"),
            "server": metric(o, "grpc_server_handled_total", method=create, code="OK"),
            "server_hist": metric(o, "grpc_server_handling_seconds_count", method=create),
            "reserve": metric(s, "grpc_server_handled_total", method="/api.StockService/ReserveItems", code="OK"),
            "published": metric(o, "events_published_total", exchange="order.created"),
            "consumed": metric(p, "events_consumed_total", queue="payments.order.created"),
            "not_found": metric(g, "http_requests_total", route="/api/customers/{}/orders/{}", method="GET",
                                code="404"),
            "get_nf": metric(o, "grpc_server_handled_total", method="/api.OrderService/GetOrder", code="NOT_FOUND"),
        }

    before = snapshot()
    oids = []
    for i in range(3):
        st, _, body = shop.create(f"m{i}", [{"productID": "1", "quantity": 1}])
        assert st == 201, body
        oids.append((f"m{i}", body["order"]["orderID"]))
    st, _, _ = http("GET", shop.gateway + "/api/customers/m0/orders/no-such-order")
    assert st == 404
    for cid, oid in oids:
        shop.wait_status(cid, oid, "waiting_payment")

    def settled():
        now = snapshot()
        return now if now["published"] - before["published"] == 3 and now["consumed"] - before["consumed"] == 3 \
            else None
    after = wait_for(settled, 20, "events to be published and consumed")
    delta = {k: after[k] - before[k] for k in after}
    assert delta == {"http": 3, "client": 3, "server": 3, "server_hist": 3, "reserve": 3, "published": 3,
                     "consumed": 3, "not_found": 1, "get_nf": 1}, delta
    # Nothing failed on the way.
    p = parse_metrics(scrape(urls["payments"]))
    assert metric_sum(p, "events_retried_total") == 0 and metric_sum(p, "events_dead_lettered_total") == 0
    # The outbox drained: its backlog gauge says so within a relay period or two.
    wait_for(lambda: metric(parse_metrics(scrape(urls["orders"])), "outbox_backlog") == 0, 10, "empty backlog")


def test_health_endpoints_on_every_service(make_shop):
    shop = make_shop()
    need(shop, *FIVE)
    for name, url in base_urls(shop).items():
        st, _, body = http("GET", url + "/healthz")
        assert st == 200 and body == {"status": "ok"}, (name, st, body)
        wait_for(lambda: http("GET", url + "/readyz")[0] == 200, 20, f"{name} /readyz")
    for name in ("orders", "stock", "payments", "kitchen"):
        port = shop.ports[f"{name}_grpc"]
        wait_for(lambda: grpc_health(port) == 1, 20, f"{name} gRPC health SERVING")


def test_readiness_follows_the_broker(make_shop):
    shop = make_shop()
    need(shop, "orders")
    ready = shop.orders_admin + "/readyz"
    port = shop.ports["orders_grpc"]
    wait_for(lambda: http("GET", ready)[0] == 200, 20, "orders ready")
    wait_for(lambda: grpc_health(port) == 1, 20, "orders SERVING")
    shop.rabbit.stop()
    try:
        def down():
            st, _, body = http("GET", ready)
            return body if st == 503 else None
        body = wait_for(down, 30, "orders /readyz to fail without the broker")
        assert "broker" in body["error"], body
        wait_for(lambda: grpc_health(port) == 2, 10, "orders gRPC health NOT_SERVING")
        # Still alive, and still answering reads from its own database.
        assert http("GET", shop.orders_admin + "/healthz")[0] == 200
    finally:
        shop.rabbit.start()
    wait_for(lambda: http("GET", ready)[0] == 200, 60, "orders ready again")
    wait_for(lambda: grpc_health(port) == 1, 10, "orders SERVING again")
