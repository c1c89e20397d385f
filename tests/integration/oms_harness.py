"""Starts the real OMS services and infrastructure for integration tests.

Everything runs on private loopback ports chosen at random, with state in a
temporary directory, and is stopped afterwards (also when a test fails). No sleeps
as synchronisation: every wait polls a condition with a deadline.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SRC = os.environ.get("OMS_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("OMS_BUILD_DIR") or os.path.join(SRC, "build")


_GIVEN_PORTS = set()


def free_port():
    """A port the kernel just handed out on 127.0.0.1 (closed again for the service),
    never one this process handed out before: the kernel may offer a just-closed port
    again, and two services of one shop must not be given the same one."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port
    raise RuntimeError("no fresh free port")


def free_port_in(lo, hi):
    """A free port in [lo, hi) (the broker derives its dist/epmd ports from its port)."""
    import random
    for _ in range(200):
        p = random.randrange(lo, hi)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                continue
    raise RuntimeError("no free port")


def free_broker_port():
    """An AMQP port P for a private broker with P, P+20000 (Erlang distribution) and
    P+30000 (epmd) all free. Kept under 2768 so the derived ports stay below the
    kernel's ephemeral range (32768-60999), where an outgoing connection could take
    one between this check and the broker's start."""
    import random
    for _ in range(500):
        p = random.randrange(1100, 2768)
        ok = True
        for q in (p, p + 20000, p + 30000):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", q))
                except OSError:
                    ok = False
                    break
        if ok:
            return p
    raise RuntimeError("no free broker port")


