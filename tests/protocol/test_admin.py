"""Admin commands on the data port (status changes, reload, shutdown): refused unless the
configuration enables them; when enabled they do what PROTOCOL.md says."""

import pytest

from proto_helpers import get, put, set_cmd, value

DISABLED = b"CLIENT_ERROR admin commands are disabled\r\n"


@pytest.mark.parametrize("line", [b"status readonly", b"status quiescent", b"status up", b"STATUS up",
                                  b"status bogus", b"reload", b"shutdown", b"SHUTDOWN"])
def test_admin_commands_are_refused_by_default(shared_server, line):
    """Without `admin_commands = true`, every admin command gets CLIENT_ERROR and changes nothing."""
    conn = shared_server.raw()

    assert DISABLED == conn.call(line + b"\r\n")

    assert b"UP\r\n" == conn.call(b"status\r\n")
    assert shared_server.proc.poll() is None
    conn.close()


def admin_config(tmp_path, extra=""):
    path = tmp_path / "admin.toml"
    path.write_text("[server]\nadmin_commands = true\n" + extra)
    return path


@pytest.fixture
def admin_server(make_server, tmp_path):
    return make_server("--config", str(admin_config(tmp_path)))


def test_status_readonly_refuses_writes_and_serves_reads(admin_server):
    """READONLY: set, delete and flush get SERVER_ERROR; gets still work."""
    conn = admin_server.raw()
    put(conn, "q", b"a", b"b")

    assert b"END\r\n" == conn.call(b"status readonly\r\n")

    assert b"READONLY\r\n" == conn.call(b"status\r\n")
    assert conn.call(set_cmd("q", b"c")).startswith(b"SERVER_ERROR ")
    assert conn.call(b"delete q\r\n").startswith(b"SERVER_ERROR ")
    assert conn.call(b"flush q\r\n").startswith(b"SERVER_ERROR ")
    assert value("q", b"a") + b"END\r\n" == get(conn, "q")
    assert b"END\r\n" == conn.call(b"status up\r\n")
    assert b"STORED\r\n" == conn.call(set_cmd("q", b"c"))
    conn.close()


def test_status_quiescent_refuses_reads_and_writes_but_not_confirms(admin_server):
    """QUIESCENT: gets and sets get SERVER_ERROR; closing and aborting open reads still work."""
    conn = admin_server.raw()
    put(conn, "q", b"a", b"b", b"c")
    get(conn, "q/open")
    get(conn, "q/open")

    assert b"END\r\n" == conn.call(b"status quiescent\r\n")

    assert b"QUIESCENT\r\n" == conn.call(b"status\r\n")
    assert conn.call(b"get other\r\n").startswith(b"SERVER_ERROR ")
    assert conn.call(b"get q/peek\r\n").startswith(b"SERVER_ERROR ")
    assert conn.call(b"get q/open\r\n").startswith(b"SERVER_ERROR ")
    assert conn.call(set_cmd("q", b"d")).startswith(b"SERVER_ERROR ")
    assert b"END\r\n" == get(conn, "q/close")
    assert b"END\r\n" == get(conn, "q/abort")
    assert b"END\r\n" == conn.call(b"status up\r\n")
    assert value("q", b"b") + value("q", b"c") + b"END\r\n" == conn.call(b"get q q\r\n", b"END\r\n")
    conn.close()


def test_status_is_persisted_across_restarts(admin_server):
    """A status set on the data port is still in force after a restart."""
    conn = admin_server.raw()
    assert b"END\r\n" == conn.call(b"status readonly\r\n")
    conn.close()

    admin_server.restart()

    conn = admin_server.raw()
    assert b"READONLY\r\n" == conn.call(b"status\r\n")
    conn.close()


def test_unknown_status_is_a_client_error(admin_server):
    """`status bogus` with admin enabled is a CLIENT_ERROR naming the choices; status stays UP."""
    conn = admin_server.raw()

    reply = conn.call(b"status bogus\r\n")

    assert reply.startswith(b"CLIENT_ERROR ") and b"readonly" in reply
    assert b"UP\r\n" == conn.call(b"status\r\n")
    conn.close()


def test_reload_rereads_the_configuration_file(make_server, tmp_path):
    """`reload` replies `Reloaded config.` and a new per-queue limit applies at once."""
    path = admin_config(tmp_path)
    srv = make_server("--config", str(path))
    conn = srv.raw()
    put(conn, "lim", b"1", b"2")
    path.write_text(path.read_text() + "\n[queues.lim]\nmax_items = 2\n")

    assert b"Reloaded config.\r\n" == conn.call(b"reload\r\n")

    assert b"NOT_STORED\r\n" == conn.call(set_cmd("lim", b"3"))
    assert b"STORED\r\n" == conn.call(set_cmd("other", b"3"))
    conn.close()


def test_shutdown_closes_the_connection_and_stops_the_server(admin_server):
    """`shutdown` closes the connection and the process exits 0; acknowledged items survive."""
    conn = admin_server.raw()
    put(conn, "keep", b"safe")
    conn.send(b"shutdown\r\n")

    assert conn.is_closed(timeout=10)
    assert 0 == admin_server.proc.wait(timeout=30)
    conn.close()

    admin_server.start()
    conn = admin_server.raw()
    assert value("keep", b"safe") + b"END\r\n" == get(conn, "keep")
    conn.close()


def test_flush_all_expired_is_refused_when_readonly(admin_server):
    """READONLY refuses writes: flush_all_expired removes journaled items, so it is one
    (it used to drop them while READONLY)."""
    conn = admin_server.raw()
    conn.send(b"set exp 0 -1 1\r\nx\r\n")  # already expired, still journaled
    assert b"STORED\r\n" == conn.line()
    assert b"END\r\n" == conn.call(b"status readonly\r\n")

    assert conn.call(b"flush_all_expired\r\n").startswith(b"SERVER_ERROR server is readonly")
    assert b"END\r\n" == conn.call(b"status up\r\n")
    assert b"1\r\n" == conn.call(b"flush_all_expired\r\n")
    conn.close()


def test_data_port_reload_of_a_bad_file_names_the_reason(make_server, tmp_path):
    """A data-port `reload` of a broken file answers SERVER_ERROR with the file, line and
    reason (it used to be `SERVER_ERROR internal error`), and the old settings stay."""
    path = admin_config(tmp_path)
    srv = make_server("--config", str(path))
    path.write_text("[server]\nadmin_commands = true\nfsync = \"sometimes\"\n")
    conn = srv.raw()

    reply = conn.call(b"reload\r\n")

    assert reply.startswith(b"SERVER_ERROR bad configuration: ")
    assert str(path).encode() in reply and b"fsync" in reply
    assert b"STORED\r\n" == conn.call(set_cmd("still", b"up"))
    assert "Traceback" not in srv.log()
    conn.close()
