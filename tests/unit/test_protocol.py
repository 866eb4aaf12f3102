"""The sans-IO request parser (erqpy.protocol): every case is fed whole, one byte at a
time and in seeded random chunks, and must give the same, expected, requests each way."""

import random

import pytest

from erqpy.errors import BadDataChunk, ClientError, LineTooLong
from erqpy.server.protocol import MAX_LINE, Parser


def summary(requests):
    """Requests as plain tuples: (command, args, data, error class, error text, too_large)."""
    return [
        (
            r.command,
            tuple(r.args),
            r.data,
            type(r.error).__name__ if r.error is not None else None,
            str(r.error) if r.error is not None else None,
            r.too_large,
        )
        for r in requests
    ]


def req(command, *args, data=None, error=None, reason=None, too_large=False):
    return (command, tuple(args), data, error, reason, too_large)


def feed_whole(data, **kw):
    return summary(Parser(**kw).feed(data))


def feed_bytewise(data, **kw):
    parser = Parser(**kw)
    out = []
    for byte in data:
        out.extend(parser.feed(bytes([byte])))
    return summary(out)


def feed_chunks(data, seed, max_chunk=9, **kw):
    """Feed ``data`` in random chunk sizes (1..max_chunk, sometimes larger), seeded."""
    rng = random.Random(seed)
    parser = Parser(**kw)
    out = []
    pos = 0
    while pos < len(data):
        size = rng.randint(1, max_chunk) if rng.random() < 0.8 else rng.randint(1, 4 * max_chunk)
        out.extend(parser.feed(data[pos : pos + size]))
        pos += size
    return summary(out)


BAD_FORMAT = ("ClientError", "bad command line format")
LOST_FORMAT = ("FramingLost", "bad command line format")
LOST_LONG = ("FramingLost", "line too long")
BAD_CHUNK = ("BadDataChunk", "bad data chunk")
TOO_LONG = ("LineTooLong", "line too long")


def err(kind):
    return {"error": kind[0], "reason": kind[1]}


SHORT_LINE = 32  # a small max_line, so that byte-by-byte feeding of long lines stays cheap

