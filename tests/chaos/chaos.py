"""Fault run (`make chaos`; `--short` in `make test`).

Starts RabbitMQ and the five services (the integration harness), drives a steady,
bounded stream of orders that are paid through the local checkout (some cancelled
instead), and meanwhile kill -9's every service once (restarting it), restarts the
broker, and publishes a few deliberately poisoned messages. Afterwards it checks:

  * every accepted order reached the terminal state its payment calls for
    (paid -> "ready for pick-up", cancelled -> "cancelled");
  * stock reconciles per product: initial = available + reserved + sold, and sold is
    exactly what the paid orders bought;
  * no event was applied twice: one kitchen ticket per paid order, one order.paid /
    order.cooking / order.ready outbox row per paid order, no duplicate inbox ids;
  * money, per order: what was taken = the price of the cooked order + what was
    refunded, and no order is ready without its stock committed to it;
  * the dead-letter queues hold the poisoned messages and nothing else;
  * every service exits 0 on SIGTERM at the end.

With --cluster the broker is a 3-node RabbitMQ cluster with quorum queues (the
services list every node in RABBITMQ_ADDRS): instead of a broker restart, the node the
services are connected to is kill -9'd in the middle of the stream and later brought
back (it rejoins); the same invariants must hold: nothing lost, nothing applied twice.

It prints what it injected and the tallies, and exits non-zero on any violation.
"""
import argparse
import collections
import glob
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import oms_harness  # noqa: E402
from oms_harness import RabbitCluster, RabbitMQ, Shop, http, wait_for  # noqa: E402

PRODUCTS = {"1": 5000, "2": 5000, "3": 5000, "4": 5000}
CATALOG = {"currency": "usd", "products": [
    {"productID": pid, "name": f"Item {pid}", "priceID": f"price_{pid}", "unitPrice": 100 * int(pid), "quantity": q}
    for pid, q in PRODUCTS.items()]}


def log(msg):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


RETRIES = collections.Counter()  # client-side retries, by step: how hard the faults hit
WAITED = collections.Counter()   # longest wait (s) for one step to succeed, by step


def retry(what, fn, timeout=90.0, interval=0.2):
    """Calls fn until it returns a value that is not None, riding out a dependency that
    is down (connection refused, 503); gives up after timeout."""
    start = time.monotonic()
    deadline = start + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v is not None:
                # The longest a client waited on one step: how long faults were visible.
                step = what.split()[0]
                WAITED[step] = max(WAITED[step], round(time.monotonic() - start, 1))
                return v
        except (OSError, urllib.error.URLError, ValueError) as e:
            last = e
            RETRIES[what.split()[0] + " (connection error)"] += 1
        time.sleep(interval)
    raise TimeoutError(f"{what}: no success within {timeout}s (last error: {last})")


class Order:
    def __init__(self, n):
        self.customer = f"chaos-{n}"
        self.key = f"chaos-key-{n}"
        self.items = [{"productID": random.choice(list(PRODUCTS)), "quantity": random.randint(1, 3)}]
        if random.random() < 0.3:
            other = random.choice([p for p in PRODUCTS if p != self.items[0]["productID"]])
            self.items.append({"productID": other, "quantity": random.randint(1, 2)})
        self.pay = random.random() < 0.8
        self.id = None
        self.error = None


