#!/usr/bin/python3
"""OMS benchmark (docs/benchmark.md): ceilings of the parts, create-order throughput and latency,
lifecycle latency, resource use, ratios. Run through bench/run.sh (`make bench`).

Everything runs on private loopback ports with a private RabbitMQ node and SQLite files
in a temporary directory (tests/integration/oms_harness.py), and is stopped at the end,
also on failure or Ctrl-C. Every load runs for a fixed time. Figures never fail the
run; only a system that cannot start does.

Environment: OMS_BUILD_DIR (default build), QUICK=1 (tiny durations, same code path),
BENCH_SECONDS (length of each create-order load, default 15), BENCH_LIFECYCLE_N
(default 200), BENCH_KEEP=1 (keep the temp dir and its logs), BENCH_ENV="K=V ..." (extra environment
for every service, for experiments such as BENCH_ENV="HTTP_THREADS=8"),
BENCH_SKIP_CEILINGS=1 (services only, for quicker experiments).
"""
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
os.environ.setdefault("OMS_SOURCE_DIR", SRC)
BUILD = os.path.abspath(os.environ.get("OMS_BUILD_DIR") or os.path.join(SRC, "build"))
os.environ["OMS_BUILD_DIR"] = BUILD
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))

import oms_harness as H  # noqa: E402

