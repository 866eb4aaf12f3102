"""The linter (ruff) and the type checker (mypy) pass, with the configuration in
pyproject.toml: this is how CI runs them (.ci/run runs the test suite).

Both come from the test environment (the ``test`` extras); neither missing is a failure,
not a skip, since a skipped check would pass unseen.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(tool: str, *args: str) -> None:
    executable = BIN / tool
    assert executable.exists(), f"{tool} is not installed in {BIN}: install erqpy[test]"
    result = subprocess.run([str(executable), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert 0 == result.returncode, f"{tool} {' '.join(args)} failed:\n{result.stdout}{result.stderr}"


def test_ruff_finds_nothing_in_erqpy_and_the_plugins():
    _run("ruff", "check", "--no-cache", "erqpy", "plugins")


def test_mypy_finds_nothing_in_erqpy():
    # The files to check come from [tool.mypy] in pyproject.toml.
    _run("mypy", "--no-incremental", "--cache-dir", "/dev/null")
