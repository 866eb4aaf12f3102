"""Seeded fuzzing of the data port against a real server (see fuzzlib for the oracles).

Bounded: a fixed number of cases and a time budget, so CI stays fast; ``scripts/fuzz
--minutes N`` runs the same families for longer and with fresh seeds.
"""

import os
import time

import pytest

from tests.fuzz.fuzzlib import Fuzzer, check_protected, put_protected

SEED = int(os.environ.get("ERQPY_FUZZ_SEED", "20261201"))
CASES = 400
BUDGET_SECONDS = 90
PROTECTED_ITEMS = 50


def test_fuzz_keeps_the_server_up_in_step_and_the_protected_queue_intact(make_server):
    srv = make_server()
    items = put_protected(srv.address, PROTECTED_ITEMS)
    fuzzer = Fuzzer(srv.address, SEED, alive=lambda: srv.proc.poll() is None)
    counts = fuzzer.run(CASES, time.monotonic() + BUDGET_SECONDS, every_offset_cases=3)
    assert counts["well_framed"] > 100 and counts["mutated"] > 100, counts
    assert counts["split"] > 100, counts  # every offset of the first sequences, and more
    assert srv.proc.poll() is None, "the server died"
    check_protected(srv.address, items)
    log = srv.log()
    assert "Traceback" not in log, log[-3000:]
    # Acknowledged items survive a crash as well as the fuzz.
    srv.kill9()
    srv.start()
    check_protected(srv.address, items)


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzz_other_seeds_briefly(make_server, seed):
    srv = make_server()
    items = put_protected(srv.address, 10)
    fuzzer = Fuzzer(srv.address, seed, alive=lambda: srv.proc.poll() is None)
    counts = fuzzer.run(120, time.monotonic() + 30)
    assert sum(counts.values()) > 100, counts
    check_protected(srv.address, items)
    assert "Traceback" not in srv.log()
