"""A 3-node RabbitMQ cluster (scripts/rabbitmq.sh cluster-start) with quorum queues:
common/amqp.c declares every queue as a quorum queue replicated on all nodes, keeps
delivering when the node it is connected to is killed (-9), and connects to the next
node of RABBITMQ_ADDRS when the first is dead.

The clients are the cluster group of the cmocka test (tests/unit/test_amqp.c), run
with RABBITMQ_ADDRS, RABBITMQ_QUEUE_TYPE=quorum and OMS_TEST_RMQ_CLUSTER_DIR; this file
owns the cluster: it starts it in a temp dir and always stops it, by pid."""
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from oms_harness import BUILD, RabbitCluster, db_backend

# No database is involved: the SQLite pass runs it, the PostgreSQL pass would only
# repeat it (a 3-node cluster costs half a minute to start).
pytestmark = pytest.mark.skipif(db_backend() == "postgres", reason="runs in the SQLite pass")

NODES = 3


@pytest.fixture(scope="module")
def cluster():
    top = tempfile.mkdtemp(prefix="oms-cluster-")
    c = RabbitCluster(top, NODES)
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
