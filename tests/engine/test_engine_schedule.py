"""Engine mode refuses delayed items (``set q/delay=``, ``set q/at=``, ``get
q/abort/delay=``) and priorities (``set q/pri=``) with a clear ``SERVER_ERROR``: Redis
queues have neither yet.  The connection stays in step and nothing is stored or lost."""

import time

from tests.engine.test_engine_server import engine_config

REFUSAL = b"SERVER_ERROR delayed items are not supported in engine mode\r\n"


def test_delayed_sets_aborts_and_priorities_are_refused_in_engine_mode(make_server, tmp_path, redis_primary, key_prefix):
    node = make_server("--config", engine_config(tmp_path, "a", redis_primary, key_prefix))
    raw = node.raw()

    assert REFUSAL == raw.call(b"set jobs/delay=500 0 0 5\r\nlater\r\n")
    assert REFUSAL == raw.call(b"set jobs/at=%d 0 0 5\r\nlater\r\n" % (time.time() + 100))
    assert b"SERVER_ERROR priorities are not supported in engine mode\r\n" == raw.call(
        b"set jobs/pri=1 0 0 5\r\nfirst\r\n")
    assert b"STORED\r\n" == raw.call(b"set jobs/pri=5 0 0 3\r\nnow\r\n")  # the default: accepted
    assert b"VALUE jobs/open 0 3\r\nnow\r\nEND\r\n" == raw.call(b"get jobs/open\r\n", b"END\r\n")
    assert REFUSAL == raw.call(b"get jobs/abort/delay=500\r\n")
    assert b"END\r\n" == raw.call(b"get jobs/abort\r\n", b"END\r\n")  # still open: a plain abort works
    assert b"VALUE jobs 0 3\r\nnow\r\nEND\r\n" == raw.call(b"get jobs\r\n", b"END\r\n")
    assert b"END\r\n" == raw.call(b"get jobs\r\n", b"END\r\n")
