"""The binary protocol against a real server, in raw bytes (PROTOCOL.md "Binary
protocol"): detection from the first byte, every served opcode, quiet commands until
NOOP, opaque and CAS, the Kestrel key options, bad input answered in step."""

import socket
import struct
import time

import pytest
from binary_wire import (
    DELETE, DELETEQ, E2BIG, EINVAL, ETMPFAIL, FLUSH, GET, GETK, GETKQ, GETQ, INCREMENT, KEY_ENOENT, NOOP,
    NOT_STORED, QUIT, QUITQ, SASL_LIST_MECHS, SET, STAT, SUCCESS, TOUCH, UNKNOWN_COMMAND, VERBOSITY, VERSION,
    ADD, call, read_response, request, set_request,
)
from proto_helpers import unique_name

import erqpy
from tests.conftest import ErqServer

CONFIG = """
[server]
admin_commands = true

[queues.default]
max_item_size = 1000
"""
#: Bodies past the item limit plus this much (the room for key and extras) are skipped.
SKIPPED_BODY = 1000 + 64 * 1024 + 1


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """This module's server (the ``conn`` fixture's too): admin commands, 1000-byte items."""
    base = tmp_path_factory.mktemp("binary")
    config = base / "erqpy.toml"
    config.write_text(CONFIG)
    server = ErqServer(base / "data", ["--config", str(config)]).start()
    yield server
    server.stop()


@pytest.fixture
def srv(shared_server):
    return shared_server


@pytest.fixture
def q(request):
    """A queue name of this test's own, as bytes."""
    return unique_name(request.node.name).encode()


def text(srv, line: bytes, terminator=b"\r\n") -> bytes:
    client = srv.raw()
    try:
        return client.call(line, terminator)
    finally:
        client.close()


def test_set_then_get_returns_the_value_flags_opaque_and_the_item_id_as_cas(conn, q):
    stored = call(conn, set_request(q, b"hello", flags=0xDEADBEEF, opaque=7))
    got = call(conn, request(GET, q, opaque=8))

    assert (0x81, SET, SUCCESS, 7) == (stored.magic, stored.opcode, stored.status, stored.opaque)
    assert (0x81, GET, SUCCESS, 8, b"", b"hello", 0xDEADBEEF) == (
        got.magic, got.opcode, got.status, got.opaque, got.key, got.value, got.flags)
    assert got.cas > 0


def test_a_binary_set_is_a_text_get_and_a_text_set_a_binary_get(srv, conn, q):
    call(conn, set_request(q, b"from-binary", flags=5))
    assert b"VALUE %s 5 11\r\nfrom-binary\r\nEND\r\n" % q == text(srv, b"get %s\r\n" % q, b"END\r\n")

    assert b"STORED\r\n" == text(srv, b"set %s 9 0 9\r\nfrom-text\r\n" % q)
    got = call(conn, request(GETK, q))
    assert (q, b"from-text", 9) == (got.key, got.value, got.flags)


def test_items_come_out_first_in_first_out(conn, q):
    for value in (b"1", b"2", b"3"):
        call(conn, set_request(q, value))

    assert [b"1", b"2", b"3"] == [call(conn, request(GET, q)).value for _ in range(3)]


def test_a_miss_is_not_found_and_getk_returns_the_key(conn, q):
    miss = call(conn, request(GET, q, opaque=1))
    keyed = call(conn, request(GETK, q, opaque=2))

    assert (KEY_ENOENT, b"", 1) == (miss.status, miss.key, miss.opaque)
    assert (KEY_ENOENT, q, 2) == (keyed.status, keyed.key, keyed.opaque)


def test_quiet_gets_answer_only_hits_and_noop_ends_the_batch(conn, q):
    """A multi-get as clients send it: GETKQ per key, then NOOP; misses are silent."""
    other = q + b"_other"
    call(conn, set_request(q, b"a"))
    call(conn, set_request(other, b"b"))

    conn.send(request(GETKQ, q, opaque=1) + request(GETKQ, q + b"_none", opaque=2)
              + request(GETQ, other, opaque=3) + request(NOOP, opaque=4))

    responses = [read_response(conn) for _ in range(3)]
    assert [(GETKQ, q, b"a", 1), (GETQ, b"", b"b", 3), (NOOP, b"", b"", 4)] == [
        (r.opcode, r.key, r.value, r.opaque) for r in responses]


