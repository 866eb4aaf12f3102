"""The command table's flags (erqpy.server.handlers.COMMAND_TABLE): each rule is checked
once, before the handler runs, so no handler can forget it.  A real ServerState and a
real Connection over a socket pair; the commands run as the connection runs them."""

import socket

import pytest

from erqpy.errors import ClientError, Unavailable
from erqpy.server import handlers
from erqpy.server.config import Settings
from erqpy.server.connection import Connection
from erqpy.server.protocol import Parser
from erqpy.server.state import ServerState

WRITE_COMMANDS = {"set", "delete", "flush", "flush_all", "flush_expired", "flush_all_expired", "ms", "md"}


@pytest.fixture
def conn(tmp_path):
    state = ServerState(Settings(data_dir=str(tmp_path / "data")))
    state.datadir.lock()
    ours, theirs = socket.socketpair()
    yield Connection(state, ours, ("test", 0))
    ours.close()
    theirs.close()
    state.collection.close_all()
    state.datadir.unlock()


def run(conn, line: bytes):
    """Parse one request and run it through the command table, as the connection does."""
    (request,) = Parser(max_item_size=1 << 20).feed(line)
    return handlers.COMMANDS[request.command.decode()](conn, request)


def flags(name):
    return handlers.COMMAND_TABLE[name][1]


def test_every_command_that_changes_queues_is_a_write():
    assert WRITE_COMMANDS == {name for name in handlers.COMMAND_TABLE if flags(name) & handlers.WRITE}


def test_the_waiting_commands_are_blocking():
    blocking = {name for name in handlers.COMMAND_TABLE if flags(name) & handlers.BLOCKING}
    assert {"get", "gets", "monitor", "mg"} == blocking


def test_the_module_passes_its_own_selfcheck():
    handlers.selfcheck()


@pytest.mark.parametrize("line", [
    b"set q 0 0 1\r\nx\r\n", b"delete q\r\n", b"flush q\r\n", b"flush_all\r\n",
    b"flush_expired q\r\n", b"flush_all_expired\r\n", b"ms q 1\r\nx\r\n", b"md q\r\n",
])
@pytest.mark.parametrize("status", ["readonly", "quiescent"])
def test_a_write_is_refused_before_its_handler_runs(conn, line, status):
    """Refused before anything of the request is looked at: not even the queue is made."""
    conn.state.status = status

    with pytest.raises(Unavailable) as refused:
        run(conn, line)

    assert f"server is {status}" == refused.value.reason
    assert {} == conn.state.collection.queues


@pytest.mark.parametrize("line", [b"get q\r\n", b"gets q\r\n", b"get q/peek\r\n", b"get q/open\r\n",
                                  b"get q/close/open\r\n", b"get q/abort q\r\n", b"monitor q 1\r\n",
                                  b"mg q v\r\n", b"mg q\r\n", b"mg q/open v\r\n", b"mg cS9jbG9zZS9vcGVu b v\r\n"])
def test_a_read_is_refused_when_quiescent(conn, line):
    conn.state.status = "quiescent"

    with pytest.raises(Unavailable):
        run(conn, line)


@pytest.mark.parametrize("line", [b"get q/close\r\n", b"get q/abort\r\n", b"get q/close r/abort\r\n"])
def test_a_get_that_only_settles_reads_is_served_when_quiescent(conn, line):
    conn.state.status = "quiescent"

    assert b"END\r\n" == run(conn, line)


@pytest.mark.parametrize("line", [b"mg q/close\r\n", b"mg q/abort v\r\n", b"mg cS9jbG9zZQ== b\r\n"])
def test_an_mg_that_only_settles_a_read_is_served_when_quiescent(conn, line):
    conn.state.status = "quiescent"

    assert b"EN\r\n" == run(conn, line)  # nothing was open to settle


def test_reads_are_served_when_readonly(conn):
    run(conn, b"set q 0 0 1\r\nx\r\n")
    conn.state.status = "readonly"

    assert b"VALUE q 0 1\r\nx\r\nEND\r\n" == run(conn, b"get q\r\n")


@pytest.mark.parametrize("line", [b"status readonly\r\n", b"reload\r\n", b"shutdown\r\n"])
def test_admin_commands_are_refused_unless_enabled(conn, line):
    with pytest.raises(ClientError, match="admin commands are disabled"):
        run(conn, line)

    assert "up" == conn.state.status and not conn.closing


def test_reading_the_status_is_no_admin_command(conn):
    assert b"UP\r\n" == run(conn, b"status\r\n")
