"""docs/PROTOCOL.md "Stats fields" is the list ``stats`` sends: no more, no fewer."""

import re
from pathlib import Path

from proto_helpers import stats

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"


def documented_fields():
    """(server fields, per-queue fields) as PROTOCOL.md lists them."""
    text = PROTOCOL.read_text()
    body = re.search(r"^## Stats fields\n(.*?)(?=^#)", text, re.S | re.M).group(1)
    server = re.search(r"Server: `([^`]+)`", body).group(1).split()
    per_queue = re.search(r"as `queue_<q>_<field>`: `([^`]+)`, and `children`", body).group(1).split()
    return server, per_queue


def test_stats_sends_exactly_the_documented_fields(make_server):
    server_fields, queue_fields = documented_fields()
    assert "curr_items" in server_fields and "items" in queue_fields  # the parse found the lists
    server = make_server()
    raw = server.raw()
    # A fanout master with one child: the master also reports `children`.
    assert b"STORED\r\n" == raw.call(b"set doc+child 0 0 1\r\na\r\n")
    assert b"STORED\r\n" == raw.call(b"set doc 0 0 1\r\nb\r\n")

    sent = set(stats(server))

    expected = set(server_fields) | {"queue_doc_children"}
    for queue in ("doc", "doc+child"):
        expected |= {f"queue_{queue}_{field}" for field in queue_fields}
    assert sorted(expected - sent) == [], "documented but not sent"
    assert sorted(sent - expected) == [], "sent but not documented in docs/PROTOCOL.md"
