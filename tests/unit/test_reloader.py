"""HandlerRegistry on a real handler source file in tmp_path: a good reload swaps the
command table whole, a bad one (syntax error, exception at import, failed check) keeps
the old generation serving, and the counters say which happened."""

import hashlib
import os
import sys

import pytest

from erqpy.server.reloader import HANDLER_API, MODULE_NAME, HandlerRegistry, ReloadError

pytestmark = pytest.mark.unit


def handler_source(reply: bytes, extra: str = "") -> str:
    return (
        f"HANDLER_API = {HANDLER_API}\n"
        f"def cmd_ping(conn, request):\n    return {reply!r}\n"
        f"{extra}"
        "COMMANDS = {'ping': cmd_ping}\n"
    )


@pytest.fixture
def handlers(tmp_path, monkeypatch):
    """A handler file, and the live ``erqpy.server.handlers`` module put back afterwards
    (a commit installs its generation in ``sys.modules``)."""
    monkeypatch.setitem(sys.modules, MODULE_NAME, sys.modules.get(MODULE_NAME))
    path = tmp_path / "my_handlers.py"
    path.write_text(handler_source(b"PONG 1\r\n"))
    return path


def reply(registry, command=b"ping"):
    return registry.commands[command](None, None)


def reload(registry) -> dict:
    """What reload.reload_code does for handlers: prepare, then commit or refuse."""
    try:
        prepared = registry.prepare()
    except Exception as exc:
        return registry.refused(exc)
    return registry.commit(*prepared)


def test_load_serves_the_file_and_names_its_generation(handlers):
    registry = HandlerRegistry(str(handlers))
    registry.load()

    assert b"PONG 1\r\n" == reply(registry)
    assert 1 == registry.generation
    assert 0 == registry.reloads
    assert hashlib.sha256(handlers.read_bytes()).hexdigest() == registry.sha256
    assert sys.modules[MODULE_NAME] is registry.module
    assert str(handlers) == registry.module.__file__


def test_a_good_reload_swaps_the_whole_table(handlers):
    registry = HandlerRegistry(str(handlers))
    registry.load()
    old_table = registry.commands
    handlers.write_text(handler_source(b"PONG 2\r\n", "def cmd_new(conn, request):\n    return b'NEW'\n")
                        .replace("{'ping': cmd_ping}", "{'ping': cmd_ping, 'new': cmd_new}"))

    result = reload(registry)

    assert result["ok"] is True and 2 == result["generation"]
    assert b"PONG 2\r\n" == reply(registry)
    assert b"NEW" == reply(registry, b"new")
    assert (2, 1, 0) == (registry.generation, registry.reloads, registry.failed_reloads)
    # A command already running keeps the table it looked up: the old one is untouched.
    assert {b"ping"} == set(old_table) and b"PONG 1\r\n" == old_table[b"ping"](None, None)


def test_a_same_size_edit_within_the_same_second_is_seen(handlers):
    """No .pyc is trusted: an edit that keeps the size and the mtime still reloads."""
    registry = HandlerRegistry(str(handlers))
    registry.load()
    stat = handlers.stat()
    handlers.write_text(handler_source(b"PONG 9\r\n"))
    os.utime(handlers, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert stat.st_size == handlers.stat().st_size

    assert reload(registry)["ok"] is True
    assert b"PONG 9\r\n" == reply(registry)


@pytest.mark.parametrize("broken, error", [
    ("def cmd_ping(conn, request)\n    return b'x'\n", "SyntaxError"),
    (handler_source(b"X", "raise RuntimeError('halfway through the import')\n"), "halfway through"),
    (handler_source(b"X").replace(f"HANDLER_API = {HANDLER_API}", "HANDLER_API = 1"), "HANDLER_API is 1"),
    (handler_source(b"X").replace("{'ping': cmd_ping}", "{}"), "COMMANDS must be a non-empty dict"),
    (handler_source(b"X").replace("{'ping': cmd_ping}", "{'PING': cmd_ping}"), "must be a lower-case string"),
    (handler_source(b"X").replace("{'ping': cmd_ping}", "{'ping': 42}"), "is not callable"),
    (handler_source(b"X", "def selfcheck():\n    raise AssertionError('selfcheck failed')\n"),
     "selfcheck failed"),
    (handler_source(b"X", "LOOP_SAFE = {'pong': None}\n"), "LOOP_SAFE names 'pong'"),
    (handler_source(b"X", "LOOP_SAFE = {'ping': 42}\n"), "LOOP_SAFE check for 'ping' is not callable"),
])
def test_a_bad_reload_keeps_the_old_generation_serving(handlers, broken, error):
    registry = HandlerRegistry(str(handlers))
    registry.load()
    live_module, live_table, live_digest = registry.module, registry.commands, registry.sha256
    handlers.write_text(broken)

    result = reload(registry)

    assert result["ok"] is False and 1 == result["generation"]
    assert error in result["error"] and error in registry.last_error
    assert (1, 0, 1) == (registry.generation, registry.reloads, registry.failed_reloads)
    assert registry.commands is live_table and registry.module is live_module
    assert live_digest == registry.sha256
    assert sys.modules[MODULE_NAME] is live_module
    assert b"PONG 1\r\n" == reply(registry)

    # Fixed, the next reload goes through and clears the error.
    handlers.write_text(handler_source(b"PONG 3\r\n"))
    assert reload(registry)["ok"] is True
    assert (2, 1, 1) == (registry.generation, registry.reloads, registry.failed_reloads)
    assert "" == registry.last_error
    assert b"PONG 3\r\n" == reply(registry)


def test_the_loop_safe_table_is_swapped_with_the_commands(handlers):
    """``LOOP_SAFE`` (which commands a connection may run from the event loop's callback)
    belongs to the generation: a reload that drops it leaves no command on the loop."""
    handlers.write_text(handler_source(b"PONG 1\r\n", "LOOP_SAFE = {'ping': None}\n"))
    registry = HandlerRegistry(str(handlers))
    registry.load()
    assert {b"ping": None} == registry.on_loop

    handlers.write_text(handler_source(b"PONG 2\r\n"))
    assert reload(registry)["ok"] is True
    assert {} == registry.on_loop and b"PONG 2\r\n" == reply(registry)


def test_a_failed_first_load_raises(handlers):
    handlers.write_text(handler_source(b"X").replace("{'ping': cmd_ping}", "{}"))
    registry = HandlerRegistry(str(handlers))
    with pytest.raises(ReloadError, match="non-empty dict"):
        registry.load()
    assert 0 == registry.generation


def test_plugin_commands_join_the_table_and_survive_a_reload_but_never_shadow_a_core_one(handlers):
    registry = HandlerRegistry(str(handlers))
    registry.load()

    def plugin_ping(conn, request):
        return b"plugin ping"

    registry.set_plugin_commands({b"extra": lambda conn, request: b"EXTRA", b"ping": plugin_ping})

    assert b"EXTRA" == reply(registry, b"extra")
    assert b"PONG 1\r\n" == reply(registry)  # the core command wins
    handlers.write_text(handler_source(b"PONG 4\r\n"))
    assert reload(registry)["ok"] is True
    assert b"EXTRA" == reply(registry, b"extra")
    assert b"PONG 4\r\n" == reply(registry)
