"""``max_deliveries``: an item handed out that often as a reliable read without a confirm
goes to the dead-letter queue instead of cycling forever, and the count survives what a
crash does to a server (SIGKILL, restart, a compaction that drops the OPEN records).

Each delivery here ends the way a worker's death ends it: the connection holding the open
read goes away (a reset), or the server itself is SIGKILLed while the read is open."""

import struct

from recovery_support import (
    HEADER_SIZE,
    RECORD_HEAD,
    drain,
    journal_file,
    queue_stats,
    read_values,
    set_items,
    wait_for,
    write_config,
)

OP_DELIVERIES = 11  # erqpy/storage/records.py's table: id u64, count u32


def open_head(server, queue: str):
    """A new connection holding the head of ``queue`` as an open read: (connection, data)."""
    raw = server.raw()
    raw.send(b"get %s/open\r\n" % queue.encode())
    values = read_values(raw)
    assert 1 == len(values), values
    return raw, values[0][0]


def open_and_drop(server, queue: str) -> bytes:
    """One delivery that a dying worker ends: open the head, then reset the connection."""
    raw, data = open_head(server, queue)
    raw.reset()
    wait_for(lambda: queue_stats(server, queue).get("open_transactions") == 0,
             what=f"the dropped read of {queue} to come back")
    return data


def open_and_crash(server, queue: str) -> bytes:
    """One delivery that ends with the server SIGKILLed while the read is open."""
    raw, data = open_head(server, queue)
    server.kill9()
    raw.close()
    server.start()
    return data


def limited_server(make_server, tmp_path, limit: int, extra: str = ""):
    config = write_config(tmp_path, f"[queues.jobs]\nmax_deliveries = {limit}\n{extra}")
    return make_server("--config", str(config))


def test_an_item_dropped_by_its_reader_max_deliveries_times_moves_to_the_errors_queue(make_server, tmp_path):
    server = limited_server(make_server, tmp_path, 2)
    set_items(server.raw(), "jobs", [b"poison", b"fine"])

    assert [b"poison", b"poison"] == [open_and_drop(server, "jobs") for _ in range(2)]

    assert [b"fine"] == [data for data, _id in drain(server, "jobs")]
    assert [b"poison"] == [data for data, _id in drain(server, "jobs_errors")]
    assert 1 == queue_stats(server, "jobs")["dead_lettered"]


def test_a_queue_without_the_setting_delivers_an_item_as_often_as_it_comes_back(server):
    """0, the default, is Kestrel's behaviour: no limit."""
    set_items(server.raw(), "jobs", [b"poison"])

    assert [b"poison"] * 4 == [open_and_drop(server, "jobs") for _ in range(4)]
    assert [b"poison"] == [data for data, _id in drain(server, "jobs")]


def test_the_count_survives_sigkill_of_the_server_during_each_delivery(make_server, tmp_path):
    """Replay counts the OPEN records: two crashes with the read open use up a limit of 2."""
    server = limited_server(make_server, tmp_path, 2, 'dead_letter_to = "jobs_dead"\n')
    set_items(server.raw(), "jobs", [b"poison"])

    assert [b"poison", b"poison"] == [open_and_crash(server, "jobs") for _ in range(2)]

    assert [] == drain(server, "jobs")
    assert [b"poison"] == [data for data, _id in drain(server, "jobs_dead")]


def test_the_count_survives_a_compaction_that_drops_the_open_records(make_server, tmp_path):
    """A snapshot keeps no OPEN record, so it writes the count (DELIVERIES) next to the item."""
    server = limited_server(make_server, tmp_path, 3)
    set_items(server.raw(), "jobs", [b"poison"])
    open_and_drop(server, "jobs")
    open_and_drop(server, "jobs")

    server.ctl("compact", "jobs", check=True)

    data = journal_file(server, "jobs").read_bytes()
    assert [(OP_DELIVERIES, 2)] == deliveries_records(data)
    server.kill9()
    server.start()
    assert b"poison" == open_and_drop(server, "jobs")
    assert [] == drain(server, "jobs")
    assert [b"poison"] == [data for data, _id in drain(server, "jobs_errors")]


