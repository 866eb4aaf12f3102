"""Plugins found through the ``erqpy.plugins`` entry-point group.

The test plugins are real distributions: a ``*.dist-info`` folder with
``entry_points.txt`` on the server's PYTHONPATH, which importlib-metadata discovers as it
would an installed package.
"""

import json
import os
import py_compile
import re
import socket
import time
from pathlib import Path

import pytest

GOOD_PLUGIN = '''
COUNTS = {}


class Plugin:
    def register(self, api):
        counts = api.data.setdefault("counts", {})

        def on_event(event, queue_name, item):
            counts[event] = counts.get(event, 0) + 1

        for event in ("enqueued", "dequeued", "opened", "confirmed", "aborted"):
            api.subscribe(event, on_event)

        def cmd_hello(conn, request):
            summary = ",".join(f"{k}={v}" for k, v in sorted(counts.items()))
            return ("HELLO %s %s\\r\\n" % (TAG, summary)).encode()

        api.add_command("hello", cmd_hello)


TAG = "v1"
plugin = Plugin()
'''

BROKEN_PLUGIN = '''
class Plugin:
    def register(self, api):
        raise RuntimeError("broken on purpose")


plugin = Plugin()
'''


def make_distribution(root: Path, dist: str, module: str, source: str, entry_name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[erqpy.plugins]\n{entry_name} = {module}:plugin\n")
    return root / f"{module}.py"


@pytest.fixture
def plugin_path(tmp_path):
    root = tmp_path / "pluginpath"
    good = make_distribution(root, "erqpy_testplug", "erqpy_testplug", GOOD_PLUGIN, "testplug")
    make_distribution(root, "erqpy_brokenplug", "erqpy_brokenplug", BROKEN_PLUGIN, "brokenplug")
    return root, good


def start(make_server, plugin_path, *args):
    root, good = plugin_path
    return make_server(*args, env={"PYTHONPATH": str(root)}), good


def test_broken_plugin_is_skipped_and_named(make_server, plugin_path):
    """A plugin that fails to register is logged with its name and skipped; the server
    and the other plugins serve."""
    server, _good = start(make_server, plugin_path)
    raw = server.raw()

    assert raw.call(b"hello\r\n").startswith(b"HELLO v1")
    assert b"STORED\r\n" == raw.call(b"set p 0 0 1\r\nx\r\n")
    assert "brokenplug" in server.log() and "broken on purpose" in server.log()
    status = json.loads(server.ctl("--json", "status").stdout)
    assert "RuntimeError: broken on purpose" == status["plugin_errors"]["brokenplug"]
    loaded = [p["name"] for p in status["plugins"]]
    assert "testplug" in loaded and "brokenplug" not in loaded


def test_plugin_sees_queue_events(make_server, plugin_path):
    """Subscribers receive enqueued, opened, aborted, dequeued and confirmed events."""
    server, _good = start(make_server, plugin_path)
    raw = server.raw()
    raw.call(b"set ev 0 0 1\r\na\r\n")
    raw.call(b"set ev 0 0 1\r\nb\r\n")
    raw.call(b"get ev/open\r\n", b"END\r\n")
    raw.call(b"get ev/abort\r\n", b"END\r\n")
    raw.call(b"get ev/open\r\n", b"END\r\n")
    raw.call(b"get ev/close\r\n", b"END\r\n")
    raw.call(b"get ev\r\n", b"END\r\n")

    reply = raw.call(b"hello\r\n")

    assert b"HELLO v1 aborted=1,confirmed=1,dequeued=1,enqueued=2,opened=2\r\n" == reply
    # A subscriber may do anything a greenlet may, so with one subscribed no batch is
    # served from the event loop's callback (server/loop_serving).
    status = json.loads(server.ctl("--json", "status", check=True).stdout)
    assert 0 == status["loop_batches"] and status["greenlet_batches"] >= 8


def test_plugin_commands_survive_handler_reload(make_server, plugin_path):
    """A handler reload keeps plugin commands, and the plugin keeps its api.data."""
    server, _good = start(make_server, plugin_path, "--config", "/dev/null")
    raw = server.raw()
    raw.call(b"set keepme 0 0 1\r\nx\r\n")

    assert 0 == server.ctl("reload").returncode

    assert b"HELLO v1 enqueued=1\r\n" == raw.call(b"hello\r\n")


def test_plugin_reload_is_all_or_nothing(make_server, plugin_path):
    """erqctl reload loads new plugin code; a serving plugin that breaks refuses the
    whole reload and the previous plugin code keeps serving."""
    server, good = start(make_server, plugin_path)
    raw = server.raw()
    good.write_text(GOOD_PLUGIN.replace('TAG = "v1"', 'TAG = "v2"'))
    assert 0 == server.ctl("reload").returncode
    assert raw.call(b"hello\r\n").startswith(b"HELLO v2")

    good.write_text(GOOD_PLUGIN.replace('TAG = "v1"', 'TAG = "v3"') + "\nraise ImportError('v3 is broken')\n")
    result = server.ctl("reload")

    assert 1 == result.returncode
    assert "testplug" in result.stderr and "v3 is broken" in result.stderr
    assert raw.call(b"hello\r\n").startswith(b"HELLO v2")
    status = json.loads(server.ctl("--json", "status").stdout)
    assert 2 == status["handler_generation"]


PACKAGE_INIT = '''
import importlib

from erqpy_pkgplug import helpers
from . import greeting

TAG = "top-v1"


class Plugin:
    def register(self, api):
        def cmd_pkghello(conn, request):
            # What sys.modules holds now, as a lazy import inside plugin code would see it.
            live = [importlib.import_module("erqpy_pkgplug." + n).TAG for n in ("helpers", "greeting")]
            return ("PKG %s %s %s live %s\\r\\n" % (TAG, helpers.TAG, greeting.TAG, " ".join(live))).encode()

        api.add_command("pkghello", cmd_pkghello)


plugin = Plugin()
'''


@pytest.fixture
def package_plugin(tmp_path):
    """A plugin package with two submodules, as a dist-info on the server's PYTHONPATH.
    Every file has a ``.pyc`` beside it that the normal import system would trust."""
    root = tmp_path / "pkgpath"
    package = root / "erqpy_pkgplug"
    package.mkdir(parents=True)
    files = {
        "__init__": package / "__init__.py",
        "helpers": package / "helpers.py",
        "greeting": package / "greeting.py",
    }
    files["__init__"].write_text(PACKAGE_INIT)
    files["helpers"].write_text('TAG = "helpers-v1"\n')
    files["greeting"].write_text('TAG = "greeting-v1"\n')
    for path in files.values():
        py_compile.compile(str(path), doraise=True)  # mtime-and-size-checked .pyc
    info = root / "erqpy_pkgplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: erqpy_pkgplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[erqpy.plugins]\npkgplug = erqpy_pkgplug:plugin\n")
    return root, files


