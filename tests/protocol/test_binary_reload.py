"""The binary protocol's handlers reload with the rest (``erqctl reload``): an edit of
``handlers_wire_binary.py`` takes effect on an open binary connection, and a handler
module whose ``BINARY_COMMANDS`` is broken is refused while the old one keeps serving."""

from binary_wire import GET, SUCCESS, VERSION, call, request, set_request
from proto_helpers import copy_handlers

PART = "handlers_wire_binary.py"


def test_an_edit_of_the_binary_part_takes_effect_on_an_open_connection(make_server, tmp_path):
    handlers = copy_handlers(tmp_path)
    server = make_server("--handlers", str(handlers))
    conn = server.raw()
    call(conn, set_request(b"rq", b"kept"))
    assert call(conn, request(VERSION)).value.startswith(b"2.4.1 erqpy-")

    part = tmp_path / PART
    source = part.read_text()
    edited = source.replace('PROTOCOL_VERSION + b" erqpy-"', 'b"9.9.9 edited-"')
    assert edited != source
    part.write_text(edited)
    assert "reloaded: generation 2" in server.ctl("reload", check=True).stdout

    assert call(conn, request(VERSION)).value.startswith(b"9.9.9 edited-")
    assert b"kept" == call(conn, request(GET, b"rq")).value
    conn.close()


def test_a_broken_binary_table_is_refused_and_the_old_one_serves(make_server, tmp_path):
    handlers = copy_handlers(tmp_path)
    server = make_server("--handlers", str(handlers))
    conn = server.raw()
    part = tmp_path / PART
    part.write_text(part.read_text() + '\nBINARY_COMMANDS["not an opcode"] = _noop\n')

    refused = server.ctl("reload")
    assert 0 != refused.returncode
    assert "binary opcode 'not an opcode'" in refused.stdout + refused.stderr

    assert SUCCESS == call(conn, request(VERSION)).status
    conn.close()