# (id, input, expected requests, parser keyword arguments)
CASES = [
    ("get", b"get q\r\n", [req(b"get", b"q")], {}),
    ("bare lf", b"get q\nversion\n", [req(b"get", b"q"), req(b"version")], {}),
    ("runs of spaces", b"  get   a  b    c  \r\n", [req(b"get", b"a", b"b", b"c")], {}),
    ("case kept for caller", b"GeT Q\r\nSET Q 1 2 1\r\nx\r\n",
     [req(b"GeT", b"Q"), req(b"SET", b"Q", b"1", b"2", b"1", data=b"x")], {}),
    ("empty line", b"\r\n\n", [req(b""), req(b"")], {}),
    ("set", b"set q 5 0 5\r\nhello\r\n", [req(b"set", b"q", b"5", b"0", b"5", data=b"hello")], {}),
    ("set noreply", b"set q 0 0 2 noreply\r\nhi\r\n",
     [req(b"set", b"q", b"0", b"0", b"2", b"noreply", data=b"hi")], {}),
    ("empty block", b"set q 0 0 0\r\n\r\nget q\r\n",
     [req(b"set", b"q", b"0", b"0", b"0", data=b""), req(b"get", b"q")], {}),
    ("binary block", b"set q 0 0 9\r\n\r\n\x00END\r\n\n\r\n",
     [req(b"set", b"q", b"0", b"0", b"9", data=b"\r\n\x00END\r\n\n")], {}),
    ("storage line with runs of spaces", b"set   q  0   0  3 \r\nabc\r\n",
     [req(b"set", b"q", b"0", b"0", b"3", data=b"abc")], {}),
    ("pipelined", b"set q 0 0 1\r\na\r\nget q\r\nset r 0 0 2\r\nbb\r\nget q r\r\n",
     [req(b"set", b"q", b"0", b"0", b"1", data=b"a"), req(b"get", b"q"),
      req(b"set", b"r", b"0", b"0", b"2", data=b"bb"), req(b"get", b"q", b"r")], {}),
    ("unknown storage commands carry blocks",
     b"add q 0 0 3\r\nget\r\nReplace q 0 0 1\r\nx\r\ncas q 0 0 2 99\r\nhi\r\nappend q 0 0 1\r\ny\r\n"
     b"prepend q 0 0 1\r\nz\r\n",
     [req(b"add", b"q", b"0", b"0", b"3", data=b"get"), req(b"Replace", b"q", b"0", b"0", b"1", data=b"x"),
      req(b"cas", b"q", b"0", b"0", b"2", b"99", data=b"hi"), req(b"append", b"q", b"0", b"0", b"1", data=b"y"),
      req(b"prepend", b"q", b"0", b"0", b"1", data=b"z")], {}),
    # A storage length that cannot be read loses the framing: nothing after it is parsed,
    # so a block holding commands is never run as commands.
    ("non-numeric length", b"set q 0 0 x\r\nabc\r\n",
     [req(b"set", b"q", b"0", b"0", b"x", **err(LOST_FORMAT))], {}),
    ("negative length", b"set q 0 0 -1\r\nget q\r\n",
     [req(b"set", b"q", b"0", b"0", b"-1", **err(LOST_FORMAT))], {}),
    ("missing length", b"set q 0 0\r\nset\r\n",
     [req(b"set", b"q", b"0", b"0", **err(LOST_FORMAT))], {}),
    ("length of 13 digits", b"set q 0 0 1000000000000\r\nget q\r\n",
     [req(b"set", b"q", b"0", b"0", b"1000000000000", **err(LOST_FORMAT))], {}),
    ("length of 16 digits", b"set q 0 0 1234567890123456\r\ndelete victim\r\n",
     [req(b"set", b"q", b"0", b"0", b"1234567890123456", **err(LOST_FORMAT))], {}),
    ("block too long", b"set q 0 0 3\r\nabcde\r\nget q\r\n",
     [req(b"set", b"q", b"0", b"0", b"3", **err(BAD_CHUNK)), req(b"get", b"q")], {}),
    ("block ends with bare lf", b"set q 0 0 3\r\nabc\nget q\r\n",
     [req(b"set", b"q", b"0", b"0", b"3", **err(BAD_CHUNK)), req(b"get", b"q")], {}),
    ("block too short swallows the next line", b"set q 0 0 6\r\nabc\r\nget q\r\nversion\r\n",
     [req(b"set", b"q", b"0", b"0", b"6", **err(BAD_CHUNK)), req(b"version")], {}),
    ("line too long, then in step", b"get " + b"a" * 60 + b"\r\nget q\r\n",
     [req(b"", **err(TOO_LONG)), req(b"get", b"q")], {"max_line": SHORT_LINE}),
    ("line of max_line with crlf", b"v" * SHORT_LINE + b"\r\nget q\r\n",
     [req(b"v" * SHORT_LINE), req(b"get", b"q")], {"max_line": SHORT_LINE}),
    ("line of max_line with lf", b"v" * SHORT_LINE + b"\nget q\r\n",
     [req(b"v" * SHORT_LINE), req(b"get", b"q")], {"max_line": SHORT_LINE}),
    ("line of max_line + 1 with lf", b"v" * (SHORT_LINE + 1) + b"\nget q\r\n",
     [req(b"", **err(TOO_LONG)), req(b"get", b"q")], {"max_line": SHORT_LINE}),
    ("line of max_line + 1 with crlf", b"v" * (SHORT_LINE + 1) + b"\r\nget q\r\n",
     [req(b"", **err(TOO_LONG)), req(b"get", b"q")], {"max_line": SHORT_LINE}),
    ("line of max_line ending in a content cr", b"v" * SHORT_LINE + b"\r\r\nget q\r\n",
     [req(b"", **err(TOO_LONG)), req(b"get", b"q")], {"max_line": SHORT_LINE}),
    ("very long line is one error", b"x" * (SHORT_LINE * 20) + b"\r\nget q\r\n",
     [req(b"", **err(TOO_LONG)), req(b"get", b"q")], {"max_line": SHORT_LINE}),
    # An over-long storage line has its block skipped when the length can be read from
    # its last tokens, and loses the framing when it cannot.
    ("long storage line skips its block", b"set " + b"q" * 40 + b" 0 0 24\r\ndelete victim\r\nflush_all\r\n"
     b"get q\r\n", [req(b"", **err(TOO_LONG)), req(b"get", b"q")], {"max_line": SHORT_LINE}),
    ("long storage line with noreply", b"SET " + b"q" * 40 + b" 0 0 3 noreply\r\nabc\r\nget q\r\n",
     [req(b"", **err(TOO_LONG)), req(b"get", b"q")], {"max_line": SHORT_LINE}),
    ("long cas line", b"cas " + b"q" * 40 + b" 0 0 3 77\r\nabc\r\nget q\r\n",
     [req(b"", **err(TOO_LONG)), req(b"get", b"q")], {"max_line": SHORT_LINE}),
    ("long storage line, long flags", b"set q " + b"1" * 40 + b" 0 3\r\nabc\r\nget q\r\n",
     [req(b"", **err(TOO_LONG)), req(b"get", b"q")], {"max_line": SHORT_LINE}),
    ("long storage line, 16-digit length", b"set " + b"q" * 40 + b" 0 0 1234567890123456\r\nget q\r\n",
     [req(b"", **err(LOST_LONG))], {"max_line": SHORT_LINE}),
    ("long storage line, length unreadable", b"set " + b"q" * 40 + b" 0 0 x\r\nget q\r\n",
     [req(b"", **err(LOST_LONG))], {"max_line": SHORT_LINE}),
    ("long storage line, too many tokens", b"set " + b"q " * 20 + b"0 0 1\r\nx\r\nget q\r\n",
     [req(b"", **err(LOST_LONG))], {"max_line": SHORT_LINE}),
    ("long line, command beyond the limit", b" " * (SHORT_LINE + 5) + b"set q 0 0 1\r\nx\r\nget q\r\n",
     [req(b"", **err(LOST_LONG))], {"max_line": SHORT_LINE}),
    ("long line, command word too long", b"setx" * 20 + b" q 0 0 1\r\nget q\r\n",
     [req(b"", **err(TOO_LONG)), req(b"get", b"q")], {"max_line": SHORT_LINE}),
    ("block at the item limit", b"set q 0 0 10\r\n0123456789\r\n",
     [req(b"set", b"q", b"0", b"0", b"10", data=b"0123456789")], {"max_item_size": 10}),
    ("block over the item limit", b"set q 0 0 11\r\nget q\r\nget!\r\nversion\r\n",
     [req(b"set", b"q", b"0", b"0", b"11", too_large=True), req(b"version")], {"max_item_size": 10}),
    ("long block within the limit", b"set q 0 0 100\r\n" + b"z" * 100 + b"\r\n",
     [req(b"set", b"q", b"0", b"0", b"100", data=b"z" * 100)], {"max_line": SHORT_LINE}),
]