def edit_keeping_stat(path: Path, old: str, new: str) -> None:
    """Replace text with text of the same length and put the mtime back: the cached .pyc
    still looks valid."""
    assert len(old) == len(new)
    before = path.stat()
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)


def test_plugin_submodule_edit_of_same_size_and_mtime_reloads(make_server, package_plugin):
    """A plugin's submodules reload from their source like handler code: an edit that
    keeps the size and mtime of the file (so its .pyc looks current) is served."""
    root, files = package_plugin
    server = make_server(env={"PYTHONPATH": str(root)})
    raw = server.raw()
    assert b"PKG top-v1 helpers-v1 greeting-v1 live helpers-v1 greeting-v1\r\n" == raw.call(b"pkghello\r\n")

    edit_keeping_stat(files["greeting"], "greeting-v1", "greeting-v2")
    assert 0 == server.ctl("reload").returncode

    assert b"PKG top-v1 helpers-v1 greeting-v2 live helpers-v1 greeting-v2\r\n" == raw.call(b"pkghello\r\n")


def test_refused_plugin_reload_restores_every_submodule(make_server, package_plugin):
    """A reload whose new top-level and first submodule load but whose second submodule
    has a syntax error is refused; the old top-level and both old submodules serve, in
    the command and in sys.modules; once fixed, the next reload takes all of it."""
    root, files = package_plugin
    server = make_server(env={"PYTHONPATH": str(root)})
    raw = server.raw()
    files["__init__"].write_text(PACKAGE_INIT.replace("top-v1", "top-v2"))
    files["helpers"].write_text('TAG = "helpers-v2"\n')
    files["greeting"].write_text('TAG = "greeting-v2"\ndef broken(:\n')

    result = server.ctl("reload")

    assert 1 == result.returncode
    assert "pkgplug" in result.stderr and "SyntaxError" in result.stderr
    assert b"PKG top-v1 helpers-v1 greeting-v1 live helpers-v1 greeting-v1\r\n" == raw.call(b"pkghello\r\n")

    files["greeting"].write_text('TAG = "greeting-v2"\n')
    assert 0 == server.ctl("reload").returncode
    assert b"PKG top-v2 helpers-v2 greeting-v2 live helpers-v2 greeting-v2\r\n" == raw.call(b"pkghello\r\n")