def wait_for(cond, timeout=30.0, what="condition", interval=0.02):
    """Polls cond() until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - the condition may fail while starting
            last_exc = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


def http(method, url, body=None, headers=None, timeout=10):
    """Returns (status, headers, parsed JSON or text)."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        if isinstance(body, (bytes, str)):
            data = body.encode() if isinstance(body, str) else body
        else:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status, rh = r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        raw = e.read()
        status, rh = e.code, dict(e.headers)
    try:
        return status, rh, json.loads(raw) if raw else None
    except ValueError:
        return status, rh, raw.decode(errors="replace")


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class RabbitMQ:
    """A private broker node (scripts/rabbitmq.sh) in its own directory."""

    def __init__(self, root):
        self.dir = os.path.join(root, "rabbitmq")
        self.port = free_broker_port()
        self.mgmt_port = free_port()
        self.running = False
        self.started = False

    def start(self):
        """Starts the node. The first start tries up to three fresh ports (another
        process can take one between the check and the boot); a restart keeps its
        port, since clients are configured with it."""
        script = os.path.join(SRC, "scripts", "rabbitmq.sh")
        attempts = 1 if self.started else 3
        for attempt in range(attempts):
            p = subprocess.run([script, "start", self.dir, str(self.port), str(self.mgmt_port)],
                               stdout=subprocess.DEVNULL)
            if p.returncode == 0:
                self.running = self.started = True
                return
            subprocess.run([script, "stop", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if attempt + 1 < attempts:
                self.port, self.mgmt_port = free_broker_port(), free_port()
                self.dir = f"{self.dir}-{attempt + 2}"
        raise subprocess.CalledProcessError(p.returncode, [script, "start", self.dir, str(self.port)])

    def stop(self):
        if self.running:
            subprocess.run([os.path.join(SRC, "scripts", "rabbitmq.sh"), "stop", self.dir], check=False,
                           stdout=subprocess.DEVNULL)
            self.running = False

    def api(self, path, method="GET", body=None):
        """A call on the management API (guest/guest from loopback); parsed JSON or None."""
        import base64
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.mgmt_port}/api/{path}", data=data, method=method,
                                     headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def add_vhost(self, vhost):
        """A private virtual host, so each test's shop has its own exchanges and queues."""
        q = urllib.request.quote(vhost, safe="")
        self.api(f"vhosts/{q}", "PUT", {})
        self.api(f"permissions/{q}/guest", "PUT", {"configure": ".*", "write": ".*", "read": ".*"})

    def queue(self, name, vhost="/"):
        return self.api("queues/" + urllib.request.quote(vhost, safe="") + "/" + urllib.request.quote(name, safe=""))

    def get_messages(self, name, vhost="/", count=10):
        """Peeks at up to count messages (requeued)."""
        return self.api("queues/" + urllib.request.quote(vhost, safe="") + "/" + urllib.request.quote(name, safe="") + "/get",
                        "POST", {"count": count, "ackmode": "ack_requeue_true", "encoding": "auto"})


def free_cluster_port(n):
    """A base port P for cluster-start with every port it derives free: AMQP P..P+n-1,
    management P+10000.., Erlang distribution P+20000.. and the epmd P+20000+n, all
    below the kernel's ephemeral range (32768+). P is drawn from 3000..9000, away from
    the single brokers' ranges (free_broker_port, tests/unit/rmq_helper.h)."""
    import random
    for _ in range(500):
        p = random.randrange(3000, 9000)
        ports = [p + off + i for off in (0, 10000, 20000) for i in range(n)] + [p + 20000 + n]
        ok = True
        for q in ports:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", q))
                except OSError:
                    ok = False
                    break
        if ok:
            return p
    raise RuntimeError("no free cluster port")


class RabbitCluster(RabbitMQ):
    """An n-node cluster (scripts/rabbitmq.sh cluster-start) in its own directory, used
    where a RabbitMQ is: a shop on it gets RABBITMQ_ADDRS (every node) and quorum
    queues; port, mgmt_port and api() go to the first live node. stop() is safe to call
    always and kills by pid whatever cluster-stop left."""

    def __init__(self, root, nodes=3):
        self.top = root
        self.nodes = nodes
        self.dir = None
        self.base = None
        self.addrs = None
        self.start_s = None
        self.running = self.started = False

    def _script(self, *args, **kw):
        return subprocess.run([os.path.join(SRC, "scripts", "rabbitmq.sh"), *args], capture_output=True, text=True,
                              env=dict(os.environ, NODES=str(self.nodes)), timeout=300, **kw)

    def start(self):
        """Boots the cluster (up to three tries on fresh ports, each in a fresh
        directory); on a started cluster, restarts the nodes that died (they rejoin)."""
        if self.started:
            p = self._script("cluster-start", self.dir, str(self.base))
            if p.returncode != 0:
                raise RuntimeError(f"cluster restart failed:\n{(p.stdout + p.stderr)[-3000:]}")
            self.running = True
            return
        out = ""
        for attempt in range(3):
            self.base = free_cluster_port(self.nodes)
            self.dir = os.path.join(self.top, f"cluster{attempt + 1}")
            t0 = time.monotonic()
            p = self._script("cluster-start", self.dir, str(self.base))
            out = p.stdout + p.stderr
            if p.returncode == 0:
                self.start_s = time.monotonic() - t0
                lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RABBITMQ_ADDRS=")]
                self.addrs = lines[-1].split("=", 1)[1]
                self.running = self.started = True
                return
            self.dir_stop()
        raise RuntimeError(f"cluster did not start:\n{out[-3000:]}")

    def node_pids(self):
        """{node number: beam pid} for the nodes whose pid file names a live beam of
        this cluster (the script's own check: the command line names the node's HOME)."""
        pids = {}
        for i in range(1, self.nodes + 1):
            try:
                with open(os.path.join(self.dir, f"node{i}", "rabbit.pid")) as f:
                    pid = int(f.read().strip())
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError):
                continue
            if os.path.join(self.dir, f"node{i}", "home") in cmd:
                pids[i] = pid
        return pids

    def kill_node(self, i):
        """kill -9 of node i's beam; returns its pid."""
        pid = self.node_pids()[i]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: i not in self.node_pids(), 30, f"node {i} gone")
        return pid

    def dir_stop(self):
        if not self.dir or not os.path.isdir(self.dir):
            return
        self._script("cluster-stop", self.dir, check=False)
        for pid in self.node_pids().values():
            os.kill(pid, signal.SIGKILL)

    def stop(self):
        self.dir_stop()
        self.running = False

    def live_node(self):
        live = sorted(self.node_pids())
        return live[0] if live else 1

    @property
    def port(self):
        return self.base + self.live_node() - 1

    @property
    def mgmt_port(self):
        return self.base + 10000 + self.live_node() - 1

    def node_mgmt_port(self, node):
        return self.base + 10000 + node - 1

    def api(self, path, method="GET", body=None, node=None):
        """A call on a node's management API (default: the first live node)."""
        import base64
        port = self.node_mgmt_port(node) if node else self.mgmt_port
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/{path}", data=data, method=method,
                                     headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return json.loads(raw) if raw else None


