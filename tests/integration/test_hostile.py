"""Hostile-input corpus: every case in tests/integration/hostile/*.case runs
against one shop, and after each one the test asserts the expected answer, that no
store changed (stock levels, every table of every service's SQLite file) and that
every service still answers /healthz.

HTTP cases go over raw sockets so nothing normalises the request on the way (no
client library fixes a path, a header or a length). gRPC cases use Python grpcio, an
independent implementation. The case format is described in hostile/README.md.
"""
import collections
import glob
import hashlib
import hmac
import json
import os
import re
import socket
import sqlite3
import time
import urllib.parse

import grpc
import pytest

from oms_harness import Shop, http, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
CASE_DIR = os.path.join(HERE, "hostile")
# Canaries: secrets the shop gets from its environment; no log line may contain them.
SECRET = "whsec_canary_6f1d0c9a2b7e"
STRIPE_KEY = "sk_test_canary_3a9e41d7c5"
RMQ_USER, RMQ_PASSWORD = "hostile", "amqp-canary-8c2f5e1b"
HTTP_TIMEOUT_S = 3            # the shop's HTTP idle timeout (slow-client cases)
CATALOG = {"currency": "usd", "products": [
    {"productID": "1", "name": "Cheese", "priceID": "price_cheese", "unitPrice": 450, "quantity": 50},
    {"productID": "2", "name": "Chocolate", "priceID": "price_chocolate", "unitPrice": 250, "quantity": 7},
]}


# ---- case files ---------------------------------------------------------------------

class Case:
    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)[:-len(".case")]
        self.fields = {}
        self.sections = {}
        with open(path, "rb") as f:
            raw = f.read()
        head, sep, rest = raw.partition(b"\n--- ")
        for line in head.decode().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            key, _, value = line.partition(":")
            self.fields.setdefault(key.strip().lower(), []).append(value.strip())
        while sep:
            title, _, rest = rest.partition(b"\n")
            body, sep, rest = rest.partition(b"\n--- ")
            self.sections[title.decode().strip()] = body

    def get(self, key, default=None):
        v = self.fields.get(key)
        return v[0] if v else default

    def all(self, key):
        return self.fields.get(key, [])


def load_cases():
    return [Case(p) for p in sorted(glob.glob(os.path.join(CASE_DIR, "*.case")))]


# ---- placeholders -------------------------------------------------------------------

PLACEHOLDER = re.compile(rb"@@(\w+)(?:\((.*?)\))?@@", re.S)


def expand(data, ctx):
    """Expands @@NAME@@ and @@NAME(args)@@ in bytes (see hostile/README.md)."""
    def one(m):
        name, args = m.group(1).decode(), m.group(2)
        if name == "JOIN" or name == "REPEAT":
            n, _, text = args.partition(b",")
            text = expand(text, ctx)
            return (b"," if name == "JOIN" else b"").join([text] * int(n))
        if name == "HEX":
            return bytes.fromhex(args.decode())
        if name in ("ORDER_ID", "CUSTOMER", "SESSION_ID", "NOW", "STAFF_COOKIE"):
            return str(ctx[name]).encode()
        if name in ("STALL", "LEN", "SIGN"):
            return m.group(0)  # filled in once the body is known / by the sender
        raise ValueError(f"unknown placeholder {name}")
    return PLACEHOLDER.sub(one, data)