QUICK = os.environ.get("QUICK", "") not in ("", "0")
LOAD_S = float(os.environ.get("BENCH_SECONDS") or (1 if QUICK else 15))
CEIL_S = 0.3 if QUICK else 4
LIFECYCLE_N = int(os.environ.get("BENCH_LIFECYCLE_N") or (3 if QUICK else 200))
PRODUCTS = 50
CUSTOMERS = 1000
WRK_THREADS, WRK_CONNS = 2, int(os.environ.get("BENCH_CONNS") or 8)
HALF_CONNS = 16
EXTRA_ENV = dict(kv.split("=", 1) for kv in os.environ.get("BENCH_ENV", "").split() if "=" in kv)
SKIP_CEILINGS = os.environ.get("BENCH_SKIP_CEILINGS", "") not in ("", "0")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Rabbit(H.RabbitMQ):
    """The harness's private node without the management plugin (less broker CPU, faster
    start); the shop uses the default vhost of this private node."""

    def start(self):
        # A node's Erlang ports are derived from its AMQP port and only that one was
        # checked free, so a clash (or a busy machine) can fail a boot: retry on fresh
        # ports and a fresh directory.
        script = os.path.join(SRC, "scripts", "rabbitmq.sh")
        base = self.dir
        for attempt in range(3):
            p = subprocess.run([script, "start", self.dir, str(self.port)], stdout=subprocess.DEVNULL)
            if p.returncode == 0:
                self.running = True
                return
            subprocess.run([script, "stop", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            log(f"RabbitMQ did not start on port {self.port} (attempt {attempt + 1} of 3)")
            self.port = H.free_broker_port()
            self.dir = f"{base}-{attempt + 2}"
        raise RuntimeError("RabbitMQ did not start (see the log above)")

    def stop(self):
        # Also after an interrupted start: the script stops whatever node DIR holds.
        if os.path.exists(os.path.join(self.dir, "env")):
            subprocess.run([os.path.join(SRC, "scripts", "rabbitmq.sh"), "stop", self.dir],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.running = False

    def add_vhost(self, vhost):
        pass

    def beam_pid(self):
        try:
            with open(os.path.join(self.dir, "rabbit.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None


# ---- process accounting ----------------------------------------------------------------
TICK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid):
    """(utime, stime) of a process in seconds, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / TICK, int(fields[12]) / TICK
    except (OSError, IndexError, ValueError):
        return None


def machine_cpu():
    """Whole-machine CPU seconds since boot from /proc/stat: busy in processes (user,
    nice, system), in interrupts (irq, softirq: loopback networking is mostly softirq,
    which the kernel does not charge to any process) and stolen by the hypervisor."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]] + [0] * 8
    return {"proc": (v[0] + v[1] + v[2]) / TICK, "irq": (v[5] + v[6]) / TICK, "steal": v[7] / TICK}


def children_cpu_s():
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


# ---- running the measuring tools ---------------------------------------------------------
def ahead():
    """In the open-loop driver's child: run ahead of the services when the CPUs are
    saturated (nice -5, where allowed), so that the latencies it records are the
    server's and not its own wait for a CPU; on a real setup it runs elsewhere."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -5)
    except OSError:
        pass


def tool(name, *args, timeout):
    """Runs build/<name> and returns its JSON line as a dict, or {"error": ...}."""
    exe = os.path.join(BUILD, name)
    if not os.access(exe, os.X_OK):
        return {"error": f"{name} not built"}
    try:
        p = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                           preexec_fn=ahead if name == "bench_http_open" else None)
    except subprocess.TimeoutExpired:
        return {"error": f"{name} timed out"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            out = json.loads(line)
            if p.returncode != 0:
                out["exit_code"] = p.returncode
            if p.stderr.strip():
                out["stderr"] = p.stderr.strip()[-300:]
            return out
    return {"error": f"{name} exited {p.returncode}: {p.stderr.strip()[-300:]}"}


def wrk(url, script, seconds, threads=WRK_THREADS, conns=WRK_CONNS):
    if not shutil.which("wrk"):
        return {"error": "wrk not installed (scripts/deps.sh installs it)"}
    env = dict(os.environ, BENCH_CUSTOMERS=str(CUSTOMERS), BENCH_PRODUCTS=str(PRODUCTS))
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency", "-s", script, url]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, env=env)
    except subprocess.TimeoutExpired:
        return {"error": "wrk timed out"}
    m = re.search(r"^BENCH_JSON (\{.*\})$", p.stdout, re.M)
    if not m:
        return {"error": f"wrk exited {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}"}
    out = json.loads(m.group(1))
    out.update(threads=threads, connections=conns)
    return out


# ---- the shop ----------------------------------------------------------------------------
def catalog():
    return {"currency": "usd", "products": [
        {"productID": str(i), "name": f"Product {i}", "priceID": f"price_bench_{i}", "unitPrice": 100 + 10 * i,
         "quantity": 1_000_000_000} for i in range(1, PRODUCTS + 1)]}


class Client:
    """Keep-alive HTTP/1.1 client for one host (the lifecycle driver)."""

    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.conn = None

    def req(self, method, path, body=None):
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                hdrs = {"Content-Type": "application/json"} if body is not None else {}
                self.conn.request(method, path, body=body, headers=hdrs)
                r = self.conn.getresponse()
                raw = r.read()
                return r.status, (json.loads(raw) if raw and raw[:1] in b"{[" else raw)
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise RuntimeError("unreachable")

    def close(self):
        if self.conn:
            self.conn.close()


def parse_ms(ts):
    """RFC 3339 with milliseconds ("2024-01-02T03:04:05.678Z") -> unix ms."""
    d = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return d.timestamp() * 1000.0


def wait_status(gw, cid, oid, status, timeout, interval=0.002):
    """Polls until the order has status; returns (order, monotonic time it was seen)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st, o = gw.req("GET", f"/api/customers/{cid}/orders/{oid}")
        if st == 200 and o["status"] == status:
            return o, time.monotonic()
        time.sleep(interval)
    raise TimeoutError(f"order {oid} did not reach {status!r} in {timeout}s")


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(p / 100 * (len(v) - 1) + 0.5))], 2)


def summary(values):
    return {"p50": pct(values, 50), "p99": pct(values, 99), "max": pct(values, 100)}


def lifecycle(shop, n):
    """n orders one after another (an unloaded system): create -> waiting_payment, then
    pay on the local checkout -> ready for pick-up. Two measures of each step:
      observed: from sending the request to the poll (GET every 2 ms) that first sees the
                status: an upper bound, by up to one poll interval plus one GET;
      stamped:  from the send time to the order's updatedAt when it took that status
                (services and client share the wall clock; updatedAt has 1 ms
                resolution, truncated, so this reads up to 1 ms low)."""
    gw = Client(shop.gateway)
    pay = Client(shop.payments)
    obs_wait, obs_ready, st_wait, st_ready, failures = [], [], [], [], 0
    try:
        for i in range(n):
            try:
                cid = f"life{i % 50}"
                body = json.dumps({"items": [{"productID": str(1 + i % PRODUCTS), "quantity": 1},
                                             {"productID": str(1 + (i + 1) % PRODUCTS), "quantity": 2}]})
                w0, m0 = time.time() * 1000, time.monotonic()
                st, r = gw.req("POST", f"/api/customers/{cid}/orders", body)
                if st != 201:
                    failures += 1
                    continue
                oid = r["order"]["orderID"]
                o, seen = wait_status(gw, cid, oid, "waiting_payment", 30)
                obs_wait.append((seen - m0) * 1000)
                st_wait.append(parse_ms(o["updatedAt"]) - w0)
                link = urllib.parse.urlsplit(o["PaymentLink"])
                w1, m1 = time.time() * 1000, time.monotonic()
                st, _ = pay.req("POST", link.path + "/pay", b"")
                if st >= 400:
                    failures += 1
                    continue
                o, seen = wait_status(gw, cid, oid, "ready for pick-up", 30)
                obs_ready.append((seen - m1) * 1000)
                st_ready.append(parse_ms(o["updatedAt"]) - w1)
            except (TimeoutError, OSError, http.client.HTTPException, KeyError, ValueError) as e:
                failures += 1
                log(f"lifecycle order {i}: {e}")
    finally:
        gw.close()
        pay.close()
    return {"orders": n, "failures": failures, "poll_interval_ms": 2,
            "create_to_waiting_payment_ms": summary(obs_wait),
            "pay_to_ready_ms": summary(obs_ready),
            "stamped": {"create_to_waiting_payment_ms": summary(st_wait), "pay_to_ready_ms": summary(st_ready)}}


STREAMS = 50 if QUICK else 1000


def streams_phase(shop, pid, n=STREAMS):
    """n open status streams on one order (raw sockets, one thread): the gateway's RSS
    and CPU while they sit idle, then the time from the kitchen's order.ready (the
    event's updatedAt, written by the kitchen) to each watcher receiving it."""
    import selectors
    import socket
    gw = Client(shop.gateway)
    pay = Client(shop.payments)
    socks = []
    out = {"streams": n}
    try:
        st, r = gw.req("POST", "/api/customers/streams/orders",
                       json.dumps({"items": [{"productID": "1", "quantity": 1}]}))
        if st != 201:
            return {"error": f"create answered {st}"}
        oid = r["order"]["orderID"]
        o, _ = wait_status(gw, "streams", oid, "waiting_payment", 30)
        rss0 = rss_mib(pid)
        host, port = shop.gateway.rsplit("/", 1)[1].split(":")
        req = (f"GET /api/customers/streams/orders/{oid}/events HTTP/1.1\r\nHost: {host}\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()
        sel = selectors.DefaultSelector()
        bufs = {}

        def wait_all(marker, timeout, among=None):
            """Reads until every socket of among (default: all) has shown marker:
            {socket: (wall ms, text read)}."""
            among = set(among if among is not None else socks)
            seen, deadline = {}, time.monotonic() + timeout
            while len(seen) < len(among) and time.monotonic() < deadline:
                for key, _ in sel.select(0.5):
                    c = key.fileobj
                    try:
                        data = c.recv(65536)
                    except BlockingIOError:
                        continue
                    bufs[c] += data
                    if c in among and c not in seen and marker in bufs[c]:
                        seen[c] = (time.time() * 1000, bufs[c].decode(errors="replace"))
                        bufs[c] = b""
            return seen
        # Opened in groups of 32, each waiting for its first event: opening a stream
        # reads the order (a request in flight like any other), and a burst past
        # HTTP_MAX_IN_FLIGHT would be refused.
        # A refused open (503: the gateway's queue was past HTTP_MAX_QUEUE_MS) is
        # opened again, as the status page would fall back and retry.
        def open_one():
            c = socket.create_connection((host, int(port)), timeout=10)
            c.sendall(req)
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ)
            bufs[c] = b""
            socks.append(c)
            return c
        t0, opened, reopened = time.monotonic(), 0, 0
        while opened < n:
            group = [open_one() for _ in range(min(32, n - opened))]
            for attempt in range(5):
                seen = wait_all(b"waiting_payment", 30, group)
                opened += len(seen)
                group = [c for c in group if c not in seen and b" 503 " in bufs[c]]
                if not group:
                    break
                for c in group:
                    sel.unregister(c)
                    socks.remove(c)
                    c.close()
                reopened += len(group)
                group = [open_one() for _ in group]
            else:
                break
        out["open_s"] = round(time.monotonic() - t0, 2)
        out["opened"], out["reopened_after_503"] = opened, reopened
        # Idle from here: what do n open streams cost at rest (not what opening them did)?
        cpu0 = cpu_times(pid)
        time.sleep(5)
        rss1, cpu1 = rss_mib(pid), cpu_times(pid)
        out["gateway_rss_mib_before"], out["gateway_rss_mib_open"] = rss0, rss1
        if cpu0 and cpu1:
            out["gateway_idle_cpu_pct"] = round((sum(cpu1) - sum(cpu0)) / 5 * 100, 2)
        link = urllib.parse.urlsplit(o["PaymentLink"])
        pay.req("POST", link.path + "/pay", b"")
        ready = wait_all(b"ready for pick-up", 60)
        out["received_ready"] = len(ready)
        # The ready event carries the kitchen's updatedAt: from there to each watcher.
        lat = []
        for wall, text in ready.values():
            m = re.search(r'"status":"ready for pick-up".*?"updatedAt":"([^"]+)"', text)
            if m:
                lat.append(wall - parse_ms(m.group(1)))
        out["ready_to_watcher_ms"] = summary(lat)
    finally:
        for c in socks:
            c.close()
        gw.close()
        pay.close()
    return out


def refusals(shop):
    """Refusals so far, by who refused: the gateway (HTTP_MAX_IN_FLIGHT / HTTP_MAX_QUEUE_MS)
    and orders (ORDERS_MAX_PENDING: the asynchronous side's backlog)."""
    def total(url, metric):
        st, _, text = H.http("GET", url + "/metrics")
        return sum(float(v) for v in re.findall(rf"^{metric}(?:\{{[^}}]*\}})? (\S+)$",
                                                 text if isinstance(text, str) else "", re.M))
    return {"gateway": total(shop.gateway, "http_requests_refused_total"),
            "orders_backlog": total(shop.orders_admin, "orders_refused_total")}


def overload_phase(shop, rate, seconds):
    """Create order, open loop at `rate` (twice what closed-loop max load reached): the
    accepted ones and their latency, the refused ones (503) and theirs."""
    before = refusals(shop)
    r = tool("bench_http_open", "-u", shop.gateway, "-r", f"{rate:.1f}", "-d", seconds, "-c", 256,
             "-C", CUSTOMERS, "-P", PRODUCTS, timeout=seconds + 30)
    after = refusals(shop)
    r["refused_by"] = {k: after[k] - before[k] for k in after}
    r["drain_s"] = drain(shop, 20 if QUICK else 120)
    return r


def drain(shop, timeout):
    """Waits until the asynchronous part (outbox -> broker -> payments -> UpdateOrder)
    has caught up with everything created so far: one marker order created now reaches
    waiting_payment (queues are FIFO). Returns the seconds it took, or None."""
    gw = Client(shop.gateway)
    t0 = time.monotonic()
    try:
        # Right after an overload the gateway may still refuse (503, Retry-After): the
        # marker is sent again, as a client would, until it is taken.
        while True:
            st, r = gw.req("POST", "/api/customers/marker/orders",
                           json.dumps({"items": [{"productID": "1", "quantity": 1}]}))
            if st != 503 or time.monotonic() - t0 > timeout:
                break
            time.sleep(0.01)
        if st != 201:
            return None
        wait_status(gw, "marker", r["order"]["orderID"], "waiting_payment", timeout, interval=0.02)
        return round(time.monotonic() - t0, 2)
    except (TimeoutError, OSError, http.client.HTTPException):
        return None
    finally:
        gw.close()


class Accounting:
    """CPU seconds of the services (and the broker) over a phase, with the kernel's share
    (stime), the load generator's (finished child processes) and everybody else's on
    the machine (busy time not ours: other people's work disturbs the figures)."""

    def __init__(self, pids):
        self.pids = pids
        self.start = {n: cpu_times(p) for n, p in pids.items()}
        self.m0, self.child0, self.t0 = machine_cpu(), children_cpu_s(), time.monotonic()

    def delta(self):
        out, sys_s = {}, 0.0
        for n, p in self.pids.items():
            a, b = self.start.get(n), cpu_times(p)
            if a is None or b is None:
                out[n] = None
                continue
            out[n] = round(b[0] + b[1] - a[0] - a[1], 3)
            sys_s += b[1] - a[1]
        ours = sum(v for v in out.values() if v is not None)
        gen = children_cpu_s() - self.child0
        m = machine_cpu()
        wall = time.monotonic() - self.t0
        return {"per_process": out, "kernel_share": round(sys_s / ours, 2) if ours else None,
                "load_generator": round(gen, 3),
                "irq_softirq": round(m["irq"] - self.m0["irq"], 3),
                "others_on_machine": round(max(0.0, m["proc"] - self.m0["proc"] - ours - gen), 3),
                "steal": round(m["steal"] - self.m0["steal"], 3), "wall_s": round(wall, 2)}


def per_1000(delta, orders):
    if not orders:
        return None
    d = {n: (round(v * 1000 / orders, 3) if v is not None else None) for n, v in delta["per_process"].items()}
    d["services_total"] = round(sum(v for n, v in d.items() if v is not None and n != "rabbitmq"), 3)
    return d


def create_phase(shop, pids, kind, seconds, rate=None):
    """One create-order load (wrk closed loop, or the open-loop driver at `rate`), then
    the drain; CPU accounted over both."""
    acc = Accounting(pids)
    before = refusals(shop)
    if kind == "wrk":
        r = wrk(shop.gateway, os.path.join(HERE, "create_order.lua"), seconds)
    else:
        r = tool("bench_http_open", "-u", shop.gateway, "-r", f"{rate:.1f}", "-d", seconds, "-c", HALF_CONNS,
                 "-C", CUSTOMERS, "-P", PRODUCTS, timeout=seconds + 30)
    after = refusals(shop)
    r["refused_by"] = {k: after[k] - before[k] for k in after}
    r["drain_s"] = drain(shop, 20 if QUICK else 120)
    # The HTTP rate alone hides an asynchronous backlog: orders that got their 201 but
    # not yet their payment link. End to end counts the load and its drain.
    if r.get("ok") and r.get("drain_s") is not None:
        r["end_to_end_rps"] = round(r["ok"] / (seconds + r["drain_s"]), 1)
    r["cpu_s"] = acc.delta()
    r["cpu_s_per_1000_orders"] = per_1000(r["cpu_s"], r.get("ok"))
    return r


# ---- the run ---------------------------------------------------------------------------
def queue_types_phase(root, env):
    """Create order at max load with quorum (replicated) queues: on one node (a broker of
    its own: a queue's type cannot change in place), and on a 3-node cluster (not in
    QUICK: the cluster alone takes ~30 s to start). The classic single-node figures are
    the main create_max run."""
    out = {}
    for key, label in (("quorum_1", "quorum queues, one node"), ("quorum_3", "quorum queues, 3-node cluster")):
        if key == "quorum_3" and QUICK:
            out[key] = {"error": "not in QUICK"}
            continue
        d = os.path.join(root, key)
        os.makedirs(d, exist_ok=True)
        broker = Rabbit(d) if key == "quorum_1" else H.RabbitCluster(d)
        shop = None
        try:
            log(f"create order at max load, {label}")
            broker.start()
            e = dict(env)
            if key == "quorum_1":
                e["RABBITMQ_QUEUE_TYPE"] = "quorum"   # the cluster shop gets it from the harness
            shop = H.Shop(broker, d, catalog=catalog(), env=e)
            if key == "quorum_1":
                shop.vhost = "/"
            shop.start()
            pids = {n: sv.proc.pid for n, sv in shop.svc.items()}
            if not QUICK:
                wrk(shop.gateway, os.path.join(HERE, "create_order.lua"), 2)
                drain(shop, 120)
            out[key] = create_phase(shop, pids, "wrk", LOAD_S)
        except Exception as ex:  # noqa: BLE001 - a figure missing, never a failed bench
            out[key] = {"error": f"{type(ex).__name__}: {str(ex)[:200]}"}
        finally:
            if shop is not None:
                shop.stop()
            broker.stop()
    return out


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            cpu = m.group(1) if m else ""
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    build = {}
    try:
        with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
            for line in f:
                m = re.match(r"^(CMAKE_BUILD_TYPE|OMS_SANITIZE):\w+=(.*)$", line.strip())
                if m:
                    build[m.group(1)] = m.group(2)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "mem_mib": mem, "kernel": platform.release(),
            "build_dir": BUILD, "build_type": build.get("CMAKE_BUILD_TYPE", ""),
            "sanitizers": build.get("OMS_SANITIZE", "OFF") in ("ON", "1", "TRUE"), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def git_rev():
    try:
        rev = subprocess.run(["git", "-C", SRC, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", SRC, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return ""


def run(root):
    res = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "quick": QUICK,
           "git": git_rev(), "machine": machine(),
           "settings": {"load_s": LOAD_S, "ceiling_s": CEIL_S, "lifecycle_n": LIFECYCLE_N, "products": PRODUCTS,
                        "customers": CUSTOMERS, "wrk": f"-t{WRK_THREADS} -c{WRK_CONNS}",
                        "half_load_connections": HALF_CONNS, "database": "sqlite", "KITCHEN_COOK_MS": 0,
                        "LOG_LEVEL": "warn", "extra_env": EXTRA_ENV, "ceilings_skipped": SKIP_CEILINGS}}
    ceil = res["ceilings"] = {}

    # No per-address limit: the streams group opens its 1,000 streams from loopback.
    # HTTP_MAX_QUEUE_MS: the services' default, not the test harness's 0.
    env = {"LOG_LEVEL": "warn", "KITCHEN_COOK_MS": 0, "RETRY_DELAY_MS": 1000, "MAX_RETRIES": 5,
           "HTTP_PER_IP_LIMIT": 0, "HTTP_MAX_QUEUE_MS": None}
    env.update(EXTRA_ENV)
    log("starting a private RabbitMQ node")
    rabbit = Rabbit(root)
    shop = None
    try:
        rabbit.start()
        # Ceilings of the parts, before the services run (nothing else on the CPUs).
        ceil_s = 0.1 if SKIP_CEILINGS else CEIL_S
        log("ceiling: database commits (orders insert pattern, SQLite)")
        ceil["db_t1"] = tool("bench_db", "-f", os.path.join(root, "bench-db-1.db"), "-t", 1, "-d", ceil_s,
                             timeout=ceil_s + 30)
        ceil["db_t4"] = tool("bench_db", "-f", os.path.join(root, "bench-db-4.db"), "-t", 4, "-d", ceil_s,
                             timeout=ceil_s + 30)
        log("ceiling: gRPC unary echo C<->C")
        ceil["grpc_t2"] = tool("bench_grpc_echo", "-t", 2, "-s", 4, "-d", ceil_s, timeout=ceil_s + 30)
        ceil["grpc_t8"] = tool("bench_grpc_echo", "-t", 8, "-s", 4, "-d", ceil_s, timeout=ceil_s + 30)
        log("ceiling: RabbitMQ publish with confirms")
        ceil["amqp_b1"] = tool("bench_amqp", "-p", rabbit.port, "-b", 1, "-d", ceil_s, timeout=ceil_s + 30)
        ceil["amqp_b100"] = tool("bench_amqp", "-p", rabbit.port, "-b", 100, "-d", ceil_s, timeout=ceil_s + 30)

        log("starting the five services")
        shop = H.Shop(rabbit, root, catalog=catalog(), env=env)
        shop.vhost = "/"
        try:
            shop.start()
        except Exception:
            print(shop.logs(), file=sys.stderr)
            raise
        missing = [s for s in H.Shop.SERVICES if s not in shop.svc]
        if missing:
            res["missing_services"] = missing
        pids = {n: s.proc.pid for n, s in shop.svc.items()}
        if rabbit.beam_pid():
            pids["rabbitmq"] = rabbit.beam_pid()

        log("ceiling: HTTP (wrk on the gateway's /healthz)")
        ceil["http_healthz"] = wrk(shop.gateway + "/healthz", os.path.join(HERE, "report.lua"), CEIL_S)

        if not QUICK:
            log("warm-up")
            wrk(shop.gateway, os.path.join(HERE, "create_order.lua"), 2)
            drain(shop, 120)

        log(f"create order at max load (wrk -t{WRK_THREADS} -c{WRK_CONNS}, {LOAD_S:g} s)")
        mx = res["create_max"] = create_phase(shop, pids, "wrk", LOAD_S)
        rate = (mx.get("rps") or 0) / 2
        if rate > 0:
            log(f"create order at half load ({rate:.0f}/s open loop, {LOAD_S:g} s)")
            res["create_half"] = create_phase(shop, pids, "open", LOAD_S, rate=rate)
        else:
            res["create_half"] = {"error": "no max-load figure to halve"}

        if rate > 0:
            log(f"create order at twice max load ({4 * rate:.0f}/s open loop, {LOAD_S:g} s)")
            res["create_overload"] = overload_phase(shop, 4 * rate, LOAD_S)

        log(f"lifecycle latency over {LIFECYCLE_N} orders")
        acc = Accounting(pids)
        res["lifecycle"] = lifecycle(shop, LIFECYCLE_N)
        res["lifecycle"]["cpu_s"] = acc.delta()

        res["rss_mib"] = {n: rss_mib(p) for n, p in pids.items()}
        log(f"{STREAMS} open status streams")
        res["streams"] = streams_phase(shop, pids["gateway"])
    finally:
        # No second interruption in the middle of stopping what was started.
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        if shop is not None:
            codes = shop.stop()
            res["exit_codes"] = {n: c for n, c in codes.items()}
            if any(c != 0 for c in codes.values()):
                log(f"services did not all stop cleanly: {codes}")
        rabbit.stop()
        for s, h in old.items():
            signal.signal(s, h)
    if os.environ.get("BENCH_QUEUE_TYPES", "1") not in ("", "0"):
        res["queue_types"] = queue_types_phase(root, env)
    res["ratios"] = ratios(res)
    res["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    return res


def num(d, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d if isinstance(d, (int, float)) else None


# What one order costs in units of each ceiling, from the code (README "Benchmark"):
# the create request; gRPC CreateOrder, ReserveItems and payments' UpdateOrder; write
# commits in stock (reserve), orders (create, waiting_payment) and payments (session,
# inbox) -- the relay's commits are shared by a batch; order.created published once.
PATH_PER_ORDER = {"http_healthz": 1, "grpc_echo": 3, "db_commit": 5, "amqp_publish_b100": 1}


def ratios(res):
    c = res["ceilings"]
    path = {
        "http_healthz": num(c, "http_healthz", "rps"),
        "grpc_echo": max(filter(None, [num(c, "grpc_t2", "calls_per_s"), num(c, "grpc_t8", "calls_per_s")]),
                         default=None),
        "db_commit": num(c, "db_t1", "commits_per_s"),
        "amqp_publish_b100": num(c, "amqp_b100", "msgs_per_s"),
    }
    create = num(res, "create_max", "rps")
    e2e = num(res, "create_max", "end_to_end_rps")
    out = {"create_max_rps": create, "create_max_end_to_end_rps": e2e, "ceilings": path}
    known = {k: v for k, v in path.items() if v}
    if create and known:
        slowest = min(known, key=known.get)
        out["slowest_ceiling"] = slowest
        out["create_over_slowest"] = round(create / known[slowest], 3)
        out["create_over_each"] = {k: round(create / v, 3) for k, v in known.items()}
        if e2e:
            out["end_to_end_over_slowest"] = round(e2e / known[slowest], 3)
        # Every part at its own ceiling, one after the other on the same CPUs: the
        # throughput the whole path could reach if nothing but these parts cost anything.
        if all(path.get(k) for k in PATH_PER_ORDER):
            whole = 1.0 / sum(n / path[k] for k, n in PATH_PER_ORDER.items())
            out["path_ceiling"] = round(whole, 1)
            out["path_units_per_order"] = PATH_PER_ORDER
            out["create_over_path"] = round(create / whole, 3)
            if e2e:
                out["end_to_end_over_path"] = round(e2e / whole, 3)
    return out


# ---- report ----------------------------------------------------------------------------
def fmt(v, unit="", nd=0):
    if v is None:
        return "-"
    if isinstance(v, float):
        v = round(v, nd) if nd else int(round(v))
    return f"{v:,}{unit}" if isinstance(v, int) else f"{v}{unit}"


def table(res):
    c = res["ceilings"]
    rows = [("what", "rate", "p50 ms", "p99 ms", "notes")]

    def add(name, d, rate_key, unit, p50="p50_ms", p99="p99_ms", note=""):
        if not isinstance(d, dict) or "error" in d:
            rows.append((name, "-", "-", "-", (d or {}).get("error", "not measured") if isinstance(d, dict) else ""))
            return
        rows.append((name, fmt(num(d, rate_key)) + unit, fmt(num(d, p50), nd=2), fmt(num(d, p99), nd=2), note))

    add("ceiling HTTP /healthz (wrk -t2 -c32)", c.get("http_healthz"), "rps", "/s")
    add("ceiling gRPC echo, 2 threads", c.get("grpc_t2"), "calls_per_s", "/s")
    add("ceiling gRPC echo, 8 threads", c.get("grpc_t8"), "calls_per_s", "/s")
    add("ceiling DB commit, 1 thread", c.get("db_t1"), "commits_per_s", "/s", note="order+2 items+outbox")
    add("ceiling DB commit, 4 threads", c.get("db_t4"), "commits_per_s", "/s")
    add("ceiling AMQP confirm, batch 1", c.get("amqp_b1"), "msgs_per_s", "/s", "confirm_p50_ms", "confirm_p99_ms")
    add("ceiling AMQP confirm, batch 100", c.get("amqp_b100"), "msgs_per_s", "/s", "confirm_p50_ms",
        "confirm_p99_ms", "latency per batch")
    def by(d):
        b = d.get("refused_by") or {}
        return (f"gateway {fmt(b.get('gateway'))}, orders backlog {fmt(b.get('orders_backlog'))}")

    for key, label in (("create_max", f"create order, max (wrk -t{WRK_THREADS} -c{WRK_CONNS})"),
                       ("create_half", "create order, half (open loop)")):
        d = res.get(key) or {}
        refused = num(d, "refused_503")
        note = (f"p90 {fmt(num(d, 'p90_ms'), nd=2)} max {fmt(num(d, 'max_ms'), nd=1)} ms, "
                + (f"refused {fmt(refused)} ({by(d)}), " if refused else "")
                + f"errors {fmt(num(d, 'errors'))}, drain {fmt(num(d, 'drain_s'), 's', 2)}, "
                f"end to end {fmt(num(d, 'end_to_end_rps'), '/s')}"
                + (" (goal: end to end >= 0.95 of create, drain < 1 s)" if key == "create_max" else ""))
        add(label, d, "rps", "/s", note=note if "error" not in d else "")
    d = res.get("create_overload") or {}
    others = (num(d, "errors") or 0) - (num(d, "refused_503") or 0)
    note = (f"accepted (columns) of {fmt(num(d, 'sent'))} sent; refused 503 {fmt(num(d, 'refused_503'))} "
            f"({by(d)}) in p50 {fmt(num(d, 'refused_p50_ms'), nd=2)} / p99 "
            f"{fmt(num(d, 'refused_p99_ms'), nd=2)} ms; other errors {fmt(others + (num(d, 'transport_errors') or 0))}")
    add("create order, 2x max (open loop)", d, "rps", "/s",
        note=(note + "; goal: accepted p99 < 50 ms, refusals < 5 ms, no other errors") if "error" not in d else "")
    sd = res.get("streams") or {}
    if sd and "error" not in sd:
        rl = sd.get("ready_to_watcher_ms") or {}
        rows.append((f"{sd.get('streams')} open status streams", f"n={sd.get('received_ready', '-')}",
                     fmt(rl.get("p50"), nd=1), fmt(rl.get("p99"), nd=1),
                     f"ready -> each watcher; gateway RSS {fmt(sd.get('gateway_rss_mib_before'), nd=1)} -> "
                     f"{fmt(sd.get('gateway_rss_mib_open'), nd=1)} MiB, idle CPU "
                     f"{fmt(sd.get('gateway_idle_cpu_pct'), '%', 2)}; goal: p99 < 100 ms, RSS < 40 MiB, "
                     f"idle < 2 %"))
    qt = res.get("queue_types") or {}
    for key, label in (("quorum_1", "create order, max, quorum 1 node"),
                       ("quorum_3", "create order, max, quorum 3 nodes")):
        if key in qt:
            d = qt[key]
            note = (f"drain {fmt(num(d, 'drain_s'), 's', 2)}, end to end {fmt(num(d, 'end_to_end_rps'), '/s')}, "
                    f"refused {fmt(num(d, 'refused_503'))} ({by(d)}), errors {fmt(num(d, 'errors'))}; "
                    "classic 1 node: create max above")
            add(label, d, "rps", "/s", note=note if "error" not in d else "")
    lc = res.get("lifecycle") or {}
    for key, label in (("create_to_waiting_payment_ms", "lifecycle create -> waiting_payment"),
                       ("pay_to_ready_ms", "lifecycle pay -> ready for pick-up")):
        d = lc.get(key) or {}
        s = (lc.get("stamped") or {}).get(key) or {}
        rows.append((label, f"n={lc.get('orders', '-')}", fmt(d.get("p50"), nd=1), fmt(d.get("p99"), nd=1),
                     f"max {fmt(d.get('max'), nd=1)} ms, failures {lc.get('failures', '-')}; "
                     f"updatedAt: p50 {fmt(s.get('p50'), nd=1)} p99 {fmt(s.get('p99'), nd=1)}"))
    w = [max(len(str(r[i])) for r in rows) for i in range(5)]
    lines = ["  ".join(str(r[i]).ljust(w[i]) if i in (0, 4) else str(r[i]).rjust(w[i]) for i in range(5)).rstrip()
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))

    rss = res.get("rss_mib") or {}
    lines.append("")
    lines.append("RSS at end (MiB): " + ", ".join(f"{n} {fmt(v, nd=1)}" for n, v in rss.items()))
    for key, label in (("create_max", "max load"), ("create_half", "half load")):
        per = (res.get(key) or {}).get("cpu_s_per_1000_orders") or {}
        if per:
            lines.append(f"CPU s per 1000 orders ({label}, incl. drain): " +
                         ", ".join(f"{n} {fmt(v, nd=3)}" for n, v in per.items() if n != "services_total") +
                         f"; services total {fmt(per.get('services_total'), nd=3)}")
    for key in ("create_max", "create_half"):
        cs = (res.get(key) or {}).get("cpu_s") or {}
        if cs:
            lines.append(f"  {key} over {fmt(cs.get('wall_s'), 's', 1)}: kernel share of service CPU "
                         f"{fmt(cs.get('kernel_share'), nd=2)}; load generator {fmt(cs.get('load_generator'), 's', 2)}, "
                         f"irq+softirq {fmt(cs.get('irq_softirq'), 's', 2)}, other processes on the machine "
                         f"{fmt(cs.get('others_on_machine'), 's', 2)}, stolen by the hypervisor "
                         f"{fmt(cs.get('steal'), 's', 2)}")
    r = res.get("ratios") or {}
    if r.get("create_over_each"):
        lines.append(f"ratio create-order ÷ slowest ceiling on its path ({r['slowest_ceiling']}): "
                     f"{r['create_over_slowest']:.3f}   (÷ each: " +
                     ", ".join(f"{k} {v:.3f}" for k, v in r["create_over_each"].items()) + ")")
    if r.get("end_to_end_over_slowest") is not None:
        lines.append(f"ratio end to end (create at max load incl. its drain) ÷ the same ceiling: "
                     f"{r['end_to_end_over_slowest']:.3f}")
    if r.get("path_ceiling"):
        units = ", ".join(f"{n} x {k}" for k, n in r["path_units_per_order"].items())
        lines.append(f"ceiling of the whole path per order ({units}): {fmt(r['path_ceiling'], '/s')}; "
                     f"create ÷ it {r['create_over_path']:.2f}, end to end ÷ it "
                     f"{fmt(r.get('end_to_end_over_path'), nd=2)}")
    return "\n".join(lines)


def main():
    def on_signal(sig, frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    for name in ("oms-gateway", "oms-orders", "oms-stock"):
        if not os.access(os.path.join(BUILD, name), os.X_OK):
            print(f"bench: {BUILD}/{name} missing; run `make build` first", file=sys.stderr)
            return 1
    t0 = time.monotonic()
    root = tempfile.mkdtemp(prefix="oms-bench-")
    ok = False
    try:
        res = run(root)
        ok = True
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        ok = True  # nothing to look at: remove the temp dir
        return 130
    except (RuntimeError, TimeoutError, OSError, subprocess.CalledProcessError) as e:
        print(f"bench: the system did not start: {e}", file=sys.stderr)
        return 1
    finally:
        if os.environ.get("BENCH_KEEP") or not ok:
            log(f"kept {root} (service logs)")
        else:
            shutil.rmtree(root, ignore_errors=True)
    res["wall_s"] = round(time.monotonic() - t0, 1)

    print()
    try:
        print(table(res))
    except Exception as e:  # noqa: BLE001 - a report bug must not fail `make test`
        print(f"(table failed: {e!r}; the JSON below has every figure)")
    la = res["machine"].get("loadavg_at_start")
    mc = res["machine"]
    print(f"\nwhole run {res['wall_s']} s{' (QUICK)' if QUICK else ''}; {mc['cpus']} CPUs, load average at start "
          f"{la}; build {mc['build_type'] or '?'}{' with sanitizers (slow: not representative)' if mc['sanitizers'] else ''}")
    outdir = os.path.join(HERE, "results")
    os.makedirs(outdir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    suffix = "-quick" if QUICK else ""
    path = os.path.join(outdir, f"{stamp}{suffix}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    shutil.copyfile(path, os.path.join(outdir, f"latest{suffix}.json"))
    print(f"results: {os.path.relpath(path, SRC)} (+ latest{suffix}.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