def test_quiet_sets_are_silent_unless_they_fail(conn, q):
    conn.send(set_request(q, b"x", quiet=True, opaque=1)
              + request(0x11, q, b"bad", extras=b"\0\0", opaque=2)  # SETQ with short extras
              + request(NOOP, opaque=3))

    failed, noop = read_response(conn), read_response(conn)
    assert (EINVAL, 2) == (failed.status, failed.opaque)
    assert (NOOP, 3) == (noop.opcode, noop.opaque)
    assert b"x" == call(conn, request(GET, q)).value


def test_a_blocking_get_with_a_key_option_waits_for_the_item(srv, conn, q):
    conn.send(request(GET, q + b"/t=3000", opaque=5))
    time.sleep(0.3)
    assert b"STORED\r\n" == text(srv, b"set %s 0 0 4\r\nlate\r\n" % q)

    got = read_response(conn)
    assert (SUCCESS, b"late", 5) == (got.status, got.value, got.opaque)


def test_a_blocking_get_times_out_as_a_miss(conn, q):
    started = time.monotonic()
    assert KEY_ENOENT == call(conn, request(GET, q + b"/t=200")).status
    assert time.monotonic() - started >= 0.15


def test_reliable_read_open_close(conn, q):
    call(conn, set_request(q, b"r"))

    assert b"r" == call(conn, request(GET, q + b"/open")).value
    assert KEY_ENOENT == call(conn, request(GET, q + b"/close")).status
    assert KEY_ENOENT == call(conn, request(GET, q)).status


def test_a_reliable_read_is_given_back_when_the_client_disconnects(srv, conn, q):
    call(conn, set_request(q, b"back"))
    reader = srv.raw()
    assert b"back" == call(reader, request(GET, q + b"/open")).value
    reader.close()

    assert b"back" == call(conn, request(GET, q + b"/t=3000")).value


def test_abort_gives_the_read_back_and_peek_leaves_the_item(conn, q):
    call(conn, set_request(q, b"z"))
    assert b"z" == call(conn, request(GET, q + b"/open")).value
    assert KEY_ENOENT == call(conn, request(GET, q + b"/abort")).status
    assert b"z" == call(conn, request(GET, q + b"/peek")).value
    assert b"z" == call(conn, request(GET, q)).value


def test_a_bad_key_option_is_invalid_arguments_and_the_connection_stays(conn, q):
    bad = call(conn, request(GET, q + b"/peek/open", opaque=9))

    assert (EINVAL, 9) == (bad.status, bad.opaque)
    assert b"peek cannot be combined" in bad.value
    assert SUCCESS == call(conn, request(NOOP)).status


def test_delete_removes_the_queue_and_deleteq_is_silent(srv, conn, q):
    call(conn, set_request(q, b"d"))
    assert SUCCESS == call(conn, request(DELETE, q)).status
    assert b"queue_%s_items" % q not in text(srv, b"stats\r\n", b"END\r\n")

    call(conn, set_request(q, b"d"))
    conn.send(request(DELETEQ, q) + request(NOOP, opaque=3))
    noop = read_response(conn)  # the first response is the NOOP's: DELETEQ succeeded silently
    assert (NOOP, 3) == (noop.opcode, noop.opaque)
    assert KEY_ENOENT == call(conn, request(GET, q)).status


def test_flush_empties_every_queue(conn, q):
    call(conn, set_request(q, b"f"))

    assert SUCCESS == call(conn, request(FLUSH, extras=b"\0\0\0\0")).status
    assert KEY_ENOENT == call(conn, request(GET, q)).status


def test_version_and_verbosity(conn):
    version = call(conn, request(VERSION, opaque=3))
    assert (SUCCESS, 3) == (version.status, version.opaque)
    assert b"2.4.1 erqpy-" + erqpy.__version__.encode() == version.value
    assert SUCCESS == call(conn, request(VERBOSITY, extras=b"\0\0\0\1")).status


def test_stat_without_a_key_lists_the_server_and_queue_fields_then_an_empty_response(conn, q):
    call(conn, set_request(q, b"s"))
    conn.send(request(STAT, opaque=4))
    fields = {}
    while True:
        response = read_response(conn)
        assert (SUCCESS, 4) == (response.status, response.opaque)
        if not response.key:
            break
        fields[response.key] = response.value
    assert b"1" == fields[b"queue_%s_items" % q]
    assert {b"pid", b"uptime", b"curr_connections"} <= set(fields)


def test_stat_with_a_key(conn):
    conn.send(request(STAT, b"settings"))
    first = read_response(conn)
    assert SUCCESS == first.status and first.key
    while read_response(conn).key:
        pass
    reset = call(conn, request(STAT, b"reset"))
    assert (SUCCESS, b"", b"") == (reset.status, reset.key, reset.value)
    assert KEY_ENOENT == call(conn, request(STAT, b"detail")).status