class Postgres:
    """A private PostgreSQL server (scripts/postgres.sh) shared by a test session; each
    service of each shop gets its own database in it. The server runs as the postgres
    user, so its directory lives in a world-traversable temp dir of its own."""

    def __init__(self):
        self.top = tempfile.mkdtemp(prefix="oms-pg-")
        os.chmod(self.top, 0o755)
        self.dir = os.path.join(self.top, "pg")
        self.port = free_port()
        self.running = False
        self.count = 0

    def start(self):
        env = dict(os.environ, PG_NO_FSYNC="1")
        subprocess.run([os.path.join(SRC, "scripts", "postgres.sh"), "start", self.dir, str(self.port)],
                       check=True, stdout=subprocess.DEVNULL, env=env)
        self.running = True

    def stop(self):
        if self.running:
            subprocess.run([os.path.join(SRC, "scripts", "postgres.sh"), "stop", self.dir], check=False,
                           stdout=subprocess.DEVNULL)
            self.running = False
        shutil.rmtree(self.top, ignore_errors=True)

    def psql(self, sql, db="postgres"):
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
                              "-tAc", sql], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def create_db(self, hint):
        """A new, empty database; returns its DATABASE_URL."""
        self.count += 1
        name = "".join(c if c.isalnum() else "_" for c in hint.lower())[:40] + f"_{self.count}"
        self.psql(f"CREATE DATABASE {name}")
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"


_POSTGRES = None


def postgres():
    """The session's PostgreSQL server, started on first use (stop_postgres ends it)."""
    global _POSTGRES
    if _POSTGRES is None:
        pg = Postgres()
        try:
            pg.start()
        except Exception:
            pg.stop()
            raise
        _POSTGRES = pg
    return _POSTGRES


def stop_postgres():
    global _POSTGRES
    if _POSTGRES is not None:
        _POSTGRES.stop()
        _POSTGRES = None


class Etcd:
    """A private etcd node (scripts/etcd.sh) shared by a test session; each shop keeps
    its registry under its own key prefix."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="oms-etcd-")
        self.port = free_port_in(20000, 40000)
        self.url = f"http://127.0.0.1:{self.port}"
        self.running = False

    def start(self):
        env = dict(os.environ, ETCD_PEER_PORT=str(free_port()))
        subprocess.run([os.path.join(SRC, "scripts", "etcd.sh"), "start", self.dir, str(self.port)],
                       check=True, stdout=subprocess.DEVNULL, env=env)
        self.running = True

    def stop(self):
        if self.running:
            subprocess.run([os.path.join(SRC, "scripts", "etcd.sh"), "stop", self.dir], check=False,
                           stdout=subprocess.DEVNULL)
            self.running = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def call(self, path, body):
        st, _, out = http("POST", self.url + path, body)
        assert st == 200, (path, st, out)
        return out

    def keys(self, prefix):
        """{key: value} of everything under prefix (decoded)."""
        import base64
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        out = self.call("/v3/kv/range", {"key": base64.b64encode(prefix.encode()).decode(),
                                         "range_end": base64.b64encode(end.encode()).decode()})
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
                for kv in out.get("kvs", [])}


_ETCD = None


def etcd():
    """The session's etcd node, started on first use (stop_etcd ends it)."""
    global _ETCD
    if _ETCD is None:
        e = Etcd()
        try:
            e.start()
        except Exception:
            e.stop()
            raise
        _ETCD = e
    return _ETCD


