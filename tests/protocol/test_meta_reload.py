"""The meta protocol's handlers reload with the rest (``erqctl reload``): an edit of
``handlers_meta.py`` takes effect on an open connection, the queue it served is intact,
and a broken part is refused while the old generation keeps serving."""

from proto_helpers import copy_handlers

PART = "handlers_meta.py"


def test_an_edit_of_the_meta_part_takes_effect_on_an_open_connection(make_server, tmp_path):
    server = make_server("--handlers", str(copy_handlers(tmp_path)))
    conn = server.raw()
    assert b"HD\r\n" == conn.call(b"ms rq 4\r\nkept\r\n")
    assert b"MN\r\n" == conn.call(b"mn\r\n")

    part = tmp_path / PART  # the edit shows in mn's reply below, or the test fails there
    part.write_text(part.read_text().replace('MN = b"MN\\r\\n"', 'MN = b"MN edited\\r\\n"'))
    assert "reloaded: generation 2" in server.ctl("reload", check=True).stdout

    assert b"MN edited\r\n" == conn.call(b"mn\r\n")
    assert b"VA 4\r\nkept\r\n" == conn.call(b"mg rq v\r\n", b"kept\r\n")
    conn.close()


def test_a_broken_meta_part_is_refused_and_the_old_one_serves(make_server, tmp_path):
    server = make_server("--handlers", str(copy_handlers(tmp_path)))
    conn = server.raw()
    part = tmp_path / PART
    part.write_text(part.read_text() + "\ndef cmd_mn(conn, request:\n")  # a syntax error

    refused = server.ctl("reload")

    assert 0 != refused.returncode
    assert "SyntaxError" in refused.stdout + refused.stderr
    assert b"MN\r\n" == conn.call(b"mn\r\n")
    assert b"HD\r\n" == conn.call(b"ms rq 1\r\nx\r\n")
    conn.close()