@pytest.mark.parametrize("opcode", [ADD, INCREMENT, TOUCH, SASL_LIST_MECHS, 0x3F, 0xFF])
def test_other_opcodes_are_unknown_command_and_the_connection_stays_in_step(conn, q, opcode):
    unknown = call(conn, request(opcode, q, b"value", extras=b"\0" * 8, opaque=0xABCD))

    assert (opcode, UNKNOWN_COMMAND, 0xABCD) == (unknown.opcode, unknown.status, unknown.opaque)
    assert SUCCESS == call(conn, request(NOOP)).status


def test_a_cas_on_set_is_refused(conn, q):
    refused = call(conn, request(SET, q, b"v", extras=b"\0" * 8, cas=12))

    assert EINVAL == refused.status
    assert KEY_ENOENT == call(conn, request(GET, q)).status


def test_an_item_over_the_queue_limit_is_not_stored(conn, q):
    assert NOT_STORED == call(conn, set_request(q, b"x" * 1001)).status
    assert SUCCESS == call(conn, set_request(q, b"x" * 1000)).status


def test_a_body_over_the_item_limit_is_skipped_and_the_connection_stays_in_step(conn, q):
    big = set_request(q, b"x" * SKIPPED_BODY, opaque=11)
    # In pieces, so that the skip spans reads; the next request follows at once.
    for start in range(0, len(big), 20_000):
        conn.send(big[start : start + 20_000])
    conn.send(set_request(q, b"small", opaque=12))

    skipped, stored = read_response(conn), read_response(conn)
    assert (E2BIG, 11) == (skipped.status, skipped.opaque)
    assert (SUCCESS, 12) == (stored.status, stored.opaque)
    assert b"small" == call(conn, request(GET, q)).value


def test_requests_split_byte_by_byte_are_framed(conn, q):
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = set_request(q, b"slow", opaque=1) + request(GET, q, opaque=2)
    for index in range(len(data)):
        conn.send(data[index : index + 1])

    assert [(SET, SUCCESS), (GET, SUCCESS)] == [(r.opcode, r.status) for r in (read_response(conn),
                                                                             read_response(conn))]


def test_a_pipeline_of_many_requests_is_answered_in_order(conn, q):
    conn.send(b"".join(set_request(q, b"%d" % i, quiet=True) for i in range(500)) + request(NOOP, opaque=1))
    assert NOOP == read_response(conn).opcode

    conn.send(b"".join(request(GET, q, opaque=i) for i in range(500)))
    got = [read_response(conn) for _ in range(500)]
    assert [(i, b"%d" % i) for i in range(500)] == [(r.opaque, r.value) for r in got]


def test_a_bad_magic_loses_the_framing_the_connection_closes(conn, q):
    call(conn, set_request(q, b"kept"))
    conn.send(request(GET, q, magic=0x81))

    lost = read_response(conn)
    assert EINVAL == lost.status
    assert conn.is_closed(timeout=5)


def test_a_key_longer_than_the_body_loses_the_framing(conn):
    conn.send(struct.pack(">BBHBBHIIQ", 0x80, GET, 10, 0, 0, 0, 4, 0, 0) + b"abcd")

    assert EINVAL == read_response(conn).status
    assert conn.is_closed(timeout=5)


def test_quit_answers_then_closes_and_quitq_closes_at_once(srv, conn):
    answer = call(conn, request(QUIT))
    assert (QUIT, SUCCESS) == (answer.opcode, answer.status)
    assert conn.is_closed(timeout=5)

    other = srv.raw()
    other.send(request(QUITQ))
    assert other.is_closed(timeout=5)
    other.close()


def test_status_rules_apply_to_binary_commands(srv, conn, q):
    call(conn, set_request(q, b"kept"))
    assert b"END\r\n" == text(srv, b"status readonly\r\n")
    try:
        refused = call(conn, set_request(q, b"no"))
        assert (ETMPFAIL, b"server is readonly") == (refused.status, refused.value)
        assert b"kept" == call(conn, request(GET, q + b"/open")).value
        assert b"END\r\n" == text(srv, b"status quiescent\r\n")
        assert ETMPFAIL == call(conn, request(GET, q)).status
        assert KEY_ENOENT == call(conn, request(GET, q + b"/close")).status  # settling is allowed
    finally:
        assert b"END\r\n" == text(srv, b"status up\r\n")


def test_a_text_client_cannot_reach_a_binary_handler(srv):
    assert b"ERROR\r\n" == text(srv, b"binary 0 q\r\n")


