"""Per-queue settings from a TOML file (``erqpy serve --config``), black-box.

Each setting is shown doing what it says on a real server: limits refuse or discard,
ages expire, read-behind keeps memory bounded, journals stay bounded, memory-only queues
leave no file, fsync follows the queue's policy, stale reads are given back, idle queues
are deleted, fanout-only masters store nothing.  Then inheritance (built-in defaults <
``[queues.default]`` < the master's table for a child < the queue's own table), ``erqctl
reload --config`` on live queues, and every per-queue stats field.

Most settings share one module server whose file gives each queue its own table (no
``[queues.default]``, which would change them all); tests that restart, reload or watch
fsync start their own.
"""

import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import ErqServer
from proto_helpers import get, put, set_cmd, stats, wait_until

TIMEOUT = 30.0

SHARED_CONFIG = """
[queues.limited]
max_items = 3

[queues.sized]
max_size = 100

[queues.small]
max_item_size = 10

[queues.aged]
max_age = 1

[queues.ring]
max_items = 3
discard_old_when_full = true

[queues.src]
expire_to = "dlq"

[queues.behind]
max_memory_size = 4096
max_journal_size = 16384

[queues.wide]
max_memory_size = 262144
max_journal_size = 8192

[queues.churn]
max_journal_size = 16384

[queues.deepchurn]
max_memory_size = 4096
max_journal_size = 16384

[queues.slow]
open_read_timeout = 1

[queues.temp]
max_queue_age = 1

[queues.tempfull]
max_queue_age = 1

[queues.fan]
fanout_only = true

[queues.statq]
max_memory_size = 4096
max_journal_size = 8192
"""

QUEUE_FIELDS = (
    "items bytes total_items logsize expired_items mem_items mem_bytes age discarded waiters "
    "open_transactions transactions canceled_transactions total_flushes journal_rewrites "
    "journal_rotations delayed"
).split()
SERVER_FIELDS = (
    "pid uptime time version curr_connections total_connections cmd_get cmd_set cmd_peek "
    "get_hits get_misses bytes_read bytes_written curr_items total_items bytes queue_creates "
    "queue_deletes queue_expires"
).split()