class Load:
    """Workers each take the next order, create it (Idempotency-Key, so a retry after a
    lost answer gives the same order), wait for its payment link, then pay it on the
    local checkout or cancel it."""

    def __init__(self, shop, seconds, workers, rate):
        self.shop = shop
        self.until = time.monotonic() + seconds
        self.workers = workers
        self.interval = workers / rate
        self.orders = []
        self.lock = threading.Lock()
        self.count = 0
        self.threads = []

    def next(self):
        with self.lock:
            if time.monotonic() >= self.until:
                return None
            self.count += 1
            o = Order(self.count)
            self.orders.append(o)
            return o

    def create(self, o):
        def attempt():
            st, _, body = http("POST", f"{self.shop.gateway}/api/customers/{o.customer}/orders", {"items": o.items},
                               headers={"Idempotency-Key": o.key}, timeout=10)
            if st == 201:
                return body["order"]["orderID"]
            if st in (409,) or 400 <= st < 500:
                raise AssertionError(f"create refused: {st} {body}")
            RETRIES["create"] += 1
            return None
        o.id = retry(f"create {o.customer}", attempt)

    def link(self, o):
        def attempt():
            st, _, body = self.shop.get(o.customer, o.id)
            if st == 200 and body["status"] == "waiting_payment" and body["PaymentLink"] not in ("", "none"):
                return body["PaymentLink"]
            if st != 200:
                RETRIES["link"] += 1
            return None
        return retry(f"payment link of {o.id}", attempt, interval=0.05)

    def settle(self, o, link):
        if o.pay:
            def attempt():
                st, _, body = http("POST", link + "/pay", b"", timeout=10)
                if st in (200, 409):  # 200: the redirect landed on the status page; 409: already paid
                    return st
                RETRIES["pay"] += 1
                return None
            retry(f"pay {o.id}", attempt)
        else:
            def attempt():
                st, _, body = http("POST", f"{self.shop.gateway}/api/customers/{o.customer}/orders/{o.id}/cancel",
                                   timeout=10)
                if st == 200 and body.get("status") == "cancelled":
                    return st
                RETRIES["cancel"] += 1
                return None
            retry(f"cancel {o.id}", attempt)

    def worker(self):
        while True:
            started = time.monotonic()
            o = self.next()
            if o is None:
                return
            try:
                self.create(o)
                self.settle(o, self.link(o))
            except Exception as e:  # noqa: BLE001 - recorded as a violation
                o.error = f"{type(e).__name__}: {e}"
                log(f"order {o.customer}: {o.error}")
            pause = self.interval - (time.monotonic() - started)
            if pause > 0:
                time.sleep(pause)

    def start(self):
        for _ in range(self.workers):
            t = threading.Thread(target=self.worker, daemon=True)
            t.start()
            self.threads.append(t)

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)


def kill_and_restart(shop, name, injected, down_s):
    """kill -9, stay down for down_s (so work in flight meets the outage), restart."""
    pid = shop.svc[name].proc.pid
    shop.svc[name].kill9()
    time.sleep(down_s)
    t0 = time.monotonic()
    shop.restart(name)
    injected.append(f"kill -9 {name} (pid {pid}), down {down_s:.0f}s, healthy {time.monotonic() - t0:.1f}s after restart")
    log(injected[-1])


def restart_broker(shop, injected):
    t0 = time.monotonic()
    shop.rabbit.stop()
    shop.rabbit.start()
    injected.append(f"RabbitMQ restarted in {time.monotonic() - t0:.1f}s")
    log(injected[-1])


def kill_broker_node(shop, injected, down_s):
    """kill -9 of the node the services use first (node 1), a pause, then the node is
    started again and rejoins; quorum queues keep serving from the other two."""
    cluster = shop.rabbit
    t0 = time.monotonic()
    pid = cluster.kill_node(1)
    time.sleep(down_s)
    cluster.start()
    injected.append(f"kill -9 RabbitMQ node 1 (pid {pid}), back and rejoined {time.monotonic() - t0:.1f}s later")
    log(injected[-1])


def poison(shop, injected):
    """Messages that can never be processed: straight to the dead-letter queues."""
    ids = []
    for exchange, body in (("order.paid", "this is not json {"), ("order.created", '{"orderID": 5}')):
        ids.append(shop.publish(exchange, body))
        injected.append(f"poison message {ids[-1]} on {exchange}")
        log(injected[-1])
    return ids


def restart_database(injected):
    """Stops and starts the PostgreSQL server in place (same directory and port)."""
    pg = oms_harness.postgres()
    script = os.path.join(oms_harness.SRC, "scripts", "postgres.sh")
    t0 = time.monotonic()
    subprocess.run([script, "stop", pg.dir], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([script, "start", pg.dir, str(pg.port)], check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, PG_NO_FSYNC="1"))
    injected.append(f"PostgreSQL restarted in {time.monotonic() - t0:.1f}s")
    log(injected[-1])