def test_plugin_entry_point_inside_erqpy_is_refused(make_server, tmp_path):
    """Reloading a plugin reloads its whole top-level package; for an entry point inside
    erqpy that would replace the server's own modules, so it is refused with the reason
    and the server, its reloads included, keeps working."""
    root = tmp_path / "insidepath"
    info = root / "erqpy_inside-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: erqpy_inside\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[erqpy.plugins]\ninside = erqpy.handlers:COMMANDS\n")
    server = make_server(env={"PYTHONPATH": str(root)})
    raw = server.raw()

    status = json.loads(server.ctl("--json", "status").stdout)
    assert "inside erqpy" in status["plugin_errors"]["inside"]
    assert 0 == server.ctl("reload").returncode
    assert b"STORED\r\n" == raw.call(b"set inside 0 0 1\r\nx\r\n")
    assert b"VALUE inside 0 1\r\nx\r\nEND\r\n" == raw.call(b"get inside\r\n", b"END\r\n")


def test_plugins_can_be_disabled_by_name(make_server, plugin_path, tmp_path):
    """[plugins] disabled keeps an installed plugin from loading."""
    config = tmp_path / "noplug.toml"
    config.write_text('[plugins]\ndisabled = ["testplug", "brokenplug"]\n')
    server, _good = start(make_server, plugin_path, "--config", str(config))

    assert b"ERROR\r\n" == server.raw().call(b"hello\r\n")
    assert "broken on purpose" not in server.log()


def test_statsd_plugin_sends_queue_metrics(make_server, tmp_path):
    """The first-party statsd plugin sends gauges and counters to its UDP target."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    port = receiver.getsockname()[1]
    config = tmp_path / "statsd.toml"
    config.write_text(f'[plugins.statsd]\nport = {port}\nprefix = "t"\ninterval = 0.2\n')
    server = make_server("--config", str(config))
    raw = server.raw()
    for n in range(3):
        raw.call(b"set metered 0 0 1\r\n%d\r\n" % n)
    raw.call(b"get metered\r\n", b"END\r\n")

    assert b"END\r\n" != raw.call(b"statsd_flush\r\n")
    lines = set()
    deadline = time.monotonic() + 10
    while "t.queue.metered.items:2|g" not in lines and time.monotonic() < deadline:
        lines.update(receiver.recv(65536).decode().split("\n"))
    receiver.close()

    assert "t.queue.metered.items:2|g" in lines
    assert "t.queue.metered.enqueued:3|c" in lines
    assert "t.connections:1|g" in lines


#: The statsd line grammar, strictly: ``<name>:<value>|<type>[|@<rate>]``.  A name holds
#: no ``:``, ``|``, ``@`` or whitespace (statsd splits the line at the first ``:``).
STATSD_LINE = re.compile(
    r"(?P<name>[^:|@\s]+):(?P<value>[+-]?\d+(?:\.\d+)?)\|(?P<type>c|g|ms|h|s)(?:\|@(?P<rate>\d*\.?\d+))?"
)


def receive_statsd(receiver, wanted: str, seconds: float = 10.0) -> dict:
    """Parse every line the receiver gets until ``wanted`` is among the names; each line
    must match the statsd grammar.  Returns ``{name: (value, type)}``, the last seen."""
    metrics = {}
    deadline = time.monotonic() + seconds
    while wanted not in metrics and time.monotonic() < deadline:
        receiver.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            packet = receiver.recv(65536).decode()
        except socket.timeout:
            break
        for line in packet.split("\n"):
            match = STATSD_LINE.fullmatch(line)
            assert match is not None, f"not a statsd line: {line!r}"
            metrics[match["name"]] = (match["value"], match["type"])
    return metrics


def test_statsd_names_of_namespaced_queues_are_sanitised(make_server, tmp_path):
    """A queue named ``shop:emails`` (a Producer namespace) reports as ``shop_emails``:
    every line the real UDP listener receives parses as ``<name>:<value>|<type>``."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    port = receiver.getsockname()[1]
    config = tmp_path / "statsd.toml"
    # A long interval: the flushes this test reads are the ones it asks for.
    config.write_text(f'[plugins.statsd]\nport = {port}\nprefix = "t"\ninterval = 3600\n')
    server = make_server("--config", str(config))
    raw = server.raw()
    for n in range(2):
        assert b"STORED\r\n" == raw.call(b"set shop:emails 0 0 1\r\n%d\r\n" % n)
    assert b"STORED\r\n" == raw.call(b"set a|b@c 0 0 1\r\nx\r\n")

    try:
        assert raw.call(b"statsd_flush\r\n").rstrip().isdigit()
        metrics = receive_statsd(receiver, "t.queue.a_b_c.items")
    finally:
        receiver.close()

    assert ("2", "g") == metrics["t.queue.shop_emails.items"]
    assert ("2", "c") == metrics["t.queue.shop_emails.enqueued"]
    assert ("1", "g") == metrics["t.queue.a_b_c.items"]
    assert not [name for name in metrics if "shop" in name and "shop_emails" not in name]


