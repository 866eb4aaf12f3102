"""Plugins: discovered through the ``erqpy.plugins`` entry-point group.

Each entry point resolves to an object with ``register(api)``.  Through ``api`` (a
``PluginAPI``) a plugin adds data-port commands, subscribes to queue events and starts
services on the gevent hub.  Configuration: ``[plugins] enabled = [...]`` (only these;
default every installed plugin) and ``disabled = [...]``; ``[plugins.<name>]`` is handed
to the plugin as ``api.config``.

A plugin checks its own table: the plugin object may name it (``config_table = "http"``
for a top-level ``[http]``; default ``plugins.<name>``) and offer ``validate_config(table)
-> list of errors`` (each a string naming the key, or a ``(key, reason)`` pair).  The
tables are checked before anything starts and before a reload swaps anything, so a bad
table refuses the whole file (``ConfigError`` with file and line), as a core table does.

At start a broken plugin is logged with its name and skipped.  ``reload`` loads every
enabled plugin's code again with the handler reloader's guarantees
(``erqpy.server.fresh``): every module of the plugin's top-level package, submodules
included, is compiled from its source text into a fresh module, never from a cached
``.pyc``.  The new set is swapped in only if every serving plugin registers; otherwise
every ``sys.modules`` entry of every plugin package is put back as it was and the old
set keeps running.
"""

import importlib
import logging
import os
import sys

import gevent
from gevent.event import Event
from importlib_metadata import entry_points

from erqpy.server import fresh
from erqpy.server.plugin_tables import PluginTable, check_plugin_tables
from erqpy.server.fresh import SourceFinder

log = logging.getLogger("erqpy.plugins")


class PluginReloadError(Exception):
    """A serving plugin failed to load again; the old plugin set keeps running."""

GROUP = "erqpy.plugins"
#: Bump when ``PluginAPI`` changes incompatibly; a plugin may check ``api.api_version``.
PLUGIN_API = 1


class PluginAPI:
    """What one plugin may use.  Handed to ``register(api)``; one per load."""

    api_version = PLUGIN_API

    def __init__(self, manager, name: str, settings=None):
        self._manager = manager
        self.name = name
        self.state = manager.state
        #: The settings this load is made for: at a reload, the new file's, which become
        #: ``state.settings`` only once every part has loaded.
        self.settings = settings or manager.state.settings
        self.config = dict(self.settings.plugins.get(name, {}) or {})
        self.log = logging.getLogger(f"erqpy.plugin.{name}")
        #: This plugin's long-lived state; survives plugin reloads (lives in ServerState).
        self.data = manager.state.plugin_data.setdefault(name, {})
        self.commands = {}
        self.subscriptions = []
        self.services = []

    def add_command(self, name: str, handler) -> None:
        """A data-port command ``handler(conn, request) -> bytes`` (as in handlers.py)."""
        if not name or name != name.lower() or " " in name:
            raise ValueError(f"command name {name!r} must be one lower-case word")
        self.commands[name.encode()] = handler

    def subscribe(self, event: str, callback) -> None:
        """``callback(event, queue_name, item)`` for enqueued, dequeued, expired, opened,
        confirmed or aborted."""
        self.subscriptions.append((event, callback))

    def add_service(self, function, *args) -> None:
        """Run ``function(*args)`` in its own greenlet while the plugin is loaded; it is
        killed (GreenletExit) at plugin reload and at shutdown."""
        self.services.append((function, args))

    def section(self, name: str) -> dict:
        """A top-level table of the configuration file, such as ``[http]``."""
        return dict(self.settings.sections.get(name, {}) or {})

    def expect_listener(self, label: str) -> None:
        """Announce (in ``register``) that a service of this load will open a listener:
        at start the server waits for its ``report_listener`` (a few seconds at most)
        before it prints its start-up line, which then names it."""
        self._manager.expected_listeners.add(label)

    def report_listener(self, label: str, address) -> None:
        """Say where a service listens, ``(host, port)``, or None when it could not
        listen.  The start-up line and ``erqctl status`` show it."""
        self._manager.listener_reported(label, address)


class LoadedPlugin:
    def __init__(self, name, dist, api):
        self.name = name
        self.dist = dist
        self.api = api
        self.greenlets = []


#: One finder for the process: every module of a plugin's package loads from source.
_SOURCE_FINDER = SourceFinder()


def plugin_package(entry_point) -> str:
    """The top-level package of a plugin: the unit that is reloaded whole."""
    package = entry_point.module.partition(".")[0]
    if package == "erqpy":
        # Reloading it would replace the server's own modules, and the state they hold.
        raise ImportError(f"plugin module {entry_point.module} is inside erqpy; a plugin is its own package")
    return package


#: package -> sha256 of the source files of its live modules: a reload whose sources
#: all hash the same keeps the live modules (and registers the plugin again with the new
#: settings) instead of executing a dozen modules on the hub.  A fresh execution's
#: digest is staged, and becomes the live one only when its modules go live
#: (``_activate``); a rollback drops it with the modules.
_loaded_digests: dict = {}
_staged_digests: dict = {}


