"""Two backend instances in two real processes on one real Redis: shared queues, node
leases and the reaper that gives a dead node's open reads back."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import gevent
import gevent.select
import pytest

from tests.conftest import ROOT
from tests.engine.engine_helpers import gevent_wait_until, make_collection

LEASE_TTL = 1.0

#: Node A, monkey patched as the server runs: takes the lease, does what argv[3] says,
#: prints one JSON line, then serves (renews its lease) until it is killed.
NODE_A = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import json, sys
    import gevent
    from tests.engine.engine_helpers import make_collection

    port, prefix, action = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    queues = make_collection(port, prefix, lease_ttl=float(sys.argv[4]))
    queue = queues.get_or_create(b"work")
    report = {"node": queues.engine.node_id}
    if action == "open":
        report["opened"] = [queue.remove(open_read=True).id for _ in range(int(sys.argv[5]))]
    elif action == "stage":  # one open read, then the next item staged as for a blocked reader
        report["opened"] = [queue.remove(open_read=True).id]
        queues.engine.client.lmove(queue.keys.items, queue.keys.staged(report["node"]), "LEFT", "RIGHT")
    elif action == "fanout":
        queues.put(queues.get_or_create(b"feed"), b"from A", 0, 0, 0)
    print(json.dumps(report), flush=True)
    if action == "close":
        queue.remove(open_read=True)
        queues.close_all()
        sys.exit(0)
    while True:
        gevent.sleep(1)
""")


class NodeProcess:
    def __init__(self, port, prefix, action, *extra):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", NODE_A, str(port), prefix, action, str(LEASE_TTL), *map(str, extra)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(ROOT),
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    # This test process is not monkey patched: every wait on node A goes through gevent,
    # so that node B's greenlets (its lease keeper above all) run meanwhile, as they
    # would in a server.
    def report(self, timeout=15.0) -> dict:
        ready, _, _ = gevent.select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.proc.kill()
            raise AssertionError(f"node A said nothing in {timeout}s: {self.proc.stderr.read()!r}")
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        return json.loads(line)

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.wait()

    def wait(self, timeout=10.0) -> int:
        gevent_wait_until(lambda: self.proc.poll() is not None, timeout, "node A to exit", 0.01)
        return self.proc.returncode

    def stop(self):
        if self.proc.poll() is None:
            self.kill9()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def node_b(redis_primary, key_prefix):
    queues = make_collection(redis_primary.port, key_prefix, lease_ttl=LEASE_TTL, reap_batch=2)
    lost = []
    queues.on_lease_lost = lambda: lost.append(True)
    yield queues
    queues.close_all()
    assert not lost, "node B lost its own lease: the test blocked its greenlets"


@pytest.fixture
def spawn_node_a(redis_primary, key_prefix):
    started = []

    def spawn(action, *extra):
        started.append(NodeProcess(redis_primary.port, key_prefix, action, *extra))
        return started[-1]

    yield spawn
    for node in started:
        node.stop()


def test_open_on_a_sigkill_a_the_items_are_back_at_the_head_via_b(node_b, spawn_node_a, redis_client,
                                                                    key_prefix):
    work = node_b.get_or_create(b"work")
    for index in range(7):
        node_b.put(work, b"item%d" % index, 0, 0, 0)
    node_a = spawn_node_a("open", 5)
    report = node_a.report()
    assert report["opened"] == [1, 2, 3, 4, 5]
    assert work.count == 2
    nodes = node_b.nodes()
    assert nodes[report["node"]]["open_reads"] == 5 and nodes[report["node"]]["pid"] == node_a.proc.pid
    assert nodes[node_b.engine.node_id]["open_reads"] == 0
    node_a.kill9()
    killed = time.monotonic()
    # Five open items, given back two per reaper call: done within the lease, plus the
    # reaper's period (a third of it) for each of three batches, plus slack.
    gevent_wait_until(lambda: work.count == 7, LEASE_TTL + 1.0 + 2 * LEASE_TTL / 3,
                      "node A's open reads to come back")
    first_back = time.monotonic() - killed
    taken = [work.remove().data for _ in range(7)]
    assert taken == [b"item%d" % index for index in range(7)]  # oldest at the head
    assert work.stats.canceled_transactions == 5
    assert report["node"] not in node_b.nodes()
    gevent_wait_until(lambda: not redis_client.hexists(f"{key_prefix}:nodes", report["node"]), 2.0,
                      "the dead node to be forgotten once nothing of it is open")
    assert first_back < LEASE_TTL + 1.0 + 2 * LEASE_TTL / 3