def test_statsd_prefix_with_a_separator_is_refused(make_server, tmp_path):
    """A prefix that would break the line format refuses the file, with file, line and
    reason, as any bad table does."""
    config = tmp_path / "statsd.toml"
    config.write_text('[plugins.statsd]\nport = 9\nprefix = "my:app"\n')
    server = make_server("--config", str(config), start=False)

    with pytest.raises(RuntimeError) as refused:
        server.start()
    assert f"{config}:3:" in str(refused.value)
    assert "statsd prefix must be" in str(refused.value)

STAMP_PLUGIN = '''
import itertools
import time

EXECUTED_AT = time.time_ns()  # a new value each time this module's code runs
_registrations = itertools.count(1)


class Plugin:
    def register(self, api):
        registration = next(_registrations)
        greeting = api.config.get("greeting", "none")

        def cmd_stamp(conn, request):
            return ("STAMP %d %d %s\\r\\n" % (EXECUTED_AT, registration, greeting)).encode()

        api.add_command("stamp", cmd_stamp)


plugin = Plugin()
'''


def stamp(raw) -> list[str]:
    return raw.call(b"stamp\r\n").decode().split()[1:]


def test_a_reload_with_unchanged_plugin_source_keeps_its_modules_and_registers_again(
        make_server, tmp_path):
    """Issue 12: re-executing a plugin package whose text did not change costs the hub
    milliseconds and gives the same code; the plugin is still registered again, so its
    new configuration applies.  An edit (even keeping size and mtime) runs it afresh."""
    root = tmp_path / "stamppath"
    source = make_distribution(root, "erqpy_stampplug", "erqpy_stampplug", STAMP_PLUGIN, "stampplug")
    config = tmp_path / "erqpy.toml"
    config.write_text('[plugins.stampplug]\ngreeting = "hello"\n')
    server = make_server("--config", str(config), env={"PYTHONPATH": str(root)})
    raw = server.raw()
    executed, registration, greeting = stamp(raw)
    assert (registration, greeting) == ("1", "hello")

    config.write_text('[plugins.stampplug]\ngreeting = "hi"\n')
    assert 0 == server.ctl("reload").returncode

    assert [executed, "2", "hi"] == stamp(raw)

    edit_keeping_stat(source, '"none"', '"nada"')
    assert 0 == server.ctl("reload").returncode

    edited, registration, greeting = stamp(raw)
    assert edited != executed and (registration, greeting) == ("1", "hi")


def test_a_plugin_installed_while_the_server_runs_is_found_by_the_next_reload(make_server, tmp_path):
    """The entry points are scanned again once a directory on sys.path changed (an
    install adds a *.dist-info there), and only then."""
    root = tmp_path / "laterpath"
    make_distribution(root, "erqpy_testplug", "erqpy_testplug", GOOD_PLUGIN, "testplug")
    server = make_server(env={"PYTHONPATH": str(root)})
    raw = server.raw()
    assert raw.call(b"stamp\r\n") == b"ERROR\r\n"

    make_distribution(root, "erqpy_stampplug", "erqpy_stampplug", STAMP_PLUGIN, "stampplug")
    assert 0 == server.ctl("reload").returncode

    assert ["1", "none"] == stamp(raw)[1:]