def test_a_confirmed_item_is_not_counted_against_the_next_one(make_server, tmp_path):
    server = limited_server(make_server, tmp_path, 1)
    set_items(server.raw(), "jobs", [b"a", b"b"])
    raw = server.raw()

    for expected in (b"a", b"b"):
        raw.send(b"get jobs/close/open\r\n")
        assert [expected] == [data for data, _id in read_values(raw)]
    raw.send(b"get jobs/close\r\n")
    assert [] == read_values(raw)

    assert 0 == queue_stats(server, "jobs")["dead_lettered"]
    assert 0 == queue_stats(server, "jobs")["items"]


def test_an_item_the_dead_letter_queue_cannot_take_stays_and_is_delivered(make_server, tmp_path):
    """A full dead-letter queue refuses the item: it stays (logged), it is never dropped."""
    config = write_config(tmp_path, "[queues.jobs]\nmax_deliveries = 1\n"
                                    "[queues.jobs_errors]\nmax_items = 1\n")
    server = make_server("--config", str(config))
    set_items(server.raw(), "jobs_errors", [b"already full"])
    set_items(server.raw(), "jobs", [b"poison"])
    open_and_drop(server, "jobs")

    assert [b"poison"] == [data for data, _id in drain(server, "jobs")]
    assert "cannot take it" in server.log()
    assert [b"already full"] == [data for data, _id in drain(server, "jobs_errors")]


def deliveries_records(data: bytes) -> list[tuple[int, int]]:
    """(opcode, count) of each DELIVERIES record, walking the file by its documented layout."""
    out = []
    pos = HEADER_SIZE
    while pos + RECORD_HEAD.size <= len(data):
        length, opcode, _body_crc, _head_crc = RECORD_HEAD.unpack_from(data, pos)
        body = pos + RECORD_HEAD.size
        if opcode == OP_DELIVERIES:
            _item_id, count = struct.unpack_from("<QI", data, body)
            out.append((opcode, count))
        pos = body + length
    return out



# -- a read's own bound: get q/open/max_deliveries=N (what `erqpy consume` sends) ------------


def open_bounded(server, queue: str, bound: int) -> list[bytes]:
    raw = server.raw()
    raw.send(b"get %s/open/max_deliveries=%d\r\n" % (queue.encode(), bound))
    values = [data for data, _id in read_values(raw)]
    raw.close()
    return values


def test_a_reads_bound_moves_an_item_dropped_that_often_on_a_queue_without_the_setting(server):
    set_items(server.raw(), "jobs", [b"poison", b"fine"])
    open_and_drop(server, "jobs")
    open_and_drop(server, "jobs")

    assert [b"fine"] == open_bounded(server, "jobs", 2)

    assert [b"poison"] == [data for data, _id in drain(server, "jobs_errors")]
    assert 1 == queue_stats(server, "jobs")["dead_lettered"]


def test_a_reads_bound_counts_the_deliveries_made_before_a_sigkill(server):
    set_items(server.raw(), "jobs", [b"poison", b"fine"])
    open_and_crash(server, "jobs")

    assert [b"fine"] == open_bounded(server, "jobs", 1)
    assert [b"poison"] == [data for data, _id in drain(server, "jobs_errors")]


def test_a_read_without_a_bound_is_still_served_the_item(server):
    """The bound belongs to the read that sends it, not to the queue."""
    set_items(server.raw(), "jobs", [b"poison"])
    open_and_drop(server, "jobs")

    assert b"poison" == open_and_drop(server, "jobs")
    assert [b"poison"] == open_bounded(server, "jobs", 3)


def test_a_bad_bound_is_refused_and_the_connection_stays_usable(server):
    set_items(server.raw(), "jobs", [b"a"])
    raw = server.raw()
    for bad in (b"-1", b"x", b""):
        raw.send(b"get jobs/open/max_deliveries=" + bad + b"\r\n")
        assert raw.line() == b"CLIENT_ERROR bad max_deliveries\r\n"
    raw.send(b"get jobs/open/max_deliveries=0\r\n")
    assert [b"a"] == [data for data, _id in read_values(raw)]