def stop_etcd():
    global _ETCD
    if _ETCD is not None:
        _ETCD.stop()
        _ETCD = None


def db_backend():
    """"postgres" when the suite runs against PostgreSQL (OMS_TEST_DB=postgres)."""
    return os.environ.get("OMS_TEST_DB", "sqlite")


class Service:
    """One service process with its environment, log file and clean stop."""

    def __init__(self, name, env, logdir, health_url=None, grpc_port=None, label=None):
        self.name = name
        self.label = label or name
        self.env = env
        self.log_path = os.path.join(logdir, f"{self.label}.log")
        self.health_url = health_url
        self.grpc_port = grpc_port
        self.proc = None

    def start(self, wait=True):
        exe = os.path.join(BUILD, f"oms-{self.name}")
        env = dict(os.environ)
        env.update({k: str(v) for k, v in self.env.items()})
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([exe], env=env, cwd=SRC, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout=30):
        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            if self.health_url:
                return http("GET", self.health_url, timeout=1)[0] == 200
            return port_open(self.grpc_port)
        wait_for(up, timeout, f"{self.name} to start")

    def tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit code (0 = clean, no leaks under ASan)."""
        if not self.proc:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self.log.close()
                return "timeout"
        self.log.close()
        return self.proc.returncode


class Shop:
    """The whole system on private ports: broker + stock, orders, gateway (+ payments,
    kitchen when built). env: extra environment for every service."""

    SERVICES = ["stock", "orders", "payments", "kitchen", "gateway"]

    def __init__(self, rabbit, root, catalog=None, env=None, services=None, db=None, instances=None,
                 discovery=None):
        self.rabbit = rabbit
        self.root = root
        self.dir = tempfile.mkdtemp(prefix="shop-", dir=root)
        # db: "sqlite" (a file per service) or "postgres" (a database per service in the
        # session's server); default from OMS_TEST_DB. instances: {"orders": 2, ...}
        # starts extra instances sharing the first one's database (PostgreSQL only).
        self.db = db or db_backend()
        self.db_urls = {}
        self.instances = dict(instances or {})
        self.extra_ports = {n: [{"grpc": free_port(), "admin": free_port()} for _ in range(k - 1)]
                            for n, k in self.instances.items()}
        # discovery="etcd": every service registers in / resolves from the session's etcd
        # under this shop's own prefix, with a short TTL and poll so tests stay quick.
        self.discovery = discovery
        self.etcd_prefix = "/oms-test/" + os.path.basename(self.dir)
        self.ports = {k: free_port() for k in ["orders_grpc", "orders_admin", "stock_grpc", "stock_admin", "payments_grpc",
                                               "payments_http", "kitchen_grpc", "kitchen_admin", "gateway_http"]}
        self.catalog = catalog
        self.extra = dict(env or {})
        self.wanted = services or [s for s in self.SERVICES if os.path.exists(os.path.join(BUILD, f"oms-{s}"))]
        self.svc = {}
        self.vhost = "shop-" + os.path.basename(self.dir)
        if rabbit:
            rabbit.add_vhost(self.vhost)
        p = self.ports
        self.gateway = f"http://127.0.0.1:{p['gateway_http']}"
        self.stock_admin = f"http://127.0.0.1:{p['stock_admin']}"
        self.orders_admin = f"http://127.0.0.1:{p['orders_admin']}"
        self.payments = f"http://127.0.0.1:{p['payments_http']}"
        self.kitchen_admin = f"http://127.0.0.1:{p['kitchen_admin']}"

    def common_env(self):
        env = {
            "LOG_LEVEL": "debug",
            "RABBITMQ_HOST": "127.0.0.1",
            "RABBITMQ_PORT": self.rabbit.port if self.rabbit else 1,
            "RABBITMQ_VHOST": self.vhost,
            "RETRY_DELAY_MS": 100,
            "MAX_RETRIES": 3,
            "KITCHEN_COOK_MS": 0,
            "ORDERS_ADDRS": self.addrs("orders"),
            "STOCK_ADDRS": self.addrs("stock"),
            "PAYMENTS_ADDRS": f"127.0.0.1:{self.ports['payments_grpc']}",
            "PUBLIC_URL": self.gateway,
            "GATEWAY_HTTP_ADDR": self.gateway,
            "PAYMENTS_PUBLIC_URL": self.payments,
            "KITCHEN_ADMIN_URL": self.kitchen_admin,
            "STRIPE_WEBHOOK_SECRET": "whsec_test_secret",
            # Tests place many unpaid orders for one customer; the limit has its own test.
            "MAX_OPEN_ORDERS": 0,
            # The gateway's first staff account (listing a customer's orders needs it).
            "OMS_ADMIN_PASSWORD": STAFF_PASSWORD,
            # Under the sanitizers a request takes ~10x as long, so a test's burst of a
            # dozen concurrent requests would wait past the 10 ms default and be refused;
            # the bound has its own tests (test_sse.py, test_http_edges.c).
            "HTTP_MAX_QUEUE_MS": 0,
        }
        if getattr(self.rabbit, "addrs", None):   # a RabbitCluster: every node, replicated queues
            env.update(RABBITMQ_ADDRS=self.rabbit.addrs, RABBITMQ_QUEUE_TYPE="quorum")
        if self.discovery == "etcd":
            env.update(DISCOVERY="etcd", ETCD_ENDPOINTS=etcd().url, ETCD_PREFIX=self.etcd_prefix,
                       DISCOVERY_TTL=2, DISCOVERY_POLL_MS=200)
        env.update(self.extra)
        # None in extra: the service's own default instead of the harness's.
        return {k: v for k, v in env.items() if v is not None}

    def registered(self, name):
        """The addresses registered for name in this shop's etcd prefix."""
        return sorted(etcd().keys(f"{self.etcd_prefix}/services/{name}/").values())

    def env_for(self, name):
        p = self.ports
        env = self.common_env()
        env["DATABASE_URL"] = self.database_url(name)
        if name == "stock":
            env.update(GRPC_ADDR=f"127.0.0.1:{p['stock_grpc']}", ADMIN_ADDR=f"127.0.0.1:{p['stock_admin']}")
            if self.catalog is not None:
                path = os.path.join(self.dir, "catalog.json")
                with open(path, "w") as f:
                    json.dump(self.catalog, f)
                env["CATALOG_FILE"] = path
        elif name == "orders":
            env.update(GRPC_ADDR=f"127.0.0.1:{p['orders_grpc']}", ADMIN_ADDR=f"127.0.0.1:{p['orders_admin']}")
        elif name == "payments":
            env.update(GRPC_ADDR=f"127.0.0.1:{p['payments_grpc']}", PAYMENTS_HTTP_ADDR=f"127.0.0.1:{p['payments_http']}")
        elif name == "kitchen":
            env.update(GRPC_ADDR=f"127.0.0.1:{p['kitchen_grpc']}", ADMIN_ADDR=f"127.0.0.1:{p['kitchen_admin']}")
        elif name == "gateway":
            env.update(HTTP_ADDR=f"127.0.0.1:{p['gateway_http']}", PUBLIC_DIR=os.path.join(SRC, "gateway", "public"))
        return env

    def health_url(self, name):
        return {
            "stock": self.stock_admin + "/healthz",
            "orders": self.orders_admin + "/healthz",
            "payments": self.payments + "/healthz",
            "kitchen": self.kitchen_admin + "/healthz",
            "gateway": self.gateway + "/healthz",
        }[name]

    def make(self, name):
        return Service(name, self.env_for(name), self.dir, health_url=self.health_url(name))

    def addrs(self, name):
        """The comma list of name's gRPC addresses (all instances: static round robin)."""
        ports = [self.ports[f"{name}_grpc"]] + [e["grpc"] for e in self.extra_ports.get(name, [])]
        return ",".join(f"127.0.0.1:{p}" for p in ports)

    def database_url(self, name):
        """name's database: a SQLite file in the shop's directory, or a PostgreSQL
        database created on first use; every instance of name shares it."""
        if name not in self.db_urls:
            if self.db == "postgres":
                self.db_urls[name] = postgres().create_db(f"{os.path.basename(self.dir)}_{name}")
            else:
                self.db_urls[name] = os.path.join(self.dir, f"{name}.db")
        return self.db_urls[name]

    def scalar(self, name, sql, params=()):
        """First column of the first row of sql (with ? placeholders) on name's database,
        SQLite or PostgreSQL alike; None when there is no row."""
        if self.db == "postgres":
            def lit(v):
                return str(int(v)) if isinstance(v, int) else "'" + str(v).replace("'", "''") + "'"
            parts = sql.split("?")
            assert len(parts) == len(params) + 1, sql
            text = parts[0] + "".join(lit(v) + rest for v, rest in zip(params, parts[1:]))
            dbname = self.database_url(name).rsplit("/", 1)[1]
            out = postgres().psql(text, db=dbname)
            return int(out) if out.lstrip("-").isdigit() else (out or None)
        import sqlite3
        db = sqlite3.connect(self.database_url(name))
        try:
            row = db.execute(sql, params).fetchone()
            return row[0] if row else None
        finally:
            db.close()

    def execute(self, name, sql, params=()):
        """Runs a statement that changes name's database (? placeholders), committed."""
        if self.db == "postgres":
            self.scalar(name, sql, params)
            return
        import sqlite3
        db = sqlite3.connect(self.database_url(name), timeout=10)
        try:
            db.execute(sql, params)
            db.commit()
        finally:
            db.close()

    def make_instance(self, name, i):
        """Instance i (1-based: 0 is make(name)) of name, on its own ports."""
        e = self.extra_ports[name][i - 1]
        env = self.env_for(name)
        admin = f"127.0.0.1:{e['admin']}"
        env["GRPC_ADDR"] = f"127.0.0.1:{e['grpc']}"
        if name == "payments":
            env["PAYMENTS_HTTP_ADDR"] = admin
        else:
            env["ADMIN_ADDR"] = admin
        return Service(name, env, self.dir, health_url=f"http://{admin}/healthz", label=f"{name}-{i + 1}")

    def instance_key(self, name, i):
        return name if i == 0 else f"{name}-{i + 1}"

    def admin_url(self, name, i=0):
        """Base URL of instance i's admin (or, for payments, HTTP) server."""
        if i == 0:
            return self.health_url(name)[: -len("/healthz")]
        return f"http://127.0.0.1:{self.extra_ports[name][i - 1]['admin']}"

    def grpc_addr(self, name, i=0):
        return self.addrs(name).split(",")[i]

    def restart_instance(self, name, i):
        key = self.instance_key(name, i)
        self.svc[key] = (self.make(name) if i == 0 else self.make_instance(name, i)).start()
        return self.svc[key]

    def start(self):
        for name in self.wanted:
            self.svc[name] = self.make(name).start()
            for i in range(1, self.instances.get(name, 1)):
                self.svc[self.instance_key(name, i)] = self.make_instance(name, i).start()
        return self

    def restart(self, name):
        self.svc[name] = self.make(name).start()

    def stop(self):
        """Stops every service; returns {name: exit code}."""
        codes = {}
        for name in reversed(list(self.svc)):
            codes[name] = self.svc[name].stop()
        return codes

    def logs(self):
        return "\n".join(f"---- {n} ----\n{s.tail(60)}" for n, s in self.svc.items())

    # ---- broker helpers (this shop's virtual host) ----------------------------------
    @property
    def amqp_url(self):
        return f"amqp://guest:guest@127.0.0.1:{self.rabbit.port}/" + urllib.request.quote(self.vhost, safe="")

    def queue(self, name):
        return self.rabbit.queue(name, self.vhost)

    def publish(self, exchange, body, message_id=None):
        """Publishes a persistent JSON event into this shop's broker vhost (amqp-tools)."""
        import uuid
        mid = message_id or uuid.uuid4().hex
        subprocess.run(["amqp-publish", "--url", self.amqp_url, "-e", exchange, "-C", "application/json", "-p",
                        "-H", f"message-id: {mid}", "-b", body if isinstance(body, str) else json.dumps(body)],
                       check=True)
        return mid

    # ---- API helpers ---------------------------------------------------------------
    def create(self, customer, items, headers=None, raw=None):
        url = f"{self.gateway}/api/customers/{customer}/orders"
        if raw is not None:
            return http("POST", url, raw, headers=headers)
        return http("POST", url, {"items": items}, headers=headers)

    def staff_cookie(self):
        """{"Cookie": ...} of a staff session (admin, signed in once per shop)."""
        if not getattr(self, "_staff_cookie", None):
            pw = self.extra.get("OMS_ADMIN_PASSWORD", STAFF_PASSWORD)
            st, hdrs, body = http("POST", f"{self.gateway}/staff/login", {"name": "admin", "password": pw})
            assert st == 200, (st, body)
            self._staff_cookie = {"Cookie": hdrs["Set-Cookie"].split(";", 1)[0]}
        return self._staff_cookie

    def list_orders(self, customer, query=""):
        """GET /api/customers/{customer}/orders[?query] as staff: (status, headers, body)."""
        return http("GET", f"{self.gateway}/api/customers/{customer}/orders" + (f"?{query}" if query else ""),
                    headers=self.staff_cookie())

    def get(self, customer, order_id):
        return http("GET", f"{self.gateway}/api/customers/{customer}/orders/{order_id}")

    def stock(self):
        st, _, body = http("GET", self.stock_admin + "/stock")
        assert st == 200, body
        return {p["productID"]: p for p in body["products"]}

    def wait_status(self, customer, order_id, status, timeout=30):
        def reached():
            st, _, body = self.get(customer, order_id)
            return body if st == 200 and body["status"] == status else None
        return wait_for(reached, timeout, f"order {order_id} to become {status!r}")


STAFF_PASSWORD = "harness-staff-password"


def serve_shop(rabbit, workdir, **kw):
    """The body of a module-scoped shop fixture: starts a Shop(rabbit, workdir, **kw)
    (logs printed if it cannot), yields it, stops it and asserts every service exited
    0. Use as `yield from serve_shop(rabbit, workdir, env={...})`."""
    s = Shop(rabbit, workdir, **kw)
    try:
        s.start()
    except Exception:
        s.stop()
        print(s.logs())
        raise
    yield s
    codes = s.stop()
    bad = {n: c for n, c in codes.items() if c != 0}
    assert not bad, f"services did not stop cleanly: {bad}\n{s.logs()}"


def grpc_stubs(outdir):
    """Generates Python stubs for proto/oms.proto with Debian's grpc_tools; returns
    (pb2, pb2_grpc) modules."""
    os.makedirs(outdir, exist_ok=True)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{SRC}/proto", f"--python_out={outdir}",
                    f"--grpc_python_out={outdir}", f"{SRC}/proto/oms.proto"], check=True)
    sys.path.insert(0, outdir)
    import oms_pb2  # noqa: E402
    import oms_pb2_grpc  # noqa: E402
    return oms_pb2, oms_pb2_grpc
