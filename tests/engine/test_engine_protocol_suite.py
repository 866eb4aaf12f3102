"""A CI-sized part of tests/protocol run against engine-mode servers
(``ERQPY_TEST_BACKEND=redis``, tests/protocol/engine_backend.py), in a pytest of its own:
the whole directory takes ~9 minutes that way, these files under a minute.  Every test
must pass; a skip there is one of the listed differences and counts as no pass."""

import os
import re
import subprocess
import sys

from tests.conftest import ROOT

SUBSET = ["test_smoke.py", "test_commands.py", "test_reliable_reads.py", "test_fanout.py"]


def test_a_part_of_the_protocol_suite_passes_on_an_engine_node():
    env = {**os.environ, "ERQPY_TEST_BACKEND": "redis"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header",
         *(f"tests/protocol/{name}" for name in SUBSET)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert 0 == result.returncode, result.stdout[-6000:] + result.stderr[-2000:]
    counts = {word: int(number) for number, word in re.findall(r"(\d+) (\w+)", summary)}
    assert counts.get("passed", 0) >= 60 and set(counts) == {"passed"}, summary
