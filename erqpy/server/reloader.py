"""HandlerRegistry: load, check and swap the handler module, all or nothing.

``importlib.reload`` re-executes into the live module, so a reload that fails halfway
leaves a mix of old and new names, and it trusts a cached ``.pyc`` whose whole-second
mtime and size match.  Instead the source text is read and compiled
(``erqpy.server.fresh``, which plugins use too), executed into a *fresh* module object,
checked, and only then swapped in with one assignment of the command table.  Any failure
leaves the previous generation serving.

The handler code is one main file (``handlers.py``, or ``--handlers``) and its *parts*:
the files ``<stem>_*.py`` beside it (``handlers_get.py``, ...), so that no file grows past
what a reader can hold.  Parts are executed first, in name order, each into a fresh module
that the parts after it and the main file import by its usual name
(``from erqpy.server import handlers_get``): while a generation is built, ``sys.modules``
and the package attribute of each part name its fresh module, and they are put back as
they were if the generation is refused.  So a part imports only parts before it in name
order, at module level (an import inside a function would find whatever is live then).
"""

import glob
import hashlib
import logging
import os
import sys
import time

from erqpy.server import binary
from erqpy.server.fresh import exec_source, new_module

log = logging.getLogger("erqpy.reloader")

#: The handler API this server speaks; a module with another ``HANDLER_API`` is refused.
HANDLER_API = 3
MODULE_NAME = "erqpy.server.handlers"
PACKAGE = MODULE_NAME.rpartition(".")[0]
_MISSING = object()


def default_handlers_path() -> str:
    """The handlers shipped with erqpy, found beside this module: not through the import
    system, where ``MODULE_NAME`` is the live generation (a fresh module without a spec)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), MODULE_NAME.rpartition(".")[2] + ".py")


def handler_parts(path: str) -> list[str]:
    """The part files of the handler source ``path``: ``<stem>_*.py`` beside it, by name."""
    directory, filename = os.path.split(os.path.abspath(path))
    stem = filename[:-3] if filename.endswith(".py") else filename
    return sorted(glob.glob(os.path.join(glob.escape(directory), glob.escape(stem) + "_*.py")))


class _PartNames:
    """Points the import system's names of handler parts at given modules, and back."""

    def __init__(self):
        self._saved = {}  # full name -> (sys.modules entry, package attribute)

    def point(self, module) -> None:
        name = module.__name__
        package = sys.modules[PACKAGE]
        short = name.rpartition(".")[2]
        if name not in self._saved:
            self._saved[name] = (sys.modules.get(name, _MISSING), getattr(package, short, _MISSING))
        sys.modules[name] = module
        setattr(package, short, module)

    def restore(self) -> None:
        package = sys.modules[PACKAGE]
        for name, (entry, attribute) in self._saved.items():
            short = name.rpartition(".")[2]
            if entry is _MISSING:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = entry
            if attribute is _MISSING:
                if hasattr(package, short):
                    delattr(package, short)
            else:
                setattr(package, short, attribute)
        self._saved = {}


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
        self.parts = []  # the part modules of the live generation
        self.generation = 0
        self.sha256 = ""
        self.loaded_at = 0.0
        self.last_error = ""
        self.reloads = 0
        self.failed_reloads = 0
        self.plugin_commands = {}  # bytes -> callable, kept across handler reloads
        self._started = 0.0  # perf_counter at the last prepare(), to time reloads
        self.commands = {}
        # Of ``commands``, those a connection may run from the event loop's callback, with
        # their checks (the handler module's ``LOOP_SAFE``; none of the plugins').
        self.on_loop = {}

    def load(self) -> None:
        """First load at start; a failure here stops the server."""
        self.commit(*self.prepare())

    def prepare(self):
        """Compile and check a new generation without touching the live one.

        Returns ``(module, sha256, parts)`` for ``commit``; raises on any failure.
        The sha256 is of the parts' text in name order, then the main file's: of the main
        file alone when it has no parts (``cat handlers_*.py handlers.py | sha256sum``).
        """
        self._started = time.perf_counter()
        return self._build()

    def source_files(self) -> list[str]:
        """The files a generation is built from: the parts, then the main file."""
        return handler_parts(self.path) + [self.path]

    def commit(self, module, digest: str, parts=()) -> dict:
        """Swap in a prepared generation."""
        self._swap(module, digest, list(parts))
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
        digest = hashlib.sha256()
        names = _PartNames()
        parts = []
        try:
            for path in handler_parts(self.path):
                name = f"{PACKAGE}.{os.path.basename(path)[:-3]}"
                source = _read(path)
                digest.update(source)
                part = new_module(name, path)
                names.point(part)
                exec_source(part, source, path)
                parts.append(part)
            source = _read(self.path)
            digest.update(source)
            module = new_module(MODULE_NAME, self.path)
            exec_source(module, source, self.path)
            self._check(module)
        finally:
            names.restore()  # until commit: a refused generation leaves no trace
        return module, digest.hexdigest(), parts

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
        for name, check in getattr(module, "LOOP_SAFE", {}).items():
            if name not in commands:
                raise ReloadError(f"LOOP_SAFE names {name!r}, which is not in COMMANDS")
            if check is not None and not callable(check):
                raise ReloadError(f"LOOP_SAFE check for {name!r} is not callable")
        binary_commands = getattr(module, "BINARY_COMMANDS", {})
        for opcode, handler in binary_commands.items():
            if not isinstance(opcode, int) or not 0 <= opcode < len(binary.COMMAND_KEYS):
                raise ReloadError(f"binary opcode {opcode!r} is not one of binary.COMMAND_KEYS")
            if not callable(handler):
                raise ReloadError(f"handler for binary opcode {opcode!r} is not callable")
        selfcheck = getattr(module, "selfcheck", None)
        if selfcheck is not None:
            selfcheck()

    def _table(self, module) -> dict:
        table = dict(self.plugin_commands)
        # Core commands win: a plugin cannot shadow get or set by accident.
        table.update({name.encode(): fn for name, fn in module.COMMANDS.items()})
        # The binary protocol's opcodes, under keys no text command word can be.
        keys = binary.COMMAND_KEYS
        table.update({keys[opcode]: fn for opcode, fn in getattr(module, "BINARY_COMMANDS", {}).items()})
        return table

    def _swap(self, module, digest: str, parts: list) -> None:
        # No greenlet switch can happen between these lines; connections see either
        # the old table or the new one, never a mix.
        self.commands = self._table(module)
        self.on_loop = {name.encode(): check for name, check in getattr(module, "LOOP_SAFE", {}).items()}
        self.module = module
        self.parts = parts
        sys.modules[MODULE_NAME] = module
        live = _PartNames()
        for part in parts:
            live.point(part)  # kept: the live generation's parts are what import finds
        self.generation += 1
        self.sha256 = digest
        self.loaded_at = time.time()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
