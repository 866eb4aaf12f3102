"""A crash while a new queue's journal is being created (storage/newfiles: a worker
thread opens the file, then writes its header) loses nothing: the set that asked for the
queue was not acknowledged, the queues already there keep every item, and the new queue
starts empty and takes writes after the restart."""

from recovery_support import TIMEOUT, drain, journal_file, log_mark, log_since

FAILPOINT_EXIT = 86


def test_a_crash_between_creating_a_journal_and_its_header_loses_nothing(make_server):
    server = make_server()
    raw = server.raw()
    for n in range(20):
        assert b"STORED\r\n" == raw.call(b"set kept 0 0 4\r\nk%03d\r\n" % n, timeout=TIMEOUT)
    raw.close()
    server.kill9()

    server.env = {"ERQPY_FAILPOINT": "create-before-header"}
    server.start()
    raw = server.raw()
    raw.send(b"set fresh 0 0 5\r\nfirst\r\n")
    assert raw.is_closed(timeout=TIMEOUT), "the set was answered: the fail point never fired"
    assert FAILPOINT_EXIT == server.proc.wait(timeout=TIMEOUT)
    server._close_pipes()
    assert 0 == journal_file(server, "fresh").stat().st_size  # what the crash left

    server.env = {}
    mark = log_mark(server)
    server.start()
    log = log_since(server, mark)
    assert "DATA MAY HAVE BEEN LOST" not in log and "QUARANTINED" not in log
    assert [b"k%03d" % n for n in range(20)] == [data for data, _ in drain(server, "kept")]
    raw = server.raw()
    assert b"END\r\n" == raw.call(b"get fresh\r\n", b"END\r\n", timeout=TIMEOUT)
    assert b"STORED\r\n" == raw.call(b"set fresh 0 0 6\r\nsecond\r\n", timeout=TIMEOUT)
    server.kill9()
    server.start()
    assert [b"second"] == [data for data, _ in drain(server, "fresh")]