def _import_fresh(entry_point, package: str, refreshed: set):
    """Import the entry point's module with its whole package executed afresh, unless
    not one byte of the package's source changed since it was.

    Every ``sys.modules`` entry of the package is taken out first, so that each of its
    modules, submodules included, is compiled from its source by ``SourceFinder``.
    Returns ``(target, restore)``: ``restore`` is the package's previous entries, which
    ``rollback`` puts back.  On failure they are put back at once.
    """
    restore = (package, fresh.package_modules(package))
    digest = b""
    if package not in refreshed:
        live = restore[1].get(package)
        digest = fresh.package_digest(live) if live is not None else b""
        if digest and digest == _loaded_digests.get(package):
            refreshed.add(package)  # the same text: the live modules are what it gives
        else:
            _SOURCE_FINDER.packages.add(package)
            _SOURCE_FINDER.install()
            for name in restore[1]:
                del sys.modules[name]
            importlib.invalidate_caches()  # a file added since the last import must be seen
    try:
        target = importlib.import_module(entry_point.module)
        for part in (entry_point.attr or "").split("."):
            if part:
                target = getattr(target, part)
    except BaseException:
        PluginManager.rollback([restore])
        raise
    if package not in refreshed:
        _staged_digests[package] = digest or fresh.package_digest(sys.modules[package])
        refreshed.add(package)
    return target, restore


#: (the stamp of sys.path's directories, the entry points found then).
_entry_point_cache: list = [None, ()]


def installed_entry_points() -> tuple:
    """The ``erqpy.plugins`` entry points of the installed distributions.

    Scanning every distribution's metadata costs tens of milliseconds on the hub, and a
    reload needs it only when something was installed or removed since the last scan:
    an install or uninstall adds or removes a ``*.dist-info`` directory, which moves
    the modification time of the directory on ``sys.path`` that holds it."""
    stamp = tuple((path, _mtime_ns(path)) for path in sys.path)
    if _entry_point_cache[0] != stamp:
        _entry_point_cache[:] = [stamp, tuple(entry_points(group=GROUP))]
        _distribution_names.clear()
    return _entry_point_cache[1]


#: (entry point name, value) -> its distribution's name, read from its METADATA once.
_distribution_names: dict = {}


def _distribution_name(ep) -> str:
    key = (ep.name, ep.value)
    name = _distribution_names.get(key)
    if name is None:
        name = _distribution_names[key] = getattr(getattr(ep, "dist", None), "name", "") or ep.value
    return name


def _mtime_ns(path: str):
    try:
        return os.stat(path or ".").st_mtime_ns
    except OSError:
        return None


