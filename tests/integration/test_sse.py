"""Edges that scale: order status pushed as Server-Sent Events (customer and kitchen
streams, Last-Event-ID, broker reconnects, many idle streams), and overload refused at
once (HTTP_MAX_IN_FLIGHT) while accepted requests still succeed."""
import concurrent.futures
import json
import os
import socket
import threading
import time
import urllib.request

import pytest

from oms_harness import Service, free_port, http, serve_shop, wait_for

CHAIN = ["pending", "waiting_payment", "paid", "cooking", "ready for pick-up"]
CATALOG = {"currency": "usd", "products": [
    {"productID": "1", "name": "Cheese", "priceID": "price_cheese", "unitPrice": 450, "quantity": 1000},
    {"productID": "2", "name": "Chocolate", "priceID": "price_chocolate", "unitPrice": 250, "quantity": 1000},
]}


@pytest.fixture(scope="module")
def shop(rabbit, workdir):
    # Short heartbeats so a closed client is noticed quickly; no per-address limit for
    # the test's 200 streams from loopback; cooking takes long enough to be a state.
    yield from serve_shop(rabbit, workdir, catalog=CATALOG,
                          env={"KITCHEN_COOK_MS": 200, "HTTP_SSE_HEARTBEAT_MS": 300, "HTTP_PER_IP_LIMIT": 0})


OPEN_STREAMS = []


@pytest.fixture(autouse=True)
def close_streams():
    """A failed test must not leave streams open for the next one (they share a shop)."""
    yield
    while OPEN_STREAMS:
        OPEN_STREAMS.pop().close()


class Stream:
    """A raw-socket SSE client: parses events (id, event, data) and comments."""

    def __init__(self, url, headers=None, timeout=10):
        u = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        OPEN_STREAMS.append(self)
        hdrs = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nAccept: text/event-stream\r\n{hdrs}\r\n"
                          .encode())
        self.buf = b""
        head = self._until(b"\r\n\r\n", timeout)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self.text = ""  # de-chunked body read so far, not yet parsed
        self.comments = 0

    def _until(self, sep, timeout):
        deadline = time.monotonic() + timeout
        while sep not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {sep!r} within {timeout}s")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("stream closed")
            self.buf += data
        head, self.buf = self.buf.split(sep, 1)
        return head

    def _fill(self, timeout):
        if not self.chunked:
            self.sock.settimeout(timeout)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("stream closed")
            self.text += data.decode()
            return
        size = int(self._until(b"\r\n", timeout), 16)
        if size == 0:
            raise EOFError("stream ended")
        deadline = time.monotonic() + timeout
        while len(self.buf) < size + 2:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("stream closed")
            self.buf += data
        self.text += self.buf[:size].decode()
        self.buf = self.buf[size + 2:]

    def next_event(self, timeout=10):
        """The next event as {"id", "event", "data"} (data parsed as JSON)."""
        deadline = time.monotonic() + timeout
        while True:
            while "\n\n" in self.text:
                block, self.text = self.text.split("\n\n", 1)
                ev = {}
                for line in block.split("\n"):
                    if line.startswith(":"):
                        self.comments += 1
                    elif ":" in line:
                        k, v = line.split(":", 1)
                        ev[k] = v[1:] if v.startswith(" ") else v
                if "data" in ev:
                    ev["data"] = json.loads(ev["data"])
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no event within {timeout}s")
            self._fill(left)

    def close(self):
        self.sock.close()


def events_url(shop, cid, oid):
    return f"{shop.gateway}/api/customers/{cid}/orders/{oid}/events"


def create(shop, cid):
    st, _, body = shop.create(cid, [{"productID": "1", "quantity": 1}])
    assert st == 201, body
    return body["order"]["orderID"]


def pay(order):
    st, _, body = http("POST", order["PaymentLink"] + "/pay", b"")
    assert st == 200, (st, body)