@pytest.mark.parametrize("data,expected,kw", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_case_fed_whole(data, expected, kw):
    """Fed in one piece, the input gives exactly the expected requests."""
    assert expected == feed_whole(data, **kw)


@pytest.mark.parametrize("data,expected,kw", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_case_fed_byte_by_byte(data, expected, kw):
    """Fed one byte at a time, the input gives the same requests."""
    assert expected == feed_bytewise(data, **kw)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("data,expected,kw", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_case_fed_in_random_chunks(data, expected, kw, seed):
    """Fed in seeded random chunks, the input gives the same requests."""
    assert expected == feed_chunks(data, seed, **kw)


def test_all_cases_concatenated_split_at_every_point():
    """All default-limit cases as one stream, cut in two at every byte, give the same requests."""
    # Cases that lose the framing end the stream, so they are left out.
    kept = [c for c in CASES if not c[3] and not any(r[3] == "FramingLost" for r in c[2])]
    stream = b"".join(c[1] for c in kept)
    expected = feed_whole(stream)

    for cut in range(1, len(stream)):
        parser = Parser()
        got = summary(parser.feed(stream[:cut]) + parser.feed(stream[cut:]))
        assert expected == got, f"cut at {cut}"
    assert sum(len(c[2]) for c in kept) == len(expected)


def test_real_size_line_limit_is_64_kib():
    """With the default limit, 64 KiB of line is accepted and one byte more is refused."""
    ok = b"g" * MAX_LINE + b"\r\n"
    too_long = b"g" * (MAX_LINE + 1) + b"\r\n"

    assert 64 * 1024 == MAX_LINE
    for feed in (feed_whole, lambda d: feed_chunks(d, 1, max_chunk=4096)):
        assert [req(b"g" * MAX_LINE)] == feed(ok)
        assert [req(b"", **err(TOO_LONG))] == feed(too_long)


def test_line_too_long_is_reported_before_the_newline_arrives():
    """A client that never ends its line gets the error as soon as the limit is passed."""
    parser = Parser(max_line=SHORT_LINE)

    early = parser.feed(b"x" * (SHORT_LINE + 2))
    later = parser.feed(b"x" * 1000)

    assert [req(b"", **err(TOO_LONG))] == summary(early)
    assert [] == later
    assert [req(b"version")] == summary(parser.feed(b"\r\nversion\r\n"))
    assert 0 == parser.buffered


def test_partial_line_is_buffered_up_to_the_limit_only():
    """While a line is incomplete the parser holds it; past the limit it holds nothing."""
    parser = Parser(max_line=SHORT_LINE)

    parser.feed(b"get q")
    assert 5 == parser.buffered
    parser.feed(b"x" * 100)
    assert 0 == parser.buffered


def test_over_size_block_is_skipped_without_being_buffered():
    """A 10 MB block over a 1000-byte limit is dropped as it arrives; the parser never holds it."""
    parser = Parser(max_item_size=1000)
    out = parser.feed(b"set q 0 0 %d\r\n" % (10 * 1024 * 1024))
    chunk = b"s" * 65536
    held = []
    for _ in range(160):
        out += parser.feed(chunk)
        held.append(parser.buffered)

    out += parser.feed(b"\r\nget q\r\n")

    assert [0] == sorted(set(held))
    assert [req(b"set", b"q", b"0", b"0", b"%d" % (10 * 1024 * 1024), too_large=True),
            req(b"get", b"q")] == summary(out)


def test_large_block_in_many_pieces_is_joined_once():
    """A 1 MB block arriving in 4 KiB pieces comes out whole and exact."""
    payload = bytes(range(256)) * 4096
    parser = Parser()
    out = parser.feed(b"set q 0 0 %d\r\n" % len(payload))
    for start in range(0, len(payload), 4096):
        out += parser.feed(payload[start : start + 4096])
    assert [] == out
    assert len(payload) == parser.buffered

    out += parser.feed(b"\r\n")

    assert [req(b"set", b"q", b"0", b"0", b"%d" % len(payload), data=payload)] == summary(out)


def test_error_classes_are_client_errors():
    """Framing errors are ClientErrors, so the server answers them as CLIENT_ERROR."""
    assert issubclass(LineTooLong, ClientError)
    assert issubclass(BadDataChunk, ClientError)


def test_random_input_never_raises_and_is_split_independent():
    """Seeded random byte soup gives the same requests whole and chunked, and never raises."""
    rng = random.Random(7)
    alphabet = b"set get add 0123456789 \r\n\r\n/q"
    for seed in range(30):
        data = bytes(rng.choice(alphabet) for _ in range(2000))
        kw = {"max_line": 40, "max_item_size": 50}
        assert feed_whole(data, **kw) == feed_chunks(data, seed, **kw), f"seed {seed}"


def test_block_in_16_byte_pieces_is_held_without_per_piece_overhead():
    """A 1 MiB block arriving 16 bytes at a time costs about its size while partial, not
    several times it (one object per piece), and comes out exact."""
    import tracemalloc

    payload = bytes(range(256)) * 4096
    parser = Parser()
    parser.feed(b"set q 0 0 %d\r\n" % len(payload))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, len(payload), 16):  # a new object per piece, as recv makes
            assert [] == parser.feed(payload[start : start + 16])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert held < 1.5 * len(payload), f"{held / len(payload):.1f} x the block"
    assert len(payload) == parser.buffered
    assert [req(b"set", b"q", b"0", b"0", b"%d" % len(payload), data=payload)] == summary(parser.feed(b"\r\n"))


def test_partial_says_whether_a_request_has_started():
    """``partial`` is true from a request's first byte to its end (for request_timeout)."""
    parser = Parser()
    assert not parser.partial
    parser.feed(b"set q 0 0 3\r\n")
    assert parser.partial
    parser.feed(b"abc\r\nget")
    assert parser.partial
    parser.feed(b" q\r\n")
    assert not parser.partial
