"""Queues deleted, re-created and compacted while writers run under ``--fsync always``
(issue 9, item 16): no fsync may hit a descriptor whose journal let go of it (its number
may be a client's socket by then), so no 'fsync failed' and no dropped connection."""

import threading
import time

from recovery_support import TIMEOUT, write_config

RUN_SECONDS = 4.0
WRITERS = 4


def test_delete_recreate_and_compact_under_fsync_always(make_server, tmp_path):
    # Small journals: the writers' own gets trigger compactions too.
    config = write_config(tmp_path, "[queues.default]\nmax_journal_size = 4096\n")
    server = make_server("--fsync", "always", "--config", str(config))
    stop = time.monotonic() + RUN_SECONDS
    errors = []
    counts = {"writes": 0, "churns": 0}
    lock = threading.Lock()

    def writer(index):
        raw = server.raw()
        try:
            n = 0
            while time.monotonic() < stop:
                name = b"w%d_%d" % (index, n % 3)  # the churner deletes these too
                data = b"x" * 200
                reply = raw.call(b"set %s 0 0 %d\r\n%s\r\n" % (name, len(data), data), timeout=TIMEOUT)
                if reply != b"STORED\r\n":
                    errors.append(reply)
                    return
                reply = raw.call(b"get %s\r\n" % name, b"END\r\n", timeout=TIMEOUT)
                if not reply.endswith(b"END\r\n") or b"ERROR" in reply:
                    errors.append(reply)
                    return
                n += 1
            with lock:
                counts["writes"] += n
        except (ConnectionError, TimeoutError, OSError) as exc:
            errors.append(repr(exc))
        finally:
            raw.close()

    def churner():
        raw = server.raw()
        try:
            n = 0
            while time.monotonic() < stop:
                for index in range(WRITERS):
                    name = b"w%d_%d" % (index, n % 3)
                    reply = raw.call(b"delete %s\r\n" % name, timeout=TIMEOUT)
                    if reply not in (b"DELETED\r\n", b"NOT_FOUND\r\n"):
                        errors.append(reply)
                        return
                # New connections take the lowest free descriptor numbers, the ones
                # the deleted journals just gave up.
                extra = server.raw()
                data = b"churn"
                reply = extra.call(b"set c%d 0 0 %d\r\n%s\r\n" % (n % 5, len(data), data), timeout=TIMEOUT)
                extra.close()
                if reply != b"STORED\r\n":
                    errors.append(reply)
                    return
                if n % 10 == 0:
                    server.ctl("compact", "c%d" % (n % 5))
                n += 1
            counts["churns"] = n
        except (ConnectionError, TimeoutError, OSError) as exc:
            errors.append(repr(exc))
        finally:
            raw.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    threads.append(threading.Thread(target=churner))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RUN_SECONDS + 60)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors[:5]
    assert counts["writes"] > 0 and counts["churns"] > 0, counts
    log = server.log()
    assert "fsync failed" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
