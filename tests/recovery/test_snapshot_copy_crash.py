"""Crash tests for a snapshot whose run is copied a step at a time (issue 12:
``snapshot.RunCopy``): 120,000 small items in memory, more than three steps of the copy,
compacted (``erqctl compact``) while a client keeps setting, getting, opening and closing.
The server dies at a fail point of that compaction, or is killed with SIGKILL after it;
after a restart on the same directory the queue holds exactly what the client was told,
open reads first."""

import pytest

from recovery_support import TIMEOUT, queue_stats, wait_for, write_config
from test_readbehind_crash import FAILPOINT_EXIT, Driver, restart_after_traffic_died, traffic_in_a_thread

from erqpy.storage.snapshot import COPY_PER_STEP

#: Everything in memory and no compaction but the one asked for.
ROOMY = "[queues.default]\nmax_memory_size = 67108864\nmax_journal_size = 1073741824\n"
PREFILL = 120_000
PIPELINE = 2000  # sets sent before their replies are read


def prefill(driver: Driver, count: int) -> None:
    """``count`` small items, set in pipelined batches and added to the driver's model."""
    assert count > 3 * COPY_PER_STEP
    for start in range(0, count, PIPELINE):
        batch = [b"p-%07d" % n for n in range(start, min(count, start + PIPELINE))]
        driver.producer.send(b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (driver.queue, len(d), d) for d in batch))
        for _ in batch:
            assert b"STORED\r\n" == driver.producer.line(TIMEOUT)
        driver.waiting.extend(batch)


@pytest.mark.parametrize("failpoint", ["rewrite-after-rename", "snapshot-before-segment-delete", None])
def test_a_snapshot_copied_in_steps_under_traffic_survives_a_crash(make_server, tmp_path, failpoint):
    config = write_config(tmp_path, ROOMY)
    server = make_server("--config", str(config), env={"ERQPY_FAILPOINT": failpoint} if failpoint else None)
    driver = Driver(server, sizes=(12, 40, 7))
    prefill(driver, PREFILL)
    driver.open(6)
    driver.take(3)
    driver.close_oldest(2)
    assert PREFILL - 9 == queue_stats(server, "q")["items"]  # 6 open, 3 taken
    before = driver.seq
    thread, outcome = traffic_in_a_thread(driver, 3000)
    server.ctl("compact", "q", timeout=TIMEOUT)
    if failpoint is None:
        wait_for(lambda: driver.seq > before + 600 or outcome, what="traffic after the compaction")
        assert queue_stats(server, "q")["journal_rewrites"] == 1
        server.kill9()
    restart_after_traffic_died(server, driver, thread, outcome, FAILPOINT_EXIT if failpoint else None)
