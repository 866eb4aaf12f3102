"""HandlerRegistry: load, check and swap the handler module, all or nothing.

``importlib.reload`` re-executes into the live module, so a reload that fails halfway
leaves a mix of old and new names, and it trusts a cached ``.pyc`` whose whole-second
mtime and size match.  Instead the source text is read and compiled
(``erqpy.server.fresh``, which plugins use too), executed into a *fresh* module object,
checked, and only then swapped in with one assignment of the command table.  Any failure
leaves the previous generation serving.
"""

import hashlib
import importlib.util
import logging
import sys
import time

from erqpy.server.fresh import exec_source, new_module

log = logging.getLogger("erqpy.reloader")

#: The handler API this server speaks; a module with another ``HANDLER_API`` is refused.
HANDLER_API = 3
MODULE_NAME = "erqpy.server.handlers"


def default_handlers_path() -> str:
    spec = importlib.util.find_spec(MODULE_NAME)
    assert spec is not None and spec.origin is not None  # the handlers ship with erqpy
    return spec.origin


class ReloadError(Exception):
    """A new handler generation was refused; the old one keeps serving."""


class HandlerRegistry:
    """The current handler module and the merged command table the connections use.

    ``commands`` maps command words (bytes) to callables: the handler module's
    ``COMMANDS`` plus the commands plugins added.  Connections read it once per command.
    """

    def __init__(self, path: str | None = None):
        self.path = path or default_handlers_path()
        self.module = None
        self.generation = 0
        self.sha256 = ""
        self.loaded_at = 0.0
        self.last_error = ""
        self.reloads = 0
        self.failed_reloads = 0
        self.plugin_commands = {}  # bytes -> callable, kept across handler reloads
        self._started = 0.0  # perf_counter at the last prepare(), to time reloads
        self.commands = {}

    def load(self) -> None:
        """First load at start; a failure here stops the server."""
        self.commit(*self.prepare())

    def prepare(self):
        """Compile and check a new generation without touching the live one.

        Returns ``(module, sha256)`` for ``commit``; raises on any failure.
        """
        self._started = time.perf_counter()
        return self._build()

    def commit(self, module, digest: str) -> dict:
        """Swap in a prepared generation."""
        self._swap(module, digest)
        self.last_error = ""
        elapsed = time.perf_counter() - self._started
        if self.generation > 1:
            self.reloads += 1
            log.info("handlers reloaded: generation %d sha256 %s in %.1f ms",
                     self.generation, digest[:12], elapsed * 1000)
        return {"ok": True, "generation": self.generation, "sha256": digest, "seconds": elapsed}

    def refused(self, exc: BaseException) -> dict:
        """Record a refused reload; the live generation keeps serving."""
        self.failed_reloads += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.error("reload refused, generation %d keeps serving: %s", self.generation, self.last_error)
        return {"ok": False, "error": self.last_error, "generation": self.generation}

    def set_plugin_commands(self, commands: dict) -> None:
        self.plugin_commands = dict(commands)
        self.commands = self._table(self.module)

    def _build(self):
        with open(self.path, "rb") as f:
            source = f.read()
        digest = hashlib.sha256(source).hexdigest()
        module = new_module(MODULE_NAME, self.path)
        exec_source(module, source, self.path)
        self._check(module)
        return module, digest

    @staticmethod
    def _check(module) -> None:
        api = getattr(module, "HANDLER_API", None)
        if api != HANDLER_API:
            raise ReloadError(f"HANDLER_API is {api!r}, this server needs {HANDLER_API}")
        commands = getattr(module, "COMMANDS", None)
        if not isinstance(commands, dict) or not commands:
            raise ReloadError("COMMANDS must be a non-empty dict")
        for name, handler in commands.items():
            if not isinstance(name, str) or not name or name != name.lower():
                raise ReloadError(f"command name {name!r} must be a lower-case string")
            if not callable(handler):
                raise ReloadError(f"handler for {name!r} is not callable")
        selfcheck = getattr(module, "selfcheck", None)
        if selfcheck is not None:
            selfcheck()

    def _table(self, module) -> dict:
        table = dict(self.plugin_commands)
        # Core commands win: a plugin cannot shadow get or set by accident.
        table.update({name.encode(): fn for name, fn in module.COMMANDS.items()})
        return table

    def _swap(self, module, digest: str) -> None:
        # No greenlet switch can happen between these lines; connections see either
        # the old table or the new one, never a mix.
        self.commands = self._table(module)
        self.module = module
        sys.modules[MODULE_NAME] = module
        self.generation += 1
        self.sha256 = digest
        self.loaded_at = time.time()