def read_until_status(stream, status, seen, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        ev = stream.next_event(max(0.1, deadline - time.monotonic()))
        assert ev["event"] == "order"
        seen.append((int(ev["id"]), ev["data"]["status"], ev["data"]))
        if ev["data"]["status"] == status:
            return ev


def test_stream_follows_the_order_to_ready(shop):
    oid = create(shop, "sse-1")
    s = Stream(events_url(shop, "sse-1", oid))
    assert s.status == 200
    assert s.headers["content-type"].startswith("text/event-stream")
    seen = []
    ev = read_until_status(s, "waiting_payment", seen)
    pay(ev["data"])
    read_until_status(s, "ready for pick-up", seen)
    s.close()
    statuses = [x[1] for x in seen]
    assert statuses[-3:] == ["paid", "cooking", "ready for pick-up"], statuses
    assert set(statuses) <= set(CHAIN)
    assert [CHAIN.index(x) for x in statuses] == sorted(CHAIN.index(x) for x in statuses), statuses
    ids = [x[0] for x in seen]
    assert ids == sorted(set(ids)), ids  # one event per change, ids increase
    # Each event's data is the order as GET returns it (orders applies the event a
    # moment later, at its own updatedAt).
    now = shop.wait_status("sse-1", oid, "ready for pick-up")
    pushed = dict(seen[-1][2])
    assert pushed.pop("updatedAt") and now.pop("updatedAt")
    assert pushed == now


def test_reconnect_with_last_event_id(shop):
    oid = create(shop, "sse-2")
    s = Stream(events_url(shop, "sse-2", oid))
    seen = []
    ev = read_until_status(s, "waiting_payment", seen)
    last_id = ev["id"]
    s.close()
    # Same state again: nothing is repeated, only the heartbeat comes.
    s = Stream(events_url(shop, "sse-2", oid), headers={"Last-Event-ID": last_id})
    with pytest.raises(TimeoutError):
        s.next_event(timeout=1.0)
    assert s.comments >= 1  # heartbeats kept coming
    pay(ev["data"])
    ev2 = s.next_event()
    assert int(ev2["id"]) > int(last_id) and ev2["data"]["status"] in ("paid", "cooking", "ready for pick-up")
    s.close()
    # Reconnecting with an older id gets the current state at once.
    s = Stream(events_url(shop, "sse-2", oid), headers={"Last-Event-ID": last_id})
    ev3 = s.next_event()
    assert int(ev3["id"]) > int(last_id)
    s.close()
    # A malformed id is refused and names the header.
    st, _, body = http("GET", events_url(shop, "sse-2", oid), headers={"Last-Event-ID": "abc"})
    assert st == 400 and "Last-Event-ID" in body["error"], body


def test_another_customers_stream_is_404(shop):
    oid = create(shop, "sse-owner")
    st, _, body = http("GET", events_url(shop, "sse-intruder", oid))
    assert st == 404, body
    st, _, body = http("GET", events_url(shop, "sse-owner", "no-such-order"))
    assert st == 404, body
    st, _, body = http("GET", events_url(shop, "sse-owner", "bad%20id"))
    assert st == 400 and "orderID" in body["error"], body


def test_kitchen_stream_needs_staff_and_hides_customers(shop):
    st, _, _ = http("GET", f"{shop.gateway}/api/staff/kitchen/events")
    assert st == 401
    k = Stream(f"{shop.gateway}/api/staff/kitchen/events", headers=shop.staff_cookie())
    try:
        assert k.status == 200
        oid = create(shop, "sse-kitchen-secret")
        order = shop.wait_status("sse-kitchen-secret", oid, "waiting_payment")
        pay(order)
        got = []
        deadline = time.monotonic() + 20
        while not any(e["orderID"] == oid and e["status"] == "ready for pick-up" for e in got):
            got.append(k.next_event(max(0.1, deadline - time.monotonic()))["data"])
        # The display hears order.ready from the broker at the same moment the orders
        # service does, so the order itself may say "cooking" for a few more ms.
        shop.wait_status("sse-kitchen-secret", oid, "ready for pick-up")
        # Handed over at the counter: every display hears of it and drops the ticket.
        st, _, body = http("POST", f"{shop.gateway}/api/staff/orders/{oid}/collect", b"",
                           headers={**shop.staff_cookie(), "Origin": shop.gateway})
        assert st == 200 and body["status"] == "collected", body
        while not any(e["orderID"] == oid and e["status"] == "collected" for e in got):
            got.append(k.next_event(max(0.1, deadline - time.monotonic()))["data"])
    finally:
        k.close()
    mine = [e for e in got if e["orderID"] == oid]
    assert [e["status"] for e in mine] == ["paid", "cooking", "ready for pick-up", "collected"], mine
    for e in got:
        assert set(e) == {"orderID", "status"}, e
    assert "sse-kitchen-secret" not in json.dumps(got)


def close_broker_connections(shop):
    vh = urllib.request.quote(shop.vhost, safe="")
    conns = shop.rabbit.api(f"vhosts/{vh}/connections") or []
    for c in conns:
        shop.rabbit.api("connections/" + urllib.request.quote(c["name"], safe=""), "DELETE")
    return len(conns)


def gateway_queue(shop):
    vh = urllib.request.quote(shop.vhost, safe="")
    qs = shop.rabbit.api(f"queues/{vh}") or []
    return [q for q in qs if q["name"].startswith("gateway.") and q.get("consumers", 0) > 0]


def test_streams_survive_broker_reconnect(shop):
    oid = create(shop, "sse-3")
    s = Stream(events_url(shop, "sse-3", oid))
    seen = []
    ev = read_until_status(s, "waiting_payment", seen)
    before = [q["name"] for q in wait_for(lambda: gateway_queue(shop), 10, "the gateway's queue")]
    assert close_broker_connections(shop) > 0
    # The exclusive queue went with the connection; the gateway declares it again.
    wait_for(lambda: not [q for q in gateway_queue(shop) if q["name"] in before] or
             all(q["consumers"] > 0 for q in gateway_queue(shop)), 20, "the queue to go")
    wait_for(lambda: gateway_queue(shop), 30, "the gateway to consume again")
    pay(ev["data"])
    read_until_status(s, "ready for pick-up", seen, timeout=30)
    s.close()


def proc_counts(pid):
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as f:
        threads = int(next(line for line in f if line.startswith("Threads:")).split()[1])
    return fds, threads


def streams_open(shop):
    text = http("GET", f"{shop.gateway}/metrics")[2]
    return float(next(l for l in text.splitlines() if l.startswith("http_streams_open")).split()[-1])


def test_two_hundred_streams_open_and_close_cleanly(shop):
    oid = create(shop, "sse-many")
    shop.wait_status("sse-many", oid, "waiting_payment")
    pid = shop.svc["gateway"].proc.pid
    # Warm up first: gRPC starts some threads of its own lazily, under its first load.
    warm = [Stream(events_url(shop, "sse-many", oid)) for _ in range(20)]
    for s in warm:
        s.next_event()
        s.close()
    wait_for(lambda: streams_open(shop) == 0, 15, "warm-up closed")
    fds0, threads0 = proc_counts(pid)
    streams = []
    try:
        for _ in range(200):
            streams.append(Stream(events_url(shop, "sse-many", oid)))
        for s in streams:
            assert s.status == 200
            assert s.next_event()["data"]["status"] == "waiting_payment"
        fds1, threads1 = proc_counts(pid)
        assert fds1 >= fds0 + 195  # one socket each (a few others come and go meanwhile)
        # No thread per stream (a couple may come and go inside gRPC and libpq).
        assert threads1 <= threads0 + 2, (threads0, threads1)
    finally:
        for s in streams:
            s.close()
    # Closed clients are found by the next heartbeat (300 ms here).
    wait_for(lambda: streams_open(shop) == 0 and proc_counts(pid)[0] <= fds0 + 2, 15,
             "the gateway to end the 200 streams and close their sockets")
    assert proc_counts(pid)[1] <= threads0 + 2


# ---- overload -----------------------------------------------------------------------

class SlowStock:
    """A StockService whose ListItems answers after `delay` seconds (grpcio)."""

    def __init__(self, pb, delay):
        import grpc
        pb2, pb2_grpc = pb
        self.entered = threading.Semaphore(0)
        outer = self

        class Servicer(pb2_grpc.StockServiceServicer):
            def ListItems(self, request, context):
                outer.entered.release()
                time.sleep(delay)
                return pb2.ListItemsResponse(Items=[pb2.OrderItem(productID="1", productName="Cheese",
                                                                  priceID="p", quantity=1)])

        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=16))
        pb2_grpc.add_StockServiceServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.server.stop(0)


