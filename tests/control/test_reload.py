"""Hot reload of the handler module through ``erqctl reload`` and SIGHUP."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from erqpy.server.reloader import default_handlers_path
from tests.conftest import queue_waiters, wait_until

ORIGINAL = Path(default_handlers_path()).read_text()
VERSION_LINE = 'return b"VERSION %s erqpy-%s\\r\\n" % (PROTOCOL_VERSION, conn.state.version.encode())'
assert VERSION_LINE in ORIGINAL, "the version handler changed; update this test"


def variant(tag: str) -> str:
    """Handler source whose ``version`` reply ends with ``-<tag>``."""
    return ORIGINAL.replace(VERSION_LINE, VERSION_LINE.replace("%s\\r\\n", "%s-" + tag + "\\r\\n"))


def write_handlers(path: Path, source: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(source)
    os.replace(tmp, path)


@pytest.fixture
def handlers_file(tmp_path):
    path = tmp_path / "handlers.py"
    write_handlers(path, variant("A"))
    return path


def version_of(raw) -> bytes:
    return raw.call(b"version\r\n").strip()


class Worker(threading.Thread):
    """One client connection doing set, get/open, get/close and version in a loop."""

    def __init__(self, server, index, stop, max_rounds=100_000):
        super().__init__(daemon=True)
        self.raw = server.raw()  # connected before any reload happens
        self.queue = b"reload%d" % index
        self.stop = stop
        self.max_rounds = max_rounds
        self.sent = []
        self.received = []
        self.versions = []  # (monotonic time, tag)
        self.errors = []

    def run(self):
        raw = self.raw
        try:
            for n in range(self.max_rounds):
                if self.stop.is_set():
                    break
                payload = b"%s-%d" % (self.queue, n)
                reply = raw.call(b"set %s 0 0 %d\r\n%s\r\n" % (self.queue, len(payload), payload))
                if reply != b"STORED\r\n":
                    self.errors.append(("set", reply))
                    break
                self.sent.append(payload)
                reply = raw.call(b"get %s/open\r\n" % self.queue, b"END\r\n")
                expected = b"VALUE %s/open 0 %d\r\n%s\r\nEND\r\n" % (self.queue, len(payload), payload)
                if reply != expected:
                    self.errors.append(("open", reply))
                    break
                self.received.append(payload)
                reply = raw.call(b"get %s/close\r\n" % self.queue, b"END\r\n")
                if reply != b"END\r\n":
                    self.errors.append(("close", reply))
                    break
                reply = version_of(raw)
                if not reply.startswith(b"VERSION "):
                    self.errors.append(("version", reply))
                    break
                self.versions.append((time.monotonic(), reply.rsplit(b"-", 1)[1]))
        except Exception as exc:  # a dropped connection or a timeout is a failure
            self.errors.append(("exception", repr(exc)))


@pytest.mark.slow
def test_100_reloads_under_load_drop_nothing(make_server, handlers_file):
    """50 busy connections see 100 reloads: none dropped, no error, nothing lost or
    duplicated, and connections opened before the reloads run the new code."""
    server = make_server("--handlers", str(handlers_file))
    stop = threading.Event()
    workers = [Worker(server, i, stop) for i in range(50)]
    for worker in workers:
        worker.start()
    wait_until(lambda: all(w.versions or w.errors for w in workers), what="every worker under way")
    tags = [b"B" if i % 2 == 0 else b"A" for i in range(100)]
    for tag in tags:
        write_handlers(handlers_file, variant(tag.decode()))
        result = server.ctl("reload")
        assert 0 == result.returncode, result.stderr
    last_reload = time.monotonic()
    wait_until(lambda: all(w.errors or w.versions[-1][0] > last_reload for w in workers),
               30, what="every worker on the last reload's code")
    stop.set()
    for worker in workers:
        worker.join(timeout=30)

    assert [] == [(w.queue, w.errors) for w in workers if w.errors]
    assert all(not w.is_alive() for w in workers)
    for worker in workers:
        assert worker.sent == worker.received  # each item exactly once, in order
        seen = {tag for _t, tag in worker.versions}
        assert {b"A", b"B"} <= seen, (worker.queue, seen)
        after = [tag for t, tag in worker.versions if t > last_reload]
        assert after and set(after) == {tags[-1]}, (worker.queue, after[:5])
        assert not worker.raw.is_closed(timeout=0.1)
    status = server.ctl("--json", "status", check=True)
    assert '"handler_generation": 101' in status.stdout
    stats = server.raw().call(b"stats\r\n", b"END\r\n")
    assert b"STAT curr_items 0\r\n" in stats
    assert b"open_transactions 1" not in stats


def test_reload_takes_effect_on_open_connection(make_server, handlers_file):
    """A connection opened before the reload answers with the new code on its next
    command, and keeps its open read across the reload."""
    server = make_server("--handlers", str(handlers_file))
    raw = server.raw()
    raw.call(b"set keep 0 0 1\r\nx\r\n")
    assert b"VALUE keep/open 0 1\r\nx\r\nEND\r\n" == raw.call(b"get keep/open\r\n", b"END\r\n")
    assert b"VERSION 2.4.1 erqpy-0.1.0-A" == version_of(raw)

    write_handlers(handlers_file, variant("B"))
    assert 0 == server.ctl("reload").returncode

    assert b"VERSION 2.4.1 erqpy-0.1.0-B" == version_of(raw)
    assert b"END\r\n" == raw.call(b"get keep/close\r\n", b"END\r\n")
    assert b"END\r\n" == raw.call(b"get keep\r\n", b"END\r\n")


def test_same_size_edit_within_a_second_is_picked_up(make_server, handlers_file):
    """An edit that keeps the file size and lands in the same second still reloads:
    the reloader compiles the source text, not a cached .pyc."""
    server = make_server("--handlers", str(handlers_file))
    raw = server.raw()
    write_handlers(handlers_file, variant("B"))
    assert 0 == server.ctl("reload").returncode
    stat_b = handlers_file.stat()
    write_handlers(handlers_file, variant("C"))
    os.utime(handlers_file, ns=(stat_b.st_atime_ns, stat_b.st_mtime_ns))
    assert stat_b.st_size == handlers_file.stat().st_size

    assert 0 == server.ctl("reload").returncode

    assert b"VERSION 2.4.1 erqpy-0.1.0-C" == version_of(raw)


BROKEN_VARIANTS = {
    "syntax error": lambda src: src + "\ndef broken(:\n",
    "exception at import": lambda src: src + "\nraise RuntimeError('boom at import')\n",
    "wrong api version": lambda src: src.replace("HANDLER_API = 3", "HANDLER_API = 99"),
    "no command table": lambda src: src + "\nCOMMANDS = None\n",
    "failing selfcheck": lambda src: src + "\ndef selfcheck():\n    raise ValueError('selfcheck says no')\n",
}


@pytest.mark.parametrize("kind", sorted(BROKEN_VARIANTS))
def test_failed_reload_keeps_old_generation(make_server, handlers_file, kind):
    """A reload that fails to compile, import or pass its checks is refused: erqctl
    exits non-zero with the error and the old generation keeps serving."""
    server = make_server("--handlers", str(handlers_file))
    raw = server.raw()
    write_handlers(handlers_file, BROKEN_VARIANTS[kind](variant("B")))

    result = server.ctl("reload")

    assert 1 == result.returncode
    assert "error:" in result.stderr
    assert b"VERSION 2.4.1 erqpy-0.1.0-A" == version_of(raw)
    status = server.ctl("--json", "status", check=True).stdout
    assert '"handler_generation": 1' in status
    assert '"failed_reloads": 1' in status
    assert '"last_reload_error": ""' not in status
    write_handlers(handlers_file, variant("B"))
    assert 0 == server.ctl("reload").returncode
    assert b"VERSION 2.4.1 erqpy-0.1.0-B" == version_of(raw)


def test_failed_reload_error_text_names_the_cause(make_server, handlers_file):
    """The error erqctl prints says what went wrong."""
    server = make_server("--handlers", str(handlers_file))
    write_handlers(handlers_file, variant("B") + "\nraise RuntimeError('boom at import')\n")

    result = server.ctl("reload")

    assert "RuntimeError: boom at import" in result.stderr


def test_sighup_reloads_like_erqctl(make_server, handlers_file):
    """SIGHUP takes the same path as erqctl reload."""
    server = make_server("--handlers", str(handlers_file))
    raw = server.raw()
    write_handlers(handlers_file, variant("B"))

    server.proc.send_signal(signal.SIGHUP)

    wait_until(lambda: version_of(raw) == b"VERSION 2.4.1 erqpy-0.1.0-B", what="the reload on SIGHUP")


def test_blocked_get_finishes_on_its_own_code(make_server, handlers_file):
    """A get blocked in /t= across a reload still completes and delivers its item."""
    server = make_server("--handlers", str(handlers_file))
    waiting = server.raw()
    waiting.call(b"set slow 0 0 1\r\nx\r\nget slow\r\n", b"END\r\n")  # a queue shows its waiters
    waiting.send(b"get slow/t=10000\r\n")
    wait_until(lambda: queue_waiters(server, "slow") == 1, what="the get to block")
    write_handlers(handlers_file, variant("B"))
    assert 0 == server.ctl("reload").returncode

    server.raw().call(b"set slow 0 0 4\r\ndone\r\n")

    assert b"VALUE slow/t=10000 0 4\r\ndone\r\nEND\r\n" == waiting.read_until(b"END\r\n")
    assert b"VERSION 2.4.1 erqpy-0.1.0-B" == version_of(waiting)
