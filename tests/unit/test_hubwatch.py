"""The measuring instruments of scripts/hubwatch, loaded into a real server the way
``scripts/bench_stall --hub-watch/--iter-watch`` loads them: they must write what they
promise, and the server must serve as usual with them in.  (Their figures back the
README's findings on pauses; an instrument that silently wrote nothing would make a
clean run of bench_stall look like a calm hub.)"""

import re

from tests.conftest import ROOT

HUBWATCH_DIR = ROOT / "scripts" / "hubwatch"


def test_the_beat_and_the_turn_watch_report_from_a_serving_server(make_server, tmp_path):
    beats = tmp_path / "beats.txt"
    turns = tmp_path / "turns.txt"
    server = make_server(env={
        "PYTHONPATH": str(HUBWATCH_DIR),
        "HUBWATCH": str(beats), "HUBWATCH_MS": "0",  # every late beat: a report each
        "HUBWATCH_ITER": str(turns), "HUBWATCH_ITER_MS": "0",  # every busy turn
        "HUBWATCH_GC_MS": "0",  # and every collection, on lines of their own
    })
    raw = server.raw()
    raw.send(b"".join(b"set watched 0 0 5\r\n%05d\r\n" % n for n in range(2_000)))
    for _ in range(2_000):
        assert b"STORED\r\n" == raw.line(timeout=30)
    raw.send(b"get watched\r\n" * 2_000)
    for n in range(2_000):
        assert b"VALUE watched 0 5\r\n" == raw.line(timeout=30)
        assert b"%05d\r\n" % n == raw.line(timeout=30)
        assert b"END\r\n" == raw.line(timeout=30)
    raw.close()
    assert 0 == server.terminate()

    lines = turns.read_text().splitlines()
    turn = re.compile(r"^\d+\.\d{6} turn \d+\.\d ms \(on cpu \d+\.\d\): ")
    collection = re.compile(r"^\d+\.\d{6} gc[012] \d+\.\d ms: collected \d+, uncollectable \d+; counts "
                            r"after \(\d+, \d+, \d+\); snapshot copies alive \d+$")
    turn_lines = [line for line in lines if turn.match(line)]
    assert turn_lines and all(collection.match(line) for line in lines if line not in turn_lines), lines[:5]
    written = "\n".join(turn_lines)
    for part in ("serve from the loop", "journal group write", "hub "):
        assert part in written, (part, turn_lines[:5])
    assert len(lines) > len(turn_lines), "no collection written, with HUBWATCH_GC_MS 0"

    beat_reports = [line for line in beats.read_text().splitlines() if line.startswith("=== ")]
    beat = re.compile(r"^=== \d+\.\d{6} hub busy \d+\.\d ms \(on cpu \d+\.\d, runnable -?\d+\.\d, "
                      r"asleep \d+\.\d\)$")
    assert beat_reports and all(beat.match(line) for line in beat_reports), beat_reports[:5]