class PluginManager:
    def __init__(self, state, entry_point_source=None):
        self.state = state
        # Injectable so tests can hand in EntryPoint objects without installing anything.
        self._source = entry_point_source or installed_entry_points
        self.plugins = {}  # name -> LoadedPlugin
        self.errors = {}  # name -> error text of the last failed load
        self.generation = 0
        self.expected_listeners = set()  # labels announced by expect_listener
        self._listeners_reported = Event()

    @staticmethod
    def _selected(settings, available):
        conf = settings.plugins or {}
        enabled = conf.get("enabled")
        disabled = set(conf.get("disabled", []))
        for ep in available:
            if ep.name in disabled or (enabled is not None and ep.name not in enabled):
                continue
            yield ep

    def resolve(self, settings):
        """Import every enabled plugin afresh and check the file's plugin tables with them.

        Returns ``(resolved, failures)``: ``[(ep, target, restore)]`` and ``{ep: exc}`` for
        plugins whose code failed to import (their previous modules are back already).
        Raises ``ConfigError`` (imports rolled back) when a table is bad: the caller
        refuses the start or the reload.
        """
        resolved, failures = [], {}
        refreshed = set()  # packages executed afresh in this round
        available = list(self._source())
        for ep in self._selected(settings, available):
            try:
                target, restore = _import_fresh(ep, plugin_package(ep), refreshed)
            except Exception as exc:
                failures[ep] = exc
                continue
            resolved.append((ep, target, restore))
        tables = {ep.name: PluginTable(ep.name) for ep in available}
        for ep, target, _restore in resolved:
            table = getattr(target, "config_table", "")
            if not isinstance(table, str) or not table:
                table = f"plugins.{ep.name}"
            tables[ep.name] = PluginTable(ep.name, table, getattr(target, "validate_config", None))
        try:
            check_plugin_tables(settings, list(tables.values()))
        except Exception:
            self.rollback([restore for _ep, _target, restore in resolved])
            raise
        return resolved, failures

    def _register(self, ep, target, settings):
        register = getattr(target, "register", None)
        if register is None:
            raise TypeError(f"{ep.value} has no register(api)")
        api = PluginAPI(self, ep.name, settings)
        register(api)
        return LoadedPlugin(ep.name, _distribution_name(ep), api)

    def load(self, resolved=None) -> None:
        """Start-up: register each enabled plugin; a broken one is logged and skipped.

        ``resolved`` is what ``resolve`` returned (the server resolves before it replays
        journals, so a bad table stops it early); None resolves here.
        """
        settings = self.state.settings
        resolved, failures = resolved or self.resolve(settings)
        for ep, exc in failures.items():
            self.errors[ep.name] = f"{type(exc).__name__}: {exc}"
            log.error("plugin %s (%s) failed to load; skipped", ep.name, ep.value, exc_info=exc)
        loaded = {}
        for ep, target, restore in resolved:
            try:
                plugin = self._register(ep, target, settings)
            except Exception as exc:
                self.rollback([restore])  # a plugin that failed leaves no module behind
                self.errors[ep.name] = f"{type(exc).__name__}: {exc}"
                log.exception("plugin %s (%s) failed to load; skipped", ep.name, ep.value)
                continue
            loaded[plugin.name] = plugin
            log.info("plugin %s loaded from %s", plugin.name, plugin.dist)
        self._activate(loaded)

    def prepare(self, settings=None):
        """Load every enabled plugin's code afresh, without touching the live set.

        ``settings`` are the ones the reload will apply (default: the running ones).  A
        bad plugin table raises ``ConfigError``.  A plugin that is serving now must load
        again, or the whole reload is refused (``PluginReloadError``) and every package's
        previous modules are put back.  A plugin that was not serving (it failed before)
        is tried again; if it still fails it stays off and is reported, since keeping the
        old code means keeping nothing.
        """
        settings = settings or self.state.settings
        resolved, failures = self.resolve(settings)
        restores = [restore for _ep, _target, restore in resolved]
        staged = {}
        attempts = [(ep, None, None, exc) for ep, exc in failures.items()]
        attempts += [(ep, target, restore, None) for ep, target, restore in resolved]
        for ep, target, restore, exc in attempts:
            if exc is None:
                try:
                    staged[ep.name] = self._register(ep, target, settings)
                    self.errors.pop(ep.name, None)
                    continue
                except Exception as error:
                    exc = error
            message = f"{type(exc).__name__}: {exc}"
            if ep.name in self.plugins:
                self.rollback(restores)
                raise PluginReloadError(f"plugin {ep.name}: {message}") from exc
            if restore is not None:
                self.rollback([restore])
                restores.remove(restore)
            self.errors[ep.name] = message
            log.error("plugin %s (%s) still fails to load; it stays off: %s", ep.name, ep.value, message)
        return staged, restores

    @staticmethod
    def source_files() -> list[str]:
        """The source files of every plugin package loaded so far (``compile_elsewhere``)."""
        files = []
        for package in sorted(_SOURCE_FINDER.packages):
            module = sys.modules.get(package)
            if module is not None:
                files += fresh.package_files(module)
        return files

    @staticmethod
    def rollback(restores) -> None:
        """Put back every module of each package a refused reload replaced in
        ``sys.modules`` (submodules too), and drop the modules it added."""
        for package, previous in reversed(restores):
            for name in fresh.package_modules(package):
                del sys.modules[name]
            sys.modules.update(previous)
            _staged_digests.pop(package, None)

    def commit(self, staged: dict) -> None:
        """Swap the live plugin set for a prepared one."""
        self.stop_services()
        for name in self.plugins:
            self.state.events.unsubscribe_owner(name)
        self._activate(staged)
        self.start_services()

    def _activate(self, plugins: dict) -> None:
        commands = {}
        for plugin in plugins.values():
            for event, callback in plugin.api.subscriptions:
                self.state.events.subscribe(event, callback, owner=plugin.name)
            commands.update(plugin.api.commands)
        self.plugins = plugins
        _loaded_digests.update(_staged_digests)
        _staged_digests.clear()
        self.generation += 1
        if self.state.registry is not None:
            self.state.registry.set_plugin_commands(commands)

    def start_services(self) -> None:
        for plugin in self.plugins.values():
            for function, args in plugin.api.services:
                greenlet = gevent.spawn(function, *args)
                greenlet.link_exception(
                    lambda g, name=plugin.name: log.error("service of plugin %s died: %s", name, g.exception)
                )
                plugin.greenlets.append(greenlet)

    def stop_services(self) -> None:
        for plugin in self.plugins.values():
            gevent.killall(plugin.greenlets, timeout=5)
            plugin.greenlets = []

    def listener_reported(self, label: str, address) -> None:
        if address:
            self.state.listeners[label] = tuple(address[:2])
        else:
            self.state.listeners.pop(label, None)
        self.expected_listeners.discard(label)
        if not self.expected_listeners:
            self._listeners_reported.set()

    def wait_for_listeners(self, timeout: float) -> bool:
        """Wait until every announced listener is reported; False if one is late."""
        return not self.expected_listeners or self._listeners_reported.wait(timeout)

    def describe(self) -> list[dict]:
        return [
            {"name": p.name, "dist": p.dist, "commands": sorted(c.decode() for c in p.api.commands),
             "services": len(p.api.services)}
            for p in self.plugins.values()
        ]
