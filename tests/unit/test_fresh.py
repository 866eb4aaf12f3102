"""erqpy.server.fresh: reloadable code from source text, compiled off the hub."""

import builtins
import hashlib

import pytest

from erqpy.server import fresh


def no_compile_on_the_hub(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("compile() ran in the server process")

    monkeypatch.setattr(builtins, "compile", refuse)


def test_code_compiled_in_a_child_process_is_executed_without_compiling_here(tmp_path, monkeypatch):
    path = tmp_path / "part.py"
    path.write_text("def answer():\n    return 42\n")

    assert 1 == fresh.compile_elsewhere([str(path)])

    assert fresh._compiled[str(path)][0] == hashlib.sha256(path.read_bytes()).digest()
    no_compile_on_the_hub(monkeypatch)
    module = fresh.new_module("part", str(path))
    fresh.exec_source(module, path.read_bytes(), str(path))
    assert 42 == module.answer()
    assert str(path) == module.answer.__code__.co_filename


def test_a_file_compiled_before_is_not_compiled_again(tmp_path):
    path = tmp_path / "same.py"
    path.write_text("X = 1\n")
    assert 1 == fresh.compile_elsewhere([str(path)])

    assert 0 == fresh.compile_elsewhere([str(path)])


def test_a_file_edited_after_the_child_compiled_it_is_compiled_from_its_new_text(tmp_path):
    path = tmp_path / "edited.py"
    path.write_text("X = 1\n")
    fresh.compile_elsewhere([str(path)])
    path.write_text("X = 2\n")

    module = fresh.new_module("edited", str(path))
    fresh.exec_source(module, path.read_bytes(), str(path))

    assert 2 == module.X


def test_a_syntax_error_is_left_to_the_reload_which_reports_it(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("def broken(:\n")

    assert 0 == fresh.compile_elsewhere([str(path)])

    with pytest.raises(SyntaxError):
        fresh.exec_source(fresh.new_module("broken", str(path)), path.read_bytes(), str(path))


def test_the_package_digest_changes_with_any_file_of_the_package(tmp_path, monkeypatch):
    package = tmp_path / "digpkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "deep.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import digpkg

    before = fresh.package_digest(digpkg)
    assert before == fresh.package_digest(digpkg)
    (package / "sub" / "deep.py").write_text("X = 2\n")
    assert before != fresh.package_digest(digpkg)
    assert str(package / "sub" / "deep.py") in fresh.package_files(digpkg)


def test_nothing_changed_means_no_child_process(tmp_path, monkeypatch):
    path = tmp_path / "calm.py"
    path.write_text("X = 1\n")
    assert 1 == fresh.compile_elsewhere([str(path)])

    def no_child(*args, **kwargs):
        raise AssertionError("a child process was started for unchanged files")

    import gevent.subprocess

    monkeypatch.setattr(gevent.subprocess, "run", no_child)
    assert 0 == fresh.compile_elsewhere([str(path)])


def test_one_compile_worker_serves_every_reload_and_a_dead_one_is_replaced(tmp_path):
    """Starting a child per reload cost 30-40 ms of CPU each time: the worker is kept.
    Killed, the next compilation starts another and still compiles."""
    import os
    import signal

    from erqpy.server import compile_worker

    path = tmp_path / "kept.py"
    path.write_text("X = 1\n")
    assert 1 == fresh.compile_elsewhere([str(path)])
    first = compile_worker.pid()
    path.write_text("X = 22\n")
    assert 1 == fresh.compile_elsewhere([str(path)])
    assert first != 0 and first == compile_worker.pid()

    os.kill(first, signal.SIGKILL)
    path.write_text("X = 333\n")
    assert 1 == fresh.compile_elsewhere([str(path)])
    assert compile_worker.pid() not in (0, first)
    module = fresh.new_module("kept", str(path))
    fresh.exec_source(module, path.read_bytes(), str(path))
    assert 333 == module.X
    compile_worker.stop()
    assert 0 == compile_worker.pid()