def test_the_first_item_is_back_within_the_lease_and_a_second(node_b, spawn_node_a):
    work = node_b.get_or_create(b"work")
    node_b.put(work, b"only", 0, 0, 0)
    node_a = spawn_node_a("open", 1)
    assert node_a.report()["opened"] == [1]
    node_a.kill9()
    killed = time.monotonic()
    gevent_wait_until(lambda: work.count == 1, LEASE_TTL + 1.0, "the open read to come back")
    assert time.monotonic() - killed < LEASE_TTL + 1.0
    assert work.remove(open_read=True).data == b"only"


def test_a_killed_node_s_staged_item_and_open_read_come_back_oldest_first(node_b, spawn_node_a, redis_client):
    """What node A moved into its staging list for a blocked reader (BLMOVE) is given
    back by B's reaper with A's open reads, in their order, ahead of the rest."""
    work = node_b.get_or_create(b"work")
    for index in range(3):
        node_b.put(work, b"item%d" % index, 0, 0, 0)
    node_a = spawn_node_a("stage")
    report = node_a.report()
    assert report["opened"] == [1] and work.count == 1
    assert redis_client.llen(work.keys.staged(report["node"])) == 1
    node_a.kill9()
    gevent_wait_until(lambda: work.count == 3, LEASE_TTL + 1.0 + LEASE_TTL, "A's staged and open items back")
    assert [work.remove().data for _ in range(3)] == [b"item0", b"item1", b"item2"]
    assert redis_client.llen(work.keys.staged(report["node"])) == 0


def test_a_live_node_keeps_its_open_reads(node_b, spawn_node_a):
    work = node_b.get_or_create(b"work")
    node_b.put(work, b"held", 0, 0, 0)
    node_a = spawn_node_a("open", 1)
    node_a.report()
    gevent.sleep(3 * LEASE_TTL)  # three lease periods: A renews, nobody reaps
    assert work.count == 0 and work.remove() is None


def test_a_clean_stop_gives_back_at_once_and_unregisters(node_b, spawn_node_a, redis_client, key_prefix):
    work = node_b.get_or_create(b"work")
    node_b.put(work, b"kept", 0, 0, 0)
    node_a = spawn_node_a("close")
    node = node_a.report()["node"]
    assert node_a.wait() == 0
    assert work.count == 1  # given back by A itself, not by a reaper
    assert not redis_client.hexists(f"{key_prefix}:nodes", node)


def test_a_fanout_written_on_a_is_read_on_b(node_b, spawn_node_a):
    feed = node_b.get_or_create(b"feed")
    child = node_b.get_for_read(b"feed+b")
    spawn_node_a("fanout").report()
    assert child.remove().data == b"from A"
    assert feed.remove().data == b"from A"


def test_a_node_whose_lease_expired_forgets_its_reads_and_registers_anew(node_b, redis_primary, key_prefix,
                                                                         redis_client):
    lost = []
    node_a = make_collection(redis_primary.port, key_prefix, lease_ttl=LEASE_TTL)
    node_a.on_lease_lost = lambda: lost.append(True)
    try:
        work = node_a.get_or_create(b"work")
        node_a.put(work, b"slow", 0, 0, 0)
        opened = work.remove(open_read=True)
        old_node = node_a.engine.node_id
        redis_client.delete(f"{key_prefix}:lease:{old_node}")  # as if A stalled past its TTL
        gevent_wait_until(lambda: lost, 2 * LEASE_TTL, "node A to notice its lease is gone")
        assert node_a.engine.node_id != old_node and not work.open
        assert work.confirm(opened.id) is False  # no longer A's to confirm
        gevent_wait_until(lambda: work.count == 1, 2 * LEASE_TTL, "B's reaper to give the read back")
        assert node_b.lookup(b"work").remove().data == b"slow"
    finally:
        node_a.close_all()


