"""Execute reloadable code from its source text into fresh module objects.

Shared by the handler reloader and the plugin manager, so that handler and plugin code
reload with the same guarantees:

- the source text is read every time, and compiled unless that exact text was compiled
  before (``_compiled``, keyed by its sha256): no ``.pyc`` is trusted (a cached
  ``.pyc`` is believed when the source's whole-second mtime and size match, so a
  same-size edit within a second would load the old code) and none is written;
- the code runs in a *new* module object, never in the live one (``importlib.reload``
  re-executes into the live module, so a failure halfway leaves a mix of old and new).

``SourceFinder`` extends this to whole packages: on ``sys.meta_path`` it serves every
module of the packages it is given (the package, its subpackages and submodules) through
``SourceLoader``, however the module is imported (``import pkg.sub``, ``from . import
sub``, or lazily inside a function).
"""

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types


#: path -> (sha256 of the source text, its code object): the last compilation of each
#: file.  Keyed by content, never by mtime or size, so it cannot serve stale code; it
#: spares a reload recompiling the files that did not change (a plugin package of a
#: dozen modules costs about 40 ms of compile(), all of it holding the hub).
_compiled = {}


def exec_source(module: types.ModuleType, source: bytes, path: str) -> None:
    """Compile ``source`` (the text of ``path``) and execute it into ``module``."""
    digest = hashlib.sha256(source).digest()
    cached = _compiled.get(path)
    if cached is not None and cached[0] == digest:
        code = cached[1]
    else:
        code = compile(source, path, "exec", dont_inherit=True, optimize=sys.flags.optimize)
        _compiled[path] = (digest, code)
    exec(code, module.__dict__)


def compile_elsewhere(paths, timeout: float = 30.0) -> int:
    """Compile the files of ``paths`` that changed since their last compilation in a
    child process (``compile_worker``, one kept for all reloads), off the hub, and keep
    the code objects for ``exec_source``.

    ``compile()`` holds the interpreter lock for its whole run (about 5 ms for a 400-line
    handler file here), so a thread would not free the hub; a child process does, and
    ``marshal`` brings the code back in well under a millisecond.  Code objects are kept
    under the digest of the text the child compiled: a file edited again in the meantime
    misses the cache and is compiled on the hub, as before.  Any failure (no child
    process, a timeout) only means the same.  Returns how many files came back compiled.
    """
    from erqpy.server import compile_worker

    wanted = [(path, known) for path, known in ((p, _compiled.get(p, (b"", None))[0]) for p in paths)
              if known != _digest_of(path)]
    if not wanted:
        return 0  # nothing changed (a configuration-only reload): nothing to ask
    compiled = compile_worker.compile_files(wanted, sys.flags.optimize, timeout)
    if compiled is None:
        return 0
    for path, digest, code in compiled:
        _compiled[path] = (digest, code)
    return len(compiled)


def new_module(name: str, path: str) -> types.ModuleType:
    """An empty module object for the (non-package) module ``name`` at ``path``."""
    module = types.ModuleType(name)
    module.__file__ = path
    module.__package__ = name.rpartition(".")[0]
    return module


class SourceLoader(importlib.abc.Loader):
    """Loads a module by compiling its source file, ignoring ``__pycache__``."""

    def create_module(self, spec):
        return None  # the import system's default module object

    def exec_module(self, module) -> None:
        path = module.__spec__.origin
        with open(path, "rb") as f:
            source = f.read()
        exec_source(module, source, path)


class SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of ``packages`` (top-level names) and loads them from source.

    Placed first on ``sys.meta_path``.  Locating a module is left to the finders after
    it (the path finder, or the finder of an editable install); only the loader is
    replaced, and only for plain ``.py`` files (a namespace package or an extension
    module is returned as found).
    """

    def __init__(self):
        self.packages = set()

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] not in self.packages:
            return None
        spec = self._locate(fullname, path, target)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        return importlib.util.spec_from_file_location(
            fullname, spec.origin, loader=SourceLoader(),
            submodule_search_locations=spec.submodule_search_locations,
        )

    def _locate(self, fullname, path, target):
        for finder in list(sys.meta_path):
            if finder is self:
                continue
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                return spec
        return None

    def install(self) -> None:
        """Put this finder first on ``sys.meta_path`` (once)."""
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)


def package_modules(package: str) -> dict:
    """The ``sys.modules`` entries of ``package`` and everything below it."""
    prefix = package + "."
    return {name: module for name, module in sys.modules.items()
            if name == package or name.startswith(prefix)}


def _digest_of(path: str) -> bytes:
    """sha256 of the file's text, b"" when it cannot be read (the child then tries)."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).digest()
    except OSError:
        return b""


def package_files(module) -> list[str]:
    """Every ``.py`` file of the package ``module`` (or the one file of a plain module),
    in path order."""
    roots = list(getattr(module, "__path__", None) or [])
    single = getattr(module, "__file__", None)
    files = [] if roots or not single else [single]
    for root in roots:
        for directory, subdirs, names in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
            files += [os.path.join(directory, name) for name in sorted(names) if name.endswith(".py")]
    return files


def package_digest(module) -> bytes:
    """sha256 over the path and text of every file of ``package_files(module)``: equal
    digests, the same code."""
    digest = hashlib.sha256()
    files = package_files(module)
    if not files:
        return b""  # nothing to hash: always executed afresh
    for path in files:
        digest.update(path.encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(f.read())
        digest.update(b"\0")
    return digest.digest()
