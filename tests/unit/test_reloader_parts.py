"""The handler code is a main file and its parts (``<stem>_*.py`` beside it); a reload
compiles all of them into fresh modules, and a refused one leaves the import system as it
was.  Run on real files: copies of erqpy's own handlers in tmp_path."""

import hashlib
import shutil
import sys
from pathlib import Path

import pytest

from erqpy.server import reloader
from erqpy.server.reloader import HandlerRegistry, default_handlers_path



@pytest.fixture
def handler_dir(tmp_path):
    """erqpy's handler files, copied: the main file and every part."""
    for path in [Path(default_handlers_path()), *map(Path, reloader.handler_parts(default_handlers_path()))]:
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def registry_on(directory) -> HandlerRegistry:
    registry = HandlerRegistry(str(directory / "handlers.py"))
    registry.load()
    return registry


def test_the_shipped_handlers_have_parts_and_each_is_loaded_fresh(handler_dir):
    registry = registry_on(handler_dir)

    names = [part.__name__ for part in registry.parts]
    assert ["erqpy.server.handlers_common", "erqpy.server.handlers_get", "erqpy.server.handlers_meta",
            "erqpy.server.handlers_stats", "erqpy.server.handlers_wire_binary"] == names
    assert all(Path(part.__file__).parent == handler_dir for part in registry.parts)
    # The main file's commands are the fresh parts' functions, not the installed ones.
    assert registry.commands[b"stats"].__module__ == "erqpy.server.handlers_stats"
    assert registry.module.cmd_stats is registry.parts[names.index("erqpy.server.handlers_stats")].cmd_stats


def test_an_edit_of_a_part_takes_effect_at_the_next_reload(handler_dir):
    registry = registry_on(handler_dir)
    part = handler_dir / "handlers_common.py"
    part.write_text(part.read_text().replace('PROTOCOL_VERSION = b"2.4.1"', 'PROTOCOL_VERSION = b"9.9.9"'))

    registry.commit(*registry.prepare())

    assert b"9.9.9" == registry.module.PROTOCOL_VERSION
    assert 2 == registry.generation


def test_a_broken_part_refuses_the_reload_and_restores_the_import_system(handler_dir):
    registry = registry_on(handler_dir)
    live = registry.module
    before = {name: sys.modules.get(name) for name in
              ("erqpy.server.handlers_common", "erqpy.server.handlers_get", "erqpy.server.handlers_stats")}
    part = handler_dir / "handlers_stats.py"
    part.write_text(part.read_text() + "\ndef broken(:\n")

    with pytest.raises(SyntaxError):
        registry.prepare()

    assert live is registry.module and 1 == registry.generation
    assert before == {name: sys.modules.get(name) for name in before}


def test_a_part_that_fails_when_run_refuses_the_reload_before_the_main_file(handler_dir):
    registry = registry_on(handler_dir)
    part = handler_dir / "handlers_get.py"
    part.write_text(part.read_text() + "\nraise RuntimeError('part failed')\n")

    with pytest.raises(RuntimeError, match="part failed"):
        registry.prepare()

    assert 1 == registry.generation


def test_a_single_handler_file_without_parts_imports_the_live_parts(tmp_path):
    """A --handlers file of its own (the reload tests' kind) has no parts beside it: its
    imports find the parts the import system has (erqpy's, or the last generation's)."""
    shutil.copy(default_handlers_path(), tmp_path / "handlers.py")

    registry = registry_on(tmp_path)

    assert [] == registry.parts
    assert registry.module.cmd_get is sys.modules["erqpy.server.handlers_get"].cmd_get


def test_the_sha256_covers_the_parts_then_the_main_file(handler_dir):
    """As ``cat handlers_*.py handlers.py | sha256sum`` prints it, for an operator to compare."""
    registry = registry_on(handler_dir)

    files = sorted(handler_dir.glob("handlers_*.py")) + [handler_dir / "handlers.py"]
    assert hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest() == registry.sha256