def rows(shop, service, sql):
    """All rows of sql on service's database (SQLite file or PostgreSQL database)."""
    if shop.db == "postgres":
        pg = oms_harness.postgres()
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-d",
                              shop.database_url(service).rsplit("/", 1)[1], "-tA", "-F", "\x1f", "-c", sql],
                             check=True, capture_output=True, text=True).stdout
        return [tuple(line.split("\x1f")) for line in out.splitlines() if line]
    db = sqlite3.connect(f"file:{os.path.join(shop.dir, service + '.db')}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def check(shop, load, poison_ids, violations, tallies):
    orders = [o for o in load.orders if o.id]
    for o in load.orders:
        if o.error:
            violations.append(f"order {o.customer} was not driven to the end: {o.error}")
    # 1. terminal states
    want = {o.id: ("ready for pick-up" if o.pay else "cancelled") for o in orders}
    final = {}

    def all_terminal():
        for o in orders:
            if final.get(o.id) == want[o.id]:
                continue
            st, _, body = shop.get(o.customer, o.id)
            if st != 200:
                return False
            final[o.id] = body["status"]
            if body["status"] != want[o.id]:
                return False
        return True
    try:
        wait_for(all_terminal, 120, "every order to reach its terminal state", interval=0.5)
    except TimeoutError:
        pass
    states = collections.Counter(final.values())
    tallies["final statuses"] = dict(states)
    for o in orders:
        if final.get(o.id) != want[o.id]:
            violations.append(f"order {o.id} ({'paid' if o.pay else 'cancelled'}) ended {final.get(o.id)!r}, "
                              f"want {want[o.id]!r}")
    # each customer has exactly the one order (the Idempotency-Key held across retries)
    for o in orders:
        st, _, lst = shop.list_orders(o.customer)
        if st != 200 or len(lst["orders"]) != 1:
            violations.append(f"customer {o.customer} has {len(lst.get('orders', []))} orders, want 1")

    # 2. stock
    paid_qty = collections.Counter()
    for o in orders:
        if o.pay:
            for it in o.items:
                paid_qty[it["productID"]] += it["quantity"]

    def settled():
        s = shop.stock()
        return s if all(s[p]["sold"] == paid_qty[p] for p in PRODUCTS) else None
    try:
        stock = wait_for(settled, 30, "stock commits to settle", interval=0.5)
    except TimeoutError:
        stock = shop.stock()
    tallies["stock (available/reserved/sold)"] = {p: (s["available"], s["reserved"], s["sold"])
                                                 for p, s in stock.items() if p in PRODUCTS}
    for p, initial in PRODUCTS.items():
        s = stock[p]
        if s["available"] + s["reserved"] + s["sold"] != initial:
            violations.append(f"stock {p}: {s['available']} + {s['reserved']} + {s['sold']} != {initial}")
        if s["sold"] != paid_qty[p]:
            violations.append(f"stock {p}: sold {s['sold']}, paid orders bought {paid_qty[p]}")
        if s["reserved"]:
            tallies.setdefault("orphan reservations (released after RESERVATION_TTL)", {})[p] = s["reserved"]

    # 3. applied once
    paid_ids = {o.id for o in orders if o.pay}
    tickets = collections.Counter(r[0] for r in rows(shop, "kitchen", "SELECT order_id FROM tickets"))
    for oid in paid_ids:
        if tickets[oid] != 1:
            violations.append(f"kitchen has {tickets[oid]} tickets for paid order {oid}")
    for oid, n in tickets.items():
        if oid not in paid_ids:
            violations.append(f"kitchen ticket for order {oid}, which was not paid")
    for service, exchange, expected in (("payments", "order.paid", paid_ids), ("kitchen", "order.cooking", paid_ids),
                                        ("kitchen", "order.ready", paid_ids)):
        per = collections.Counter(json.loads(b)["orderID"]
                                  for (b,) in rows(shop, service, f"SELECT body FROM outbox WHERE exchange = '{exchange}'"))
        dup = {k: v for k, v in per.items() if v != 1}
        missing = expected - set(per)
        if dup or missing:
            violations.append(f"{service} outbox {exchange}: duplicates {dup}, missing {sorted(missing)[:5]}")
        unsent = int(rows(shop, service, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")[0][0])
        if unsent:
            violations.append(f"{service} outbox: {unsent} rows never sent")
    for service in ("orders", "payments", "kitchen"):
        d = rows(shop, service, "SELECT consumer, message_id, count(*) FROM inbox GROUP BY 1, 2 HAVING count(*) > 1")
        if d:
            violations.append(f"{service} inbox: duplicate message ids {d[:5]}")
    tallies["kitchen tickets"] = sum(tickets.values())

    # 4. money, per order: taken = cooked + refunded; nothing ready without its stock
    sessions = {r[0]: (int(r[1]), r[2] not in (None, "")) for r in
                rows(shop, "payments", "SELECT order_id, amount, payment_intent FROM checkout_sessions")}
    refunds = collections.Counter()
    for oid, amount in rows(shop, "payments", "SELECT order_id, amount FROM refunds"):
        refunds[oid] += int(amount)
    committed = {r[0] for r in rows(shop, "stock", "SELECT order_id FROM reservations WHERE state = 'committed'")}
    taken_total = refunded_total = 0
    for o in orders:
        amount, paid = sessions.get(o.id, (0, False))
        taken = amount if paid else 0
        cooked = amount if final.get(o.id) == "ready for pick-up" else 0
        taken_total += taken
        refunded_total += refunds[o.id]
        if taken != cooked + refunds[o.id]:
            violations.append(f"order {o.id}: money taken {taken} != cooked {cooked} + refunded {refunds[o.id]}")
        if final.get(o.id) == "ready for pick-up" and o.id not in committed:
            violations.append(f"order {o.id} is ready without its stock committed")
    tallies["money taken / refunded (cents)"] = (taken_total, refunded_total)

    # 5. dead letters: the poison and nothing else
    queues = shop.rabbit.api("queues/" + urllib.request.quote(shop.vhost, safe=""))
    dead = {}
    for q in queues:
        if not q["name"].endswith(".dlq"):
            continue
        msgs = shop.rabbit.get_messages(q["name"], shop.vhost, count=1000)
        for m in msgs:
            mid = (m["properties"].get("headers") or {}).get("message-id") or m["properties"].get("message_id")
            dead.setdefault(q["name"], []).append(mid)
            if mid not in poison_ids:
                violations.append(f"{q['name']} holds {mid}, which was not poisoned: {m['payload'][:200]}")
    tallies["dead letters"] = {q: len(v) for q, v in dead.items()}
    found = {mid for v in dead.values() for mid in v}
    for mid in poison_ids:
        if mid not in found:
            violations.append(f"poison message {mid} is in no dead-letter queue")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true", help="the bounded run of make test (~1 min)")
    ap.add_argument("--seconds", type=float, help="load duration (default 40 short, 150 long)")
    ap.add_argument("--rate", type=float, default=4.0, help="orders started per second")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--down", type=float, default=2.0, help="seconds a killed service stays down")
    ap.add_argument("--postgres", action="store_true", help="services on PostgreSQL; the database restarts too")
    ap.add_argument("--dir", help="state directory (default: a new temporary one)")
    ap.add_argument("--cluster", action="store_true",
                    help="a 3-node RabbitMQ cluster with quorum queues; a node is killed instead of a broker restart")
    args = ap.parse_args()
    # SIGTERM (Ctrl-C or the wrapper's trap) unwinds through the finally below, which
    # stops every service and the broker.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seconds = args.seconds or (40 if args.short else 150)
    random.seed(args.seed)
    root = args.dir or tempfile.mkdtemp(prefix="oms-chaos-")
    os.makedirs(root, exist_ok=True)
    log(f"seed {args.seed}; state in {root}; load {seconds:.0f}s at {args.rate}/s; binaries in "
        f"{os.environ.get('OMS_BUILD_DIR', 'build')}")
    rabbit = RabbitCluster(root) if args.cluster else RabbitMQ(root)
    shop = None
    violations, tallies, injected = [], {}, []
    ok = False
    try:
        # The node's distribution port (AMQP port + 20000) may be taken by someone else's
        # ephemeral socket on a busy machine: try a few AMQP ports.
        for attempt in range(3):
            try:
                rabbit.start()
                break
            except (subprocess.CalledProcessError, RuntimeError):
                if attempt == 2 or args.cluster:   # the cluster tries fresh ports itself
                    raise
                rabbit.port = oms_harness.free_broker_port()
                log(f"broker did not start; trying port {rabbit.port}")
        # Retries ride out each outage (a dependency restarting takes a second or two):
        # 10 x 500 ms before a message is given up on.
        shop = Shop(rabbit, root, catalog=CATALOG, db="postgres" if args.postgres else "sqlite", env={"KITCHEN_COOK_MS": 100, "RETRY_DELAY_MS": 500,
                                                        "MAX_RETRIES": 10, "LOG_LEVEL": "info"})
        shop.start()
        missing = [s for s in Shop.SERVICES if s not in shop.svc]
        if missing:
            raise RuntimeError(f"services not built: {missing}")
        load = Load(shop, seconds, workers=3, rate=args.rate)
        load.start()
        # Faults spread over the load: each service once, the broker once, the poison.
        faults = [("kill", n) for n in ("stock", "orders", "payments", "kitchen", "gateway")]
        faults.append(("node", None) if args.cluster else ("broker", None))
        if args.postgres:
            faults.append(("database", None))
        random.shuffle(faults)
        faults.insert(len(faults) // 2, ("poison", None))
        step = seconds / (len(faults) + 1)
        poison_ids = []
        t0 = time.monotonic()
        for i, (kind, name) in enumerate(faults, 1):
            pause = t0 + i * step - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if kind == "kill":
                kill_and_restart(shop, name, injected, args.down)
            elif kind == "broker":
                restart_broker(shop, injected)
            elif kind == "node":
                kill_broker_node(shop, injected, args.down)
            elif kind == "database":
                restart_database(injected)
            else:
                poison_ids = poison(shop, injected)
        if not load.join(seconds + 180):
            violations.append("load workers did not finish")
        tallies["orders started"] = len(load.orders)
        tallies["orders accepted"] = sum(1 for o in load.orders if o.id)
        tallies["paid / cancelled"] = (sum(1 for o in load.orders if o.id and o.pay),
                                       sum(1 for o in load.orders if o.id and not o.pay))
        tallies["client retries during faults"] = dict(RETRIES)
        tallies["longest wait for one step (s)"] = dict(WAITED)
        check(shop, load, poison_ids, violations, tallies)
        ok = True
    except Exception:  # noqa: BLE001
        violations.append("chaos run aborted: " + traceback.format_exc())
    finally:
        if shop:
            codes = shop.stop()
            bad = {n: c for n, c in codes.items() if c != 0}
            if bad:
                violations.append(f"services did not exit cleanly on SIGTERM: {bad}")
            tallies["exit codes"] = codes
        rabbit.stop()
        if args.postgres:
            oms_harness.stop_postgres()
    print("== chaos: injected")
    for line in injected:
        print("   " + line)
    print("== chaos: tallies")
    for k, v in tallies.items():
        print(f"   {k}: {v}")
    if violations:
        print(f"== chaos: {len(violations)} VIOLATIONS")
        for v in violations[:50]:
            print("   " + v)
        if shop:
            print(shop.logs())
        print(f"state kept in {root}")
        return 1
    shutil.rmtree(root, ignore_errors=True)
    print("== chaos: all invariants hold" if ok else "== chaos: incomplete")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