def write_toml(directory: Path, text: str, name: str = "erqpy.toml") -> Path:
    path = Path(directory) / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One server for the settings that need no restart; each test has its own queue."""
    base = tmp_path_factory.mktemp("settings")
    config = write_toml(base, SHARED_CONFIG)
    server = ErqServer(base / "data", ["--config", str(config)]).start()
    yield server
    server.stop()


@pytest.fixture
def conn(srv):
    client = srv.raw()
    yield client
    client.close()


def qstats(server, queue: str) -> dict:
    """The ``queue_<queue>_*`` stats as ints (strings where not numeric); {} if absent."""
    prefix = f"queue_{queue}_"
    out = {}
    for key, value in stats(server).items():
        if key.startswith(prefix) and key[len(prefix):] in QUEUE_FIELDS + ["children"]:
            out[key[len(prefix):]] = int(value) if value.lstrip("-").isdigit() else value
    return out


def store(client, queue: str, data: bytes, exptime: int = 0) -> bytes:
    return client.call(set_cmd(queue, data, exptime=exptime), timeout=TIMEOUT)


def values(client, key: str) -> list[bytes]:
    """The data of every VALUE in one get reply."""
    reply = get(client, key, TIMEOUT)
    out = []
    while reply.startswith(b"VALUE "):
        header, rest = reply.split(b"\r\n", 1)
        length = int(header.split()[3])
        out.append(rest[:length])
        reply = rest[length + 2 :]
    assert b"END\r\n" == reply
    return out


def drain(client, queue: str, limit: int = 10_000) -> list[bytes]:
    out = []
    for _ in range(limit):
        got = values(client, queue)
        if not got:
            return out
        out.extend(got)
    raise AssertionError(f"{queue} did not drain")


def numbered(i: int, size: int = 1000) -> bytes:
    head = b"item-%06d-" % i
    return head + b"." * (size - len(head))


def queue_files(server, queue: str) -> list[str]:
    return sorted(n for n in os.listdir(server.data_dir) if n.startswith(queue + "."))


# -- limits --------------------------------------------------------------------------------


def test_max_items_refuses_a_set_beyond_it(srv, conn):
    """With max_items = 3 the fourth set gets NOT_STORED; after a get there is room again."""
    replies = [store(conn, "limited", b"x%d" % i) for i in range(4)]

    assert [b"STORED\r\n"] * 3 + [b"NOT_STORED\r\n"] == replies
    assert 3 == qstats(srv, "limited")["items"]
    assert [b"x0"] == values(conn, "limited")
    assert b"STORED\r\n" == store(conn, "limited", b"x4")
    assert [b"x1", b"x2", b"x4"] == drain(conn, "limited")


def test_max_size_refuses_a_set_that_would_pass_it(srv, conn):
    """With max_size = 100 payload bytes, sets up to exactly 100 are stored, one more is not."""
    replies = [store(conn, "sized", data) for data in (b"a" * 60, b"b" * 40, b"c")]

    assert [b"STORED\r\n", b"STORED\r\n", b"NOT_STORED\r\n"] == replies
    assert 100 == qstats(srv, "sized")["bytes"]


def test_max_item_size_refuses_larger_items_and_keeps_the_stream_in_step(srv, conn):
    """With max_item_size = 10, an 11-byte item and a 100 KB one get NOT_STORED, the
    connection stays usable, and a 10-byte item is stored."""
    replies = [store(conn, "small", data) for data in (b"0123456789A", b"z" * 100_000, b"0123456789")]

    assert [b"NOT_STORED\r\n", b"NOT_STORED\r\n", b"STORED\r\n"] == replies
    assert [b"0123456789"] == values(conn, "small")


def test_max_age_caps_every_items_life(srv, conn):
    """With max_age = 1 s, an item set to live an hour (or forever) is expired after a
    second: never returned, and counted as expired."""
    assert b"STORED\r\n" == store(conn, "aged", b"forever", exptime=0)
    assert b"STORED\r\n" == store(conn, "aged", b"an-hour", exptime=3600)

    wait_until(lambda: qstats(srv, "aged")["items"] == 0, timeout=TIMEOUT, what="both items expired")

    assert [] == values(conn, "aged")
    assert 2 == qstats(srv, "aged")["expired_items"]


def test_discard_old_when_full_drops_the_head(srv, conn):
    """With max_items = 3 and discard_old_when_full, five sets are all stored, the two
    oldest items are dropped and counted in `discarded`."""
    replies = [store(conn, "ring", b"r%d" % i) for i in range(5)]

    assert [b"STORED\r\n"] * 5 == replies
    assert 2 == qstats(srv, "ring")["discarded"]
    assert [b"r2", b"r3", b"r4"] == drain(conn, "ring")


def test_expire_to_moves_expired_items_without_any_read(srv, conn):
    """An item that expires in a queue with expire_to = "dlq" is moved there by the
    periodic sweep, with no read on the source queue."""
    assert b"STORED\r\n" == store(conn, "src", b"late", exptime=1)

    wait_until(lambda: qstats(srv, "dlq").get("items") == 1, timeout=TIMEOUT, what="item moved to dlq")

    assert 0 == qstats(srv, "src")["items"]
    assert 1 == qstats(srv, "src")["expired_items"]
    assert [b"late"] == values(conn, "dlq")


# -- storage ---------------------------------------------------------------------------------


def test_max_memory_size_keeps_a_deep_queue_working_with_bounded_memory(srv, conn):
    """A queue 50 times deeper than max_memory_size = 4096 takes every set; its stats
    count every item while mem_bytes stays near the budget (while full and while
    draining), segment files rotate, and the items come back in order."""
    put(conn, "behind", *[numbered(i) for i in range(200)])
    full = qstats(srv, "behind")
    segments = [name for name in queue_files(srv, "behind") if name.endswith(".seg")]
    memory_seen = [full["mem_bytes"]]
    out = []
    for _ in range(200):
        got = values(conn, "behind")
        if not got:
            break
        out.extend(got)
        if len(out) % 20 == 0:
            memory_seen.append(qstats(srv, "behind")["mem_bytes"])

    assert (200, 200 * 1000) == (full["items"], full["bytes"])
    assert full["mem_items"] <= 5
    assert full["journal_rotations"] >= 5
    assert len(segments) >= 5
    assert max(memory_seen) <= 4096 + 1000  # the budget, passed by at most one item
    assert [numbered(i) for i in range(200)] == out


def test_draining_a_deep_queue_frees_segments_as_it_goes_with_few_journal_rewrites(srv, conn):
    """A queue with a memory window (256 KiB) many segments wide (8 KiB) deletes its
    consumed segments while it is drained, and rewrites its journal a handful of times
    for 800 items, not once per item."""
    put(conn, "wide", *[numbered(i) for i in range(800)])
    full = qstats(srv, "wide")
    segments_full = len([n for n in queue_files(srv, "wide") if n.endswith(".seg")])
    out = []
    for _ in range(600):
        out.extend(values(conn, "wide"))
    segments_left = len([n for n in queue_files(srv, "wide") if n.endswith(".seg")])
    out.extend(drain(conn, "wide"))

    assert [numbered(i) for i in range(800)] == out
    assert full["journal_rotations"] >= 50
    assert segments_left <= segments_full * 2 // 3  # 600 of 800 gone: freed on the way
    assert qstats(srv, "wide")["journal_rewrites"] <= 12


@pytest.mark.parametrize("queue, backlog", [("churn", 0), ("deepchurn", 40)])
def test_max_journal_size_bounds_logsize_under_churn(srv, conn, queue, backlog):
    """Through 1,500 set/get pairs of 1 KiB (with the queue empty, or 40 items deep when
    its memory holds 4), logsize stays within three max_journal_size (16 KiB) of the live
    data; the journal is rewritten again and again."""
    put(conn, queue, *[numbered(i) for i in range(backlog)])
    largest = 0
    for i in range(backlog, backlog + 1500):
        assert b"STORED\r\n" == store(conn, queue, numbered(i))
        assert [numbered(i - backlog)] == values(conn, queue)
        if i % 25 == 0:
            largest = max(largest, qstats(srv, queue)["logsize"])
    final = qstats(srv, queue)

    assert backlog == final["items"]
    assert final["journal_rewrites"] >= 10
    assert largest <= backlog * 1000 + 3 * 16384


def test_keep_journal_false_makes_a_memory_only_queue(make_server, tmp_path):
    """A queue with keep_journal = false works but writes no file, and is empty after a
    restart; a journaled queue beside it keeps its items."""
    config = write_toml(tmp_path, """
        [queues.volatile]
        keep_journal = false
    """)
    server = make_server("--config", str(config))
    client = server.raw()
    put(client, "volatile", b"v1", b"v2")
    put(client, "kept", b"k1")

    assert 2 == qstats(server, "volatile")["items"]
    assert 0 == qstats(server, "volatile")["logsize"]
    assert [] == queue_files(server, "volatile")
    assert ["kept.journal"] == queue_files(server, "kept")
    client.close()
    server.kill9()
    server.start()
    client = server.raw()
    assert [] == values(client, "volatile")
    assert [b"k1"] == values(client, "kept")
    client.close()


FSYNC_PROBE = '''
"""Test probe: log the file behind every os.fsync the server makes (the real fsync runs)."""
import os

_path = os.environ.get("FSYNC_PROBE_LOG")
if _path:
    _real_fsync = os.fsync

    def _logged_fsync(fd):
        _real_fsync(fd)
        try:
            name = os.readlink("/proc/self/fd/%d" % fd)
        except OSError:
            name = "?"
        out = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(out, (os.path.basename(name) + "\\n").encode())
        finally:
            os.close(out)

    os.fsync = _logged_fsync
'''


def test_per_queue_fsync_policy_overrides_the_servers(make_server, tmp_path):
    """With the server at fsync = "never": a queue set to "always" has its journal fsynced
    before STORED is sent, one set to "interval" within moments, one left at the server's
    policy never; a reload that sets "always" on the last takes effect at once.  (A
    sitecustomize probe in the server process logs each fsync's file.)"""
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    (probe_dir / "sitecustomize.py").write_text(FSYNC_PROBE)
    fsync_log = tmp_path / "fsync.log"
    text = """
        [server]
        fsync = "never"

        [queues.durable]
        fsync = "always"

        [queues.batched]
        fsync = "interval"
    """
    config = write_toml(tmp_path, text)
    env = {"PYTHONPATH": str(probe_dir), "FSYNC_PROBE_LOG": str(fsync_log)}
    server = make_server("--config", str(config), env=env)

    def synced() -> list[str]:
        return fsync_log.read_text().split() if fsync_log.exists() else []

    client = server.raw()
    put(client, "lazy", b"l1")
    put(client, "batched", b"b1")
    put(client, "durable", b"d1")
    assert "durable.journal" in synced()  # before STORED came back
    wait_until(lambda: "batched.journal" in synced(), timeout=TIMEOUT, what="the interval fsync")
    put(client, "lazy", b"l2")
    rounds = synced().count("batched.journal")
    put(client, "batched", b"b2")
    # The interval round that fsyncs b2 began after l2 was written (batched was clean
    # until b2): it would have fsynced lazy too, were lazy's policy "interval".
    wait_until(lambda: synced().count("batched.journal") > rounds, timeout=TIMEOUT, what="the next interval fsync")
    assert "lazy.journal" not in synced()

    write_toml(tmp_path, text + '\n[queues.lazy]\nfsync = "always"\n')
    server.ctl("reload", "--config", check=True)
    put(client, "lazy", b"l3")

    assert "lazy.journal" in synced()
    client.close()


# -- open reads and queue lifetime -------------------------------------------------------------


def test_open_read_timeout_gives_a_stale_read_back(srv):
    """With open_read_timeout = 1 s, a read left open goes back to the queue within the
    next sweeps and is delivered again; the first holder's late close does not confirm
    the second holder's read, which comes back once its connection ends."""
    first, second, third = srv.raw(), srv.raw(), srv.raw()
    put(first, "slow", b"job")
    assert [b"job"] == values(first, "slow/open")

    assert [b"job"] == values(second, "slow/open/t=15000")
    assert b"END\r\n" == get(first, "slow/close")  # too late: it is second's read now
    slow = qstats(srv, "slow")
    assert (0, 1) == (slow["items"], slow["open_transactions"])
    assert slow["canceled_transactions"] >= 1
    second.close()

    assert [b"job"] == values(third, "slow/t=15000")
    first.close()
    third.close()


def test_max_queue_age_deletes_an_idle_empty_queue_only(srv, conn):
    """With max_queue_age = 1 s an empty queue idle for that long is deleted (counted in
    queue_expires); one that still holds an item is kept."""
    before = int(stats(srv)["queue_expires"])
    put(conn, "temp", b"t")
    assert [b"t"] == values(conn, "temp")
    put(conn, "tempfull", b"kept")

    wait_until(lambda: "queue_temp_items" not in stats(srv), timeout=TIMEOUT, what="temp deleted")

    assert int(stats(srv)["queue_expires"]) >= before + 1
    assert 1 == qstats(srv, "tempfull")["items"]
    assert [b"kept"] == values(conn, "tempfull")


def test_fanout_only_master_stores_nothing_and_feeds_its_children(srv, conn):
    """A set on a fanout_only master is STORED, the master stays empty, and each child
    (which inherits fanout_only but has no children of its own) gets the item."""
    assert [] == values(conn, "fan+a")
    assert [] == values(conn, "fan+b")

    assert b"STORED\r\n" == store(conn, "fan", b"news")

    assert 0 == qstats(srv, "fan")["items"]
    assert "fan+a,fan+b" == qstats(srv, "fan")["children"]
    assert [b"news"] == values(conn, "fan+a")
    assert [b"news"] == values(conn, "fan+b")
    assert [] == values(conn, "fan")


# -- inheritance -----------------------------------------------------------------------------

INHERITANCE_CONFIG = """
    [queues.default]
    max_items = 5
    discard_old_when_full = true

    [queues.m]
    max_items = 3
    max_item_size = 2000

    [queues."m+x"]
    max_items = 2
    discard_old_when_full = false
"""


def fill(client, queue: str, count: int) -> list[bytes]:
    return [store(client, queue, b"%s-%d" % (queue.encode(), i)) for i in range(count)]


def test_settings_inherit_builtin_then_default_then_master_then_own_table(make_server, tmp_path):
    """plain gets [queues.default] over the built-ins (and the built-in max_item_size
    nobody overrides); m its own table over default; child m+y inherits m (and default
    through it); m+x's own table beats both."""
    server = make_server("--config", str(write_toml(tmp_path, INHERITANCE_CONFIG)))
    client = server.raw()
    big = b"B" * 100_000

    assert [b"STORED\r\n"] * 7 == fill(client, "plain", 7)
    assert b"STORED\r\n" == store(client, "plain", big)
    assert [b"STORED\r\n"] * 5 == fill(client, "m", 5)
    assert b"NOT_STORED\r\n" == store(client, "m", b"b" * 2001)
    assert [b"STORED\r\n"] * 5 == fill(client, "m+y", 5)
    assert b"NOT_STORED\r\n" == store(client, "m+y", b"b" * 2001)
    assert [b"STORED\r\n"] * 2 + [b"NOT_STORED\r\n"] * 2 == fill(client, "m+x", 4)
    assert b"NOT_STORED\r\n" == store(client, "m+x", b"b" * 2001)

    assert [b"plain-%d" % i for i in range(3, 7)] + [big] == drain(client, "plain")
    assert [b"m-2", b"m-3", b"m-4"] == drain(client, "m")
    assert [b"m+y-2", b"m+y-3", b"m+y-4"] == drain(client, "m+y")
    assert [b"m+x-0", b"m+x-1"] == drain(client, "m+x")
    client.close()


# -- reload ----------------------------------------------------------------------------------


def reload_config(server) -> tuple[int, dict, str]:
    result = server.ctl("--json", "reload", "--config")
    return result.returncode, json.loads(result.stdout or "{}"), result.stderr


def test_reload_changes_live_queue_limits_without_rebuilding_them(make_server, tmp_path):
    """`erqctl reload --config` raising max_items of a full queue lets more sets in; its
    items, counters and an open read survive (the open read can still be confirmed); the
    reply lists the changed queues and names a changed max_connections as needing a
    restart, at this reload and the next."""
    path = write_toml(tmp_path, """
        [queues.q]
        max_items = 3

        [queues.other]
        max_items = 10
    """)
    server = make_server("--config", str(path))
    client, holder = server.raw(), server.raw()
    put(client, "q", b"q0", b"q1", b"q2")
    put(client, "other", b"o0")
    assert b"NOT_STORED\r\n" == store(client, "q", b"refused")
    assert [b"q0"] == values(holder, "q/open")
    put(client, "q", b"q3")
    before = qstats(server, "q")

    write_toml(tmp_path, """
        [server]
        max_connections = 100

        [queues.q]
        max_items = 5

        [queues.other]
        max_items = 10
    """)
    code, reply, _err = reload_config(server)

    assert 0 == code
    assert ["q"] == reply["changed_queues"]
    assert ["max_connections"] == reply["needs_restart"]
    after = qstats(server, "q")
    assert (3, before["total_items"], 1) == (after["items"], after["total_items"], after["open_transactions"])
    assert [b"STORED\r\n", b"STORED\r\n", b"NOT_STORED\r\n"] == [store(client, "q", b"q%d" % i) for i in (4, 5, 6)]
    assert b"END\r\n" == get(holder, "q/close")
    assert 0 == qstats(server, "q")["open_transactions"]
    assert [b"q1", b"q2", b"q3", b"q4", b"q5"] == drain(client, "q")
    assert [b"o0"] == drain(client, "other")
    code, reply, _err = reload_config(server)  # nothing new, but still not restarted
    assert (0, [], ["max_connections"]) == (code, reply["changed_queues"], reply["needs_restart"])
    client.close()
    holder.close()


def test_reload_names_a_live_queues_keep_journal_change_as_needing_a_restart(make_server, tmp_path):
    """Turning keep_journal off for a live queue cannot take effect before a restart (its
    journal is open): the reload says so, at every reload, and the queue keeps
    journaling meanwhile."""
    path = write_toml(tmp_path, "[queues.q]\nmax_items = 30\n")
    server = make_server("--config", str(path))
    client = server.raw()
    put(client, "q", b"a")
    path.write_text("[queues.q]\nmax_items = 30\nkeep_journal = false\n")

    replies = [reload_config(server) for _ in range(2)]

    assert [0, 0] == [code for code, _reply, _err in replies]
    assert [["queues.q.keep_journal"]] * 2 == [reply["needs_restart"] for _code, reply, _err in replies]
    put(client, "q", b"b")
    assert ["q.journal"] == queue_files(server, "q")
    assert 2 == qstats(server, "q")["items"]
    client.close()


@pytest.mark.parametrize(
    "bad_text, line, reason",
    [
        ("[queues.default]\nmax_items = 5\n\n[queues.q]\nmax_items = -1\n", 5, "max_items must be a positive integer"),
        ("[queues.q]\nmax_items = 3\nmax_itemz = 4\n", 3, "unknown queue setting 'max_itemz'"),
        ("[queues.q]\nmax_items = 3\n[queues.r\n", 3, "line 3"),
        ('[queues.q]\nmax_items = 3\nfsync = "sometimes"\n', 3, "fsync must be one of"),
    ],
    ids=["bad-value", "unknown-key", "toml-syntax", "bad-fsync"],
)
def test_reload_of_a_bad_file_is_refused_and_the_old_config_stays(make_server, tmp_path, bad_text, line, reason):
    """A bad file is refused by `erqctl reload --config` (non-zero exit) with the file,
    the line and the reason; the queue keeps enforcing the configuration it had."""
    path = write_toml(tmp_path, "[queues.q]\nmax_items = 3\n")
    server = make_server("--config", str(path))
    client = server.raw()
    put(client, "q", b"a", b"b", b"c")
    path.write_text(bad_text)

    result = server.ctl("reload", "--config")

    assert 1 == result.returncode
    message = result.stderr
    assert str(path) in message and reason in message, message
    if reason != "line 3":
        assert f"{path}:{line}:" in message, message
    assert b"NOT_STORED\r\n" == store(client, "q", b"d")
    status = json.loads(server.ctl("--json", "status", check=True).stdout)
    assert reason in status["last_config_error"]
    client.close()


# -- stats -----------------------------------------------------------------------------------


def test_every_per_queue_stats_field_is_present_with_sane_values(srv, conn):
    """After read-behind over many segments, reads, an aborted read and a flush on
    another queue, `stats` and `dump_stats` carry every PROTOCOL.md field with values
    that match what was done, and logsize matches the queue's files on disk."""
    put(conn, "statq", *[numbered(i) for i in range(60)])
    time.sleep(0.05)  # so that `age` (how long the last removed item waited) is > 0
    assert [numbered(0)] == values(conn, "statq")
    holder = srv.raw()
    assert [numbered(1)] == values(holder, "statq/open")
    assert b"END\r\n" == get(holder, "statq/abort")
    assert [numbered(1)] == values(holder, "statq/open")
    for i in range(2, 30):
        assert [numbered(i)] == values(conn, "statq")

    all_stats = stats(srv)
    fields = qstats(srv, "statq")
    dump = conn.call(b"dump_stats statq\r\n", b"END\r\n", timeout=TIMEOUT).decode()
    on_disk = sum(os.path.getsize(srv.data_dir / n) for n in queue_files(srv, "statq"))
    holder.close()

    assert [] == [f for f in SERVER_FIELDS if f not in all_stats]
    assert [] == [f for f in QUEUE_FIELDS if f not in fields]
    assert [] == [f for f in QUEUE_FIELDS if f"  {f}=" not in dump]
    assert (30, 30 * 1000, 60) == (fields["items"], fields["bytes"], fields["total_items"])
    assert (1, 2, 1) == (fields["open_transactions"], fields["transactions"], fields["canceled_transactions"])
    assert (0, 0, 0, 0) == (fields["expired_items"], fields["discarded"], fields["waiters"], fields["total_flushes"])
    assert 1 <= fields["mem_items"] <= 5
    assert fields["mem_bytes"] == fields["mem_items"] * 1000
    assert fields["age"] >= 50
    assert fields["journal_rotations"] >= 5
    assert fields["journal_rewrites"] >= 1
    assert on_disk == fields["logsize"]
    assert fields["logsize"] >= 30 * 1000

    put(conn, "statflush", b"x", b"y")
    assert b"END\r\n" == conn.call(b"flush statflush\r\n", timeout=TIMEOUT)
    assert (0, 1) == (qstats(srv, "statflush")["items"], qstats(srv, "statflush")["total_flushes"])
