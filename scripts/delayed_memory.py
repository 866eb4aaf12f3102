"""Memory per delayed item against memory per queued item (issue 14: 1 M delayed items
may cost no more per item than queued ones), measured with tracemalloc in one process.

    .venv/bin/python scripts/delayed_memory.py [--items 1000000] [--size 16]

Fills one memory-only queue (``storage.memory.MemoryQueue``, the same ``Item`` and the
same accounting as a journaled queue's memory) with N plain items, then another with N
delayed items, and prints the traced bytes per item of each, the payload included, and
their ratio.  Not a test: a figure for the README, with the CPU it ran on.
"""

import argparse
import platform
import tracemalloc

from erqpy.server.config import Settings
from erqpy.storage.items import now_ms
from erqpy.storage.memory import MemoryQueue


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def per_item(count: int, size: int, delayed: bool) -> float:
    queue = MemoryQueue("q", Settings().queue_config("q"))
    now = now_ms()
    due = now + 3600_000 if delayed else 0
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    # Made inside the trace and let go once added, as a request's bytes are: a plain
    # item copies its payload into itself (items.PlainItem), a delayed one refers to it,
    # so only counting the payload in both compares them.
    payloads = [b"%0*d" % (size, n) for n in range(count)]
    for payload in payloads:
        queue.add(payload, 0, 0, now, due)
    del payloads, payload
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert (len(queue.delayed) if delayed else queue.count) == count
    queue.close()
    return used / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=16, help="payload bytes")
    args = parser.parse_args()
    queued = per_item(args.items, args.size, delayed=False)
    delayed = per_item(args.items, args.size, delayed=True)
    print(f"CPU: {cpu_model()}")
    print(f"{args.items} items of {args.size} B: queued {queued:.1f} B/item, delayed {delayed:.1f} B/item, "
          f"delayed/queued {delayed / queued:.3f}")


if __name__ == "__main__":
    main()