def test_overload_refused_at_once(shop, pb):
    slow = SlowStock(pb, delay=1.5)
    port = free_port()
    env = shop.env_for("gateway")
    env.update(HTTP_ADDR=f"127.0.0.1:{port}", STOCK_ADDRS=f"127.0.0.1:{slow.port}", HTTP_MAX_IN_FLIGHT=2,
               HTTP_THREADS=2, DATABASE_URL=shop.database_url("gateway2"))
    gw = Service("gateway", env, shop.dir, health_url=f"http://127.0.0.1:{port}/healthz", label="gateway-2")
    gw.start()
    try:
        base = f"http://127.0.0.1:{port}"
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
        accepted = [pool.submit(http, "GET", base + "/api/products") for _ in range(2)]
        for _ in range(2):
            assert slow.entered.acquire(timeout=10)  # both workers are now in the slow call

        def timed():
            t0 = time.monotonic()
            r = http("GET", base + "/api/products")
            return r, time.monotonic() - t0
        surplus = [f.result() for f in [pool.submit(timed) for _ in range(6)]]
        for (st, hdrs, body), took in surplus:
            assert st == 503, body
            assert hdrs.get("Retry-After") == "1"
            assert "error" in body
            assert took < 0.5, took
        for f in accepted:
            st, _, body = f.result(timeout=10)
            assert st == 200 and body["products"][0]["productID"] == "1", body
        st, _, text = http("GET", base + "/metrics")
        line = next(l for l in text.splitlines() if l.startswith('http_requests_refused_total{reason="in_flight"}'))
        assert float(line.split()[-1]) >= 6, line
        pool.shutdown()
        # A stream open at stop ends cleanly and does not hold the stop up.
        oid = create(shop, "sse-stop")
        s = Stream(f"{base}/api/customers/sse-stop/orders/{oid}/events")
        assert s.next_event()["event"] == "order"
    finally:
        t0 = time.monotonic()
        code = gw.stop()
        took = time.monotonic() - t0
        slow.stop()
    assert code == 0, gw.tail()
    assert took < 5, took
    with pytest.raises((EOFError, TimeoutError, OSError)):
        while True:
            s.next_event(timeout=2)
