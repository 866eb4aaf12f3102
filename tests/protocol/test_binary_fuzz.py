"""A little fuzzing of the binary protocol: the codec on random streams and random
splits (hypothesis), and a real server fed seeded mutations of valid requests."""

import random
import socket

from binary_wire import EINTERNAL_STATUS, GET, NOOP, SUCCESS, request, set_request
from hypothesis import given, settings
from hypothesis import strategies as st

from erqpy.server.binary import BinaryParser

OPCODES = st.sampled_from([0x00, 0x01, 0x04, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x10, 0x11, 0x02, 0x1C, 0xFF])
REQUESTS = st.builds(
    lambda opcode, key, value, extras, opaque: request(opcode, key, value, extras, opaque),
    OPCODES, st.binary(max_size=20), st.binary(max_size=300), st.binary(max_size=12), st.integers(0, 2**32 - 1),
)


def framed(parser, pieces):
    out = []
    for piece in pieces:
        out.extend(parser.feed(piece))
    return [(r.opcode, r.key, r.extras, bytes(r.data), r.opaque, r.too_large) for r in out]


@settings(max_examples=200, deadline=None)
@given(st.lists(REQUESTS, max_size=8), st.lists(st.integers(0, 4000), max_size=6))
def test_any_split_of_valid_requests_frames_the_same_requests(requests, cuts):
    stream = b"".join(requests)
    points = sorted({min(cut, len(stream)) for cut in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]

    whole = framed(BinaryParser(max_item_size=200), [stream])
    assert whole == framed(BinaryParser(max_item_size=200), pieces)
    assert len(requests) == len(whole)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(1, 64))
def test_arbitrary_bytes_never_break_the_parser(data, step):
    parser = BinaryParser(max_item_size=100)
    for start in range(0, len(data), step):
        parser.feed(data[start : start + step])
    assert parser.closed or parser.buffered < 24 + 100 + 64 * 1024


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(data))
        kind = rng.random()
        if kind < 0.5:
            data[where] = rng.randrange(256)
        elif kind < 0.75:
            del data[where]
        else:
            data.insert(where, rng.randrange(256))
    return bytes(data)


def test_mutated_requests_never_bring_the_server_down_or_fail_inside(shared_server):
    """Seeded: every case replays.  Oracle: no response is an internal error, and after
    each case a new connection is served."""
    rng = random.Random(15)
    for case in range(60):
        q = b"fzbin%d" % case
        valid = (set_request(q, b"v" * rng.randint(0, 50), flags=rng.randrange(2**32))
                 + request(GET, q + rng.choice([b"", b"/open", b"/t=10", b"/peek", b"/abort", b"/close"]))
                 + request(rng.randrange(256), q, b"x", b"\0" * rng.choice([0, 4, 8])) + request(NOOP))
        sock = socket.create_connection(shared_server.address, timeout=5)
        try:
            sock.sendall(mutate(rng, valid))
            sock.shutdown(socket.SHUT_WR)
            received = b""
            while True:
                try:
                    chunk = sock.recv(65536)
                except (TimeoutError, ConnectionError):
                    break
                if not chunk:
                    break
                received += chunk
        finally:
            sock.close()
        pos = 0
        while pos + 24 <= len(received):
            status = int.from_bytes(received[pos + 6 : pos + 8], "big")
            assert status != EINTERNAL_STATUS, f"case {case}: internal error in {received!r}"
            pos += 24 + int.from_bytes(received[pos + 8 : pos + 12], "big")
        probe = shared_server.raw()
        probe.send(request(NOOP, opaque=case))
        assert SUCCESS == int.from_bytes(probe.read_exactly(24)[6:8], "big"), f"case {case}"
        probe.close()


def test_a_large_request_in_small_pieces_frames_as_when_whole():
    """A request over 64 KiB that arrives in pieces is gathered in place, then framed."""
    stream = set_request(b"q", bytes(range(256)) * 800, flags=9) + request(NOOP, opaque=4)
    pieces = [stream[start : start + 1000] for start in range(0, len(stream), 1000)]

    whole = framed(BinaryParser(), [stream])
    assert [0x01, NOOP] == [r[0] for r in whole]
    assert whole == framed(BinaryParser(), pieces)