def test_binary_handlers_are_reloaded_with_the_rest(srv, conn, q):
    """`erqctl reload` swaps the binary part too; an open binary connection goes on."""
    call(conn, set_request(q, b"before"))

    assert "reloaded: generation" in srv.ctl("reload", check=True).stdout

    assert b"before" == call(conn, request(GET, q)).value
    assert SUCCESS == call(conn, set_request(q, b"after")).status


def test_a_blocking_get_of_a_client_that_resets_takes_nothing(srv, conn, q):
    """The waiting get leaves the queue's line when its client resets: the next item
    goes to the next reader, not to the gone one."""
    gone = srv.raw()
    gone.send(request(GET, q + b"/t=5000"))
    time.sleep(0.2)
    gone.reset()
    time.sleep(0.2)
    call(conn, set_request(q, b"kept"))

    assert b"kept" == call(conn, request(GET, q)).value


def test_a_request_not_completed_in_time_is_answered_in_binary_then_closed(make_server, tmp_path):
    config = tmp_path / "timeout.toml"
    config.write_text("[server]\nrequest_timeout = 1\n")
    server = make_server("--config", str(config))
    client = server.raw()
    client.send(set_request(b"slow", b"never finished")[:30])

    answer = read_response(client, timeout=10)
    assert (0x81, 0x0082) == (answer.magic, answer.status)
    assert b"request not completed within 1 s" == answer.value
    assert client.is_closed(timeout=5)
    client.close()


def test_a_large_item_round_trips_whole(make_server):
    """Over 64 KiB the value goes out as a part of its own (not copied into the reply)."""
    server = make_server()
    client = server.raw()
    value = bytes(range(256)) * 1024  # 256 KiB, every byte value
    assert SUCCESS == call(client, set_request(b"big", value, flags=3)).status

    got = call(client, request(GETK, b"big", opaque=77))
    assert (b"big", value, 3, 77) == (got.key, got.value, got.flags, got.opaque)
    client.close()


def test_requests_sent_while_a_get_waits_are_answered_after_it_in_order(srv, conn, q):
    conn.send(request(GET, q + b"/t=3000", opaque=1))
    time.sleep(0.2)
    conn.send(request(NOOP, opaque=2) + request(GETK, q, opaque=3))
    time.sleep(0.2)
    assert b"STORED\r\n" == text(srv, b"set %s 0 0 5\r\nfirst\r\n" % q)

    answers = [read_response(conn) for _ in range(3)]
    assert [(1, SUCCESS, b"first"), (2, SUCCESS, b""), (3, KEY_ENOENT, b"Not found")] == [
        (a.opaque, a.status, a.value) for a in answers]


def test_a_set_key_takes_the_text_set_options_delay_and_priority(conn, q):
    assert SUCCESS == call(conn, set_request(q + b"/delay=400", b"later")).status
    assert SUCCESS == call(conn, set_request(q, b"normal")).status
    assert SUCCESS == call(conn, set_request(q + b"/pri=0", b"urgent")).status

    assert [b"urgent", b"normal"] == [call(conn, request(GET, q)).value for _ in range(2)]
    assert KEY_ENOENT == call(conn, request(GET, q)).status  # the delayed item is not due yet
    assert b"later" == call(conn, request(GET, q + b"/t=3000")).value


def test_an_unknown_set_option_is_invalid_arguments(conn, q):
    refused = call(conn, set_request(q + b"/open", b"x"))

    assert (EINVAL, b"unknown set option open") == (refused.status, refused.value)


def test_a_4_mib_item_sent_in_16_kib_writes_is_stored_whole(make_server):
    server = make_server()
    client = server.raw()
    value = bytes(range(256)) * (4 * 4096)
    data = set_request(b"big", value, opaque=5)
    for start in range(0, len(data), 16 * 1024):
        client.send(data[start : start + 16 * 1024])

    stored = read_response(client, timeout=30)
    assert (SUCCESS, 5) == (stored.status, stored.opaque)
    assert value == call(client, request(GET, b"big"), timeout=30).value
    client.close()


def test_a_partial_request_past_max_buffered_input_is_answered_in_binary_then_closed(make_server, tmp_path):
    config = tmp_path / "buffered.toml"
    config.write_text(f"[server]\nmax_buffered_input = {1024 * 1024}\n")
    server = make_server("--config", str(config))
    client = server.raw()
    # 2 MiB declared, 1.5 MiB sent: past the 1 MiB all connections may hold.
    client.send(set_request(b"held", b"x" * (2 * 1024 * 1024))[: 1536 * 1024])

    answer = read_response(client, timeout=10)
    assert (0x81, 0x0082, b"out of memory: too much buffered input") == (answer.magic, answer.status, answer.value)
    assert client.is_closed(timeout=5)
    client.close()