def sign_header(head, body):
    """@@SIGN(offset[,secret])@@ in the head: a Stripe-Signature value for body signed at
    now + offset seconds."""
    def one(m):
        offset, _, secret = m.group(1).decode().partition(",")
        t = int(time.time()) + int(offset)
        mac = hmac.new((secret or SECRET).encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return f"t={t},v1={mac}".encode()
    return re.sub(rb"@@SIGN\((.*?)\)@@", one, head)


def build_request(case, ctx):
    """The raw bytes of an HTTP case: head lines joined with CRLF, a blank line, the
    body exactly as written (its final newline dropped)."""
    sec = case.sections["request"]
    if sec.endswith(b"\n"):
        sec = sec[:-1]
    head, blank, body = sec.partition(b"\n\n")
    body = expand(body, ctx)
    head = sign_header(expand(head, ctx), body)
    head = head.replace(b"@@LEN@@", str(len(body)).encode())
    return head.replace(b"\n", b"\r\n") + b"\r\n\r\n" + body


# ---- raw HTTP -----------------------------------------------------------------------

def read_response(sock, deadline):
    """Reads one response: (status or "closed", headers dict, body bytes)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            return ("closed", {}, buf)
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    want = int(headers.get("content-length", -1))
    while want < 0 or len(body) < want:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        body += chunk
    return (status, headers, body)


def send_raw(port, data, timeout=20):
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything
        return read_response(s, deadline)


def run_slow(shop, port, data, case):
    """Sends the request up to @@STALL@@ and then nothing (or one byte per
    trickle-interval seconds). While it stalls other clients must be served; the server
    must drop the slow connection within its idle timeout (plus grace)."""
    before, _, after = data.partition(b"@@STALL@@")
    trickle = float(case.get("trickle-interval", "0"))
    limit = HTTP_TIMEOUT_S + float(case.get("grace", "4"))
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(before)
        start = time.monotonic()
        served = 0
        closed_after = None
        while time.monotonic() - start < limit + 5:
            # another client, meanwhile
            st, _, _ = http("GET", f"http://127.0.0.1:{port}/healthz", timeout=5)
            assert st == 200, f"server stopped answering others while a slow client stalls: {st}"
            served += 1
            if trickle and after:
                try:
                    s.sendall(after[:1])
                    after = after[1:]
                except (BrokenPipeError, ConnectionResetError):
                    closed_after = time.monotonic() - start
                    break
            s.settimeout(trickle or 0.5)
            try:
                chunk = s.recv(65536)
                if chunk == b"" or chunk.startswith(b"HTTP/"):
                    closed_after = time.monotonic() - start
                    break
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed_after = time.monotonic() - start
                break
        assert served >= 1
        assert closed_after is not None, f"slow connection still open after {limit + 5:.0f}s"
        assert closed_after <= limit, f"slow connection dropped only after {closed_after:.1f}s (limit {limit}s)"
        return ("closed", {}, b"")
    finally:
        s.close()


# ---- gRPC ---------------------------------------------------------------------------

def expand_json(v):
    """{"@repeat": n, "item": x} -> [x] * n, recursively."""
    if isinstance(v, dict):
        if "@repeat" in v:
            return [expand_json(v["item"])] * int(v["@repeat"])
        return {k: expand_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [expand_json(x) for x in v]
    return v


GRPC_METHODS = {
    # service -> method -> (stub class, request type)
    "orders": ("OrderServiceStub", {"CreateOrder": "CreateOrderRequest", "GetOrder": "GetOrderRequest",
                                    "UpdateOrder": "Order", "ListOrders": "ListOrdersRequest",
                                    "CancelOrder": "CancelOrderRequest"}),
    "stock": ("StockServiceStub", {"CheckIfItemsAreInStock": "CheckIfItemsAreInStockRequest",
                                   "GetItems": "GetItemsRequest", "ListItems": "ListItemsRequest",
                                   "ReserveItems": "ReserveItemsRequest",
                                   "ReleaseReservation": "ReservationRequest",
                                   "CommitReservation": "ReservationRequest"}),
}


def run_grpc(shop, pb, case, ctx):
    from google.protobuf import json_format
    pb2, pb2_grpc = pb
    _, service, method = case.get("target").split()
    stub_name, methods = GRPC_METHODS[service]
    msg = json.loads(expand(case.sections["message"], ctx))
    req = json_format.ParseDict(expand_json(msg), getattr(pb2, methods[method])())
    with grpc.insecure_channel(f"127.0.0.1:{shop.ports[service + '_grpc']}",
                               options=[("grpc.max_send_message_length", 8 << 20)]) as ch:
        call = getattr(getattr(pb2_grpc, stub_name)(ch), method)
        try:
            call(req, timeout=15)
            return ("OK", "")
        except grpc.RpcError as e:
            return (e.code().name, e.details() or "")


# ---- invariants -----------------------------------------------------------------------

def store_snapshot(shop):
    """Stock levels from the stock service plus a digest of every row of every table
    in every service's SQLite file (opened read-only)."""
    snap = {"stock": shop.stock()}
    if getattr(shop, "db", "sqlite") == "postgres":  # OMS_TEST_DB=postgres pass
        snap.update(pg_digests(shop))
        return snap
    for path in sorted(glob.glob(os.path.join(shop.dir, "*.db"))):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
            for t in tables:
                rows = sorted(repr(r) for r in db.execute(f'SELECT * FROM "{t}"'))
                snap[f"{os.path.basename(path)}:{t}"] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
        finally:
            db.close()
    return snap


def pg_script(shop, per_db):
    """Runs per_db(dbname) -> SQL for every service database in one psql process (a
    process per table would cost minutes over the corpus); returns its output lines."""
    import subprocess
    import oms_harness
    pg = oms_harness.postgres()
    script = "".join(f"\\c {url.rsplit('/', 1)[1]}\n{per_db(url.rsplit('/', 1)[1])}\n"
                     for _, url in sorted(shop.db_urls.items()))
    out = subprocess.run(["psql", "-q", "-X", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-d", "postgres",
                          "-tA", "-v", "ON_ERROR_STOP=1", "-f", "-"], input=script, capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if line]


_PG_TABLES = {}


def pg_digests(shop):
    """{"<db>:<table>": "count|md5 of all rows"} for every table of every service."""
    if shop.dir not in _PG_TABLES:
        tables = collections.defaultdict(list)
        for line in pg_script(shop, lambda db: f"SELECT '{db}', tablename FROM pg_tables WHERE schemaname = 'public';"):
            db, t = line.split("|")
            tables[db].append(t)
        _PG_TABLES[shop.dir] = tables
    tables = _PG_TABLES[shop.dir]

    service = {url.rsplit("/", 1)[1]: name for name, url in shop.db_urls.items()}

    def digest_sql(db):  # keys as in SQLite mode: "payments.db:inbox"
        return " UNION ALL ".join(
            f"SELECT '{service[db]}.db:{t}', count(*)::text || ':' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
            f'FROM "{t}" x' for t in tables[db]) + ";"
    return dict(line.split("|", 1) for line in pg_script(shop, digest_sql))


def diff(a, b):
    return {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}


def all_healthy(shop):
    bad = {}
    for name in shop.svc:
        if shop.svc[name].proc.poll() is not None:
            bad[name] = f"exited with {shop.svc[name].proc.returncode}"
            continue
        st, _, body = http("GET", shop.health_url(name), timeout=5)
        if st != 200:
            bad[name] = (st, body)
    return bad


# ---- the test -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def hshop(rabbit, workdir):
    # A broker user of its own, so its password is a canary too (guest's is "guest").
    rabbit.api(f"users/{RMQ_USER}", "PUT", {"password": RMQ_PASSWORD, "tags": ""})
    shop = Shop(rabbit, workdir, catalog=CATALOG, env={
        "HTTP_TIMEOUT_S": HTTP_TIMEOUT_S, "STRIPE_WEBHOOK_SECRET": SECRET, "STRIPE_KEY": STRIPE_KEY,
        "RABBITMQ_USER": RMQ_USER, "RABBITMQ_PASSWORD": RMQ_PASSWORD, "LOG_LEVEL": "debug",
        "MAX_OPEN_ORDERS": 1})
    rabbit.api("permissions/" + urllib.parse.quote(shop.vhost, safe="") + f"/{RMQ_USER}", "PUT",
               {"configure": ".*", "write": ".*", "read": ".*"})
    try:
        shop.start()
    except Exception:
        shop.stop()
        print(shop.logs())
        raise
    yield shop
    codes = shop.stop()
    bad = {n: c for n, c in codes.items() if c != 0}
    assert not bad, f"services did not stop cleanly: {bad}\n{shop.logs()}"


@pytest.fixture(scope="module")
def victim(hshop):
    """An order of another customer, waiting for payment: the target of the
    cross-customer and forged-webhook cases."""
    st, _, body = hshop.create("victim", [{"productID": "1", "quantity": 2}],
                               headers={"Idempotency-Key": "victim-key"})
    assert st == 201, body
    oid = body["order"]["orderID"]
    order = hshop.wait_status("victim", oid, "waiting_payment")
    m = re.search(r"/checkout/([A-Za-z0-9_]+)$", order["PaymentLink"])
    assert m, order
    # Quiet first: later snapshots must differ only by what a case did.
    prev = [None]

    def settled():
        snap = store_snapshot(hshop)
        same = snap == prev[0]
        prev[0] = snap
        return same
    wait_for(settled, 30, "the stores to settle", interval=0.5)
    return {"ORDER_ID": oid, "CUSTOMER": "victim", "SESSION_ID": m.group(1), "NOW": int(time.time()),
            "STAFF_COOKIE": hshop.staff_cookie()["Cookie"]}


CASES = load_cases()


def test_corpus_is_there():
    assert len(CASES) >= 60, f"only {len(CASES)} cases in {CASE_DIR}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_case(hshop, victim, pb, case):
    target = case.get("target")
    assert target, f"{case.path}: no target"
    before = store_snapshot(hshop)
    if target.startswith("grpc "):
        code, details = run_grpc(hshop, pb, case, victim)
        want = case.get("expect-code")
        assert code == want, (code, details)
        for sub in case.all("expect-details"):
            assert sub in details, (sub, details)
    else:
        port = hshop.ports[{"gateway": "gateway_http", "payments": "payments_http",
                            "stock_admin": "stock_admin", "orders_admin": "orders_admin",
                            "kitchen_admin": "kitchen_admin"}[target]]
        data = build_request(case, victim)
        if case.get("mode") == "slow":
            status, headers, body = run_slow(hshop, port, data, case)
        else:
            status, headers, body = send_raw(port, data)
        want = case.get("expect-status")
        assert str(status) in want.split("|"), (status, headers, body[:500])
        text = body.decode("utf-8", "replace")
        for sub in case.all("expect-error"):
            err = json.loads(text)["error"]
            assert sub in err, (sub, err)
        for sub in case.all("expect-body"):
            want_sub = expand(sub.encode(), victim).decode()
            assert want_sub in text, (want_sub, text[:500])
        for sub in case.all("expect-absent"):
            assert expand(sub.encode(), victim).decode() not in text, (sub, text[:500])
        for h in case.all("expect-header"):
            k, _, v = h.partition(":")
            assert v.strip() in headers.get(k.strip().lower(), ""), (h, headers)
        if isinstance(status, int) and status >= 500 and case.get("allow-5xx") != "yes":
            pytest.fail(f"5xx for a client's mistake: {status} {text[:300]}")
    bad = all_healthy(hshop)
    assert not bad, f"services unhealthy after {case.name}: {bad}\n{hshop.logs()}"
    after = store_snapshot(hshop)
    for key in case.all("allow-change"):  # e.g. a webhook's event id in the inbox
        before.pop(key, None)
        after.pop(key, None)
    assert after == before, f"{case.name} changed a store: {diff(before, after)}"


def test_secrets_never_logged(hshop, victim):
    """After the whole corpus (forged webhooks, broker logins, debug logging): no log
    line of any service holds the webhook secret, the Stripe key or the broker
    password, and /metrics does not either."""
    canaries = [SECRET, STRIPE_KEY, RMQ_PASSWORD]
    leaks = []
    for path in glob.glob(os.path.join(hshop.dir, "*.log")):
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        assert text, f"{path} is empty: nothing was checked"
        leaks += [(os.path.basename(path), c) for c in canaries if c in text]
    for name in hshop.svc:
        st, _, text = http("GET", hshop.health_url(name).replace("/healthz", "/metrics"))
        leaks += [(name + " /metrics", c) for c in canaries if c in str(text)]
    assert not leaks, f"secrets in logs: {leaks}"


def test_listeners_on_loopback(hshop, rabbit):
    """Every socket the services and the broker (beam, epmd) listen on is bound to
    127.0.0.1: scripts/rabbitmq.sh binds AMQP, management, distribution and epmd to
    loopback; the services' addresses default to loopback."""
    import subprocess
    pids = {str(s.proc.pid): n for n, s in hshop.svc.items()}
    with open(os.path.join(rabbit.dir, "rabbit.pid")) as f:
        pids[f.read().strip()] = "rabbitmq"
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    seen = collections.Counter()
    for line in out.splitlines():
        m = re.search(r"pid=(\d+)", line)
        cols = line.split()
        local = cols[3]
        owner = pids.get(m.group(1)) if m else None
        if owner is None and "epmd" in line and local.endswith(f":{rabbit.port + 30000}"):
            owner = "epmd"
        if owner is None:
            continue
        seen[owner] += 1
        # gRPC core binds "127.0.0.1:p" on a dual-stack socket: the IPv4-mapped form.
        assert local.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"), \
            f"{owner} listens on {local}"
    assert all(seen[n] for n in hshop.svc) and seen["rabbitmq"] >= 3, seen
