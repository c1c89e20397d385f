"""A 3-node RabbitMQ cluster (scripts/rabbitmq.sh cluster-start) with quorum queues:
common/amqp.c declares every queue as a quorum queue replicated on all nodes, keeps
delivering when the node it is connected to is killed (-9), and connects to the next
node of RABBITMQ_ADDRS when the first is dead.

The clients are the cluster group of the cmocka test (tests/unit/test_amqp.c), run
with RABBITMQ_ADDRS, RABBITMQ_QUEUE_TYPE=quorum and OMS_TEST_RMQ_CLUSTER_DIR; this file
owns the cluster: it starts it in a temp dir and always stops it, by pid."""
import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from oms_harness import BUILD, SRC, db_backend

# No database is involved: the SQLite pass runs it, the PostgreSQL pass would only
# repeat it (a 3-node cluster costs half a minute to start).
pytestmark = pytest.mark.skipif(db_backend() == "postgres", reason="runs in the SQLite pass")

SCRIPT = os.path.join(SRC, "scripts", "rabbitmq.sh")
NODES = 3


def free_cluster_port(n):
    """A base port P for cluster-start with every port it derives free: AMQP P..P+n-1,
    management P+10000.., Erlang distribution P+20000.. and the epmd P+20000+n, all
    below the kernel's ephemeral range (32768+). P is drawn from 3000..9000, away from
    the single brokers' ranges (oms_harness.free_broker_port, tests/unit/rmq_helper.h)."""
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


class Cluster:
    """The cluster's directory, ports and addresses; stop() is safe to call always."""

    def __init__(self, top):
        self.top = top
        self.dir = None
        self.port = None
        self.addrs = None
        self.start_s = None

    def start(self):
        """Up to three tries on fresh ports (another process may take one between the
        check and the boot), each in a fresh directory."""
        out = ""
        for attempt in range(3):
            self.port = free_cluster_port(NODES)
            self.dir = os.path.join(self.top, f"cluster{attempt + 1}")
            t0 = time.monotonic()
            p = subprocess.run([SCRIPT, "cluster-start", self.dir, str(self.port)], capture_output=True,
                               text=True, env=dict(os.environ, NODES=str(NODES)), timeout=300)
            out = p.stdout + p.stderr
            if p.returncode == 0:
                self.start_s = time.monotonic() - t0
                lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RABBITMQ_ADDRS=")]
                self.addrs = lines[-1].split("=", 1)[1]
                return
            self.stop()
        raise RuntimeError(f"cluster did not start:\n{out[-3000:]}")

    def node_pids(self):
        """{node number: beam pid} for the nodes whose pid file names a live beam of
        this cluster (the script's own check: the command line names the node's HOME)."""
        pids = {}
        for i in range(1, NODES + 1):
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

    def stop(self):
        """cluster-stop (each node by its pid, then the epmd); a beam still alive after
        that is killed by its pid, so a failed test leaves nothing behind."""
        if not self.dir or not os.path.isdir(self.dir):
            return
        subprocess.run([SCRIPT, "cluster-stop", self.dir], stdout=subprocess.DEVNULL, timeout=300, check=False)
        for pid in self.node_pids().values():
            os.kill(pid, signal.SIGKILL)

    def mgmt_port(self, node):
        return self.port + 10000 + node - 1

    def api(self, path, node):
        """GET on node's management API (guest/guest from loopback); parsed JSON."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.mgmt_port(node)}/api/{path}",
                                     headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())


@pytest.fixture(scope="module")
def cluster():
    top = tempfile.mkdtemp(prefix="oms-cluster-")
    c = Cluster(top)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def clients(cluster):
    """The cluster group of test_amqp, run once against the cluster (it kills node 1)."""
    exe = os.path.join(BUILD, "test_amqp")
    assert os.path.exists(exe), f"{exe} is not built"
    env = dict(os.environ, RABBITMQ_ADDRS=cluster.addrs, RABBITMQ_QUEUE_TYPE="quorum",
               OMS_TEST_RMQ_CLUSTER_DIR=cluster.dir)
    t0 = time.monotonic()
    p = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=240)
    p.seconds = time.monotonic() - t0
    return p


def test_clients_fail_over_between_nodes(cluster, clients):
    print(f"cluster started in {cluster.start_s:.1f} s; clients ran {clients.seconds:.1f} s")
    print(clients.stderr[-3000:])
    assert clients.returncode == 0, clients.stdout[-4000:] + clients.stderr[-4000:]
    assert "[  PASSED  ] 3 test(s)." in clients.stdout + clients.stderr  # cmocka splits them
    # The victim really died, by its pid: only nodes 2 and 3 are left.
    assert sorted(cluster.node_pids()) == [2, 3]


def test_declared_queues_are_quorum_on_every_node(cluster, clients):
    assert clients.returncode == 0
    for q in ("cl1.q", "cl1.q.retry", "cl1.q.dlq", "cl2.q", "cl2.q.retry", "cl2.q.dlq", "cl3.q"):
        info = cluster.api("queues/%2F/" + q, node=2)
        assert info["type"] == "quorum", (q, info["type"])
        assert sorted(info["members"]) == [f"oms{i}@localhost" for i in range(1, NODES + 1)], q
        # With node 1 dead the leader is one of the others.
        assert info["leader"] in ("oms2@localhost", "oms3@localhost"), q
    retry = cluster.api("queues/%2F/cl2.q.retry", node=3)["arguments"]
    assert retry["x-dead-letter-routing-key"] == "cl2.q"
    assert retry["x-dead-letter-strategy"] == "at-least-once"
    assert "x-message-ttl" in retry
