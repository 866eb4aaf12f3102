"""The long run of the data-port fuzzer: rounds of fresh seeds against one server, with a
SIGKILL and restart on the same directory after each round.  See tests/fuzz/fuzzlib.py."""

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import ErqServer  # noqa: E402
from tests.fuzz.fuzzlib import Fuzzer, FuzzFailure, check_protected, put_protected  # noqa: E402

ROUND_SECONDS = 60
CASES_PER_ROUND = 100_000  # a bound; the round's time ends it first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0, help="total run time (default 5)")
    parser.add_argument("--seed", type=int, help="first seed (default: random, printed)")
    parser.add_argument("--fsync", default="interval", choices=("always", "interval", "never"))
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    end = time.monotonic() + args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="erqpy-fuzz-") as tmp:
        srv = ErqServer(Path(tmp) / "data", ["--fsync", args.fsync]).start()
        try:
            items = put_protected(srv.address, 50)
            rounds = 0
            totals = {}
            while time.monotonic() < end:
                fuzzer = Fuzzer(srv.address, seed + rounds, alive=lambda: srv.proc.poll() is None)
                deadline = min(end, time.monotonic() + ROUND_SECONDS)
                counts = fuzzer.run(CASES_PER_ROUND, deadline, every_offset_cases=1)
                for family, count in counts.items():
                    totals[family] = totals.get(family, 0) + count
                check_protected(srv.address, items)
                if "Traceback" in srv.log():
                    raise FuzzFailure(f"a traceback in the server log after seed {seed + rounds}")
                srv.kill9()
                srv.start()
                check_protected(srv.address, items)
                rounds += 1
                print(f"round {rounds} seed {seed + rounds - 1}: {counts}", file=sys.stderr, flush=True)
            print(f"fuzz: {rounds} rounds from seed {seed}, {totals}, no failure")
            return 0
        except FuzzFailure as failure:
            print(f"fuzz: FAILED: {failure}\nserver log tail:\n{srv.log()[-4000:]}")
            return 1
        finally:
            srv.stop()


if __name__ == "__main__":
    sys.exit(main())