def test_a_node_that_cannot_reach_redis_for_its_lease_gives_up_its_reads(tmp_path):
    """Redis stops answering (SIGSTOP) for longer than the lease: the node must assume
    its open reads were given back, say so, and come back under a new node id."""
    from tests.engine import redis_procs

    server = redis_procs.start_primary(tmp_path)
    lost = []
    node = make_collection(server.port, "stalled", lease_ttl=LEASE_TTL, socket_timeout=0.3)
    node.on_lease_lost = lambda: lost.append(time.monotonic())
    try:
        work = node.get_or_create(b"work")
        node.put(work, b"held", 0, 0, 0)
        opened = work.remove(open_read=True)
        old_node = node.engine.node_id
        server.pause()
        paused = time.monotonic()
        gevent_wait_until(lambda: lost, 3 * LEASE_TTL, "the node to give up its lease")
        assert lost[0] - paused < 2 * LEASE_TTL
        assert not work.open
        server.resume()
        gevent_wait_until(lambda: node.engine.node_id != old_node, 3 * LEASE_TTL, "a new registration")
        # Its own reaper now treats the old id as a dead node.
        gevent_wait_until(lambda: work.count == 1, 3 * LEASE_TTL, "the read to come back")
        assert work.confirm(opened.id) is False
        assert work.remove().data == b"held"
        assert len(lost) == 1
    finally:
        server.resume()
        node.close_all()
        server.stop()


def test_the_reaper_gives_back_in_bounded_batches_newest_first_so_the_oldest_ends_at_the_head(
        redis_primary, key_prefix, redis_client):
    dying = make_collection(redis_primary.port, key_prefix, lease_ttl=LEASE_TTL)
    reaper = make_collection(redis_primary.port, key_prefix, started=False, reap_batch=100)
    reaper.lease.acquire()  # no keeper greenlet: the test calls the reaper itself
    try:
        work = dying.get_or_create(b"work")
        for index in range(1000):
            dying.put(work, b"%04d" % index, 0, 0, 0)
        for _ in range(950):
            work.remove(open_read=True)
        gevent.killall(dying._greenlets)  # it stops renewing, as if frozen
        redis_client.delete(f"{key_prefix}:lease:{dying.engine.node_id}")
        batches = []
        for _ in range(20):
            given = reaper._reap()
            if not given:
                break
            batches.append(given)
        assert batches == [100] * 9 + [50]
        assert work.count == 1000
        assert [work.remove().data for _ in range(1000)] == [b"%04d" % index for index in range(1000)]
        assert dying.engine.node_id not in reaper.nodes()
    finally:
        dying.close_all()
        reaper.close_all()


def test_a_confirm_that_redis_did_not_answer_leaves_the_read_open_for_a_later_give_back(tmp_path):
    from erqpy.storage.engine_redis_queue import EngineUnavailable
    from tests.engine import redis_procs

    server = redis_procs.start_primary(tmp_path)
    node = make_collection(server.port, "unanswered", socket_timeout=0.3)
    try:
        work = node.get_or_create(b"work")
        node.put(work, b"kept", 0, 0, 0)
        opened = work.remove(open_read=True)
        server.pause()
        with pytest.raises(EngineUnavailable):
            work.confirm(opened.id)
        server.resume()
        assert opened.id in work.open
        assert work.unremove(opened.id) is True and work.remove().data == b"kept"
    finally:
        server.resume()
        node.close_all()
        server.stop()
