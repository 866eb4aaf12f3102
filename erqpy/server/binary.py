"""Sans-IO codec for memcached's binary protocol: bytes in, ``BinaryRequest`` objects out;
responses out.

A connection's first byte tells the protocols apart: a binary request starts with the
magic byte 0x80, which no text command does (``connection.OTHER_PROTOCOLS``).  Such a
connection parses its input with a ``BinaryParser`` instead of the text ``Parser`` and
runs the same loop: the requests are looked up in ``registry.commands`` under
``COMMAND_KEYS[opcode]``, the keys the handler module's ``BINARY_COMMANDS`` are entered
under.  Each key holds a space, which no text command word can, so a text client can
never reach a binary handler.

Like the text parser this module knows framing only (memcached ``protocol_binary.h``):
a 24-byte big-endian header (magic, opcode, key length, extras length, data type,
vbucket, total body length, opaque, cas) and a body of extras, key and value.  What a
command means for a queue is the reloadable ``handlers_wire_binary``.

Framing rules (PROTOCOL.md "Binary protocol"):

* a header whose magic is not 0x80, or whose key and extras do not fit its body, loses
  the framing: the request carries ``FRAMING_LOST`` (answered, then the connection is
  closed) and all later input is ignored, as memcached does;
* a body longer than the item limit (``max_item_size`` plus ``MAX_KEY_AND_EXTRAS``) is
  skipped as it arrives, never buffered whole, and the request is delivered with
  ``too_large`` set and no key or value; the connection stays in step.
"""

import struct

from erqpy.errors import InputLimit

REQUEST_MAGIC = 0x80
RESPONSE_MAGIC = 0x81
HEADER = struct.Struct(">BBHBBHIIQ")
HEADER_SIZE = 24
_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack
_FLAGS = struct.Struct(">I")
#: A body may hold this much besides the value (the key, the extras) and still be read;
#: past it plus the item limit the body is skipped.
MAX_KEY_AND_EXTRAS = 64 * 1024
#: Values larger than this are sent as a part of their own, never copied into a reply.
LARGE_VALUE = 64 * 1024
#: A request longer than this that arrives over several reads is gathered in place.
GROW_IN_PLACE = 64 * 1024

# Opcodes (memcached protocol_binary.h); Q = quiet, K = the key comes back.
GET, SET, ADD, REPLACE, DELETE, INCREMENT, DECREMENT, QUIT = range(8)
FLUSH, GETQ, NOOP, VERSION, GETK, GETKQ, APPEND, PREPEND, STAT = range(8, 17)
SETQ, ADDQ, REPLACEQ, DELETEQ, INCREMENTQ, DECREMENTQ, QUITQ, FLUSHQ = range(17, 25)
VERBOSITY = 0x1B
#: Not an opcode: the key of a request whose header could not be framed.
FRAMING_LOST = 256

# Response statuses.
SUCCESS = 0x0000
KEY_ENOENT = 0x0001
KEY_EEXISTS = 0x0002
E2BIG = 0x0003
EINVAL = 0x0004
NOT_STORED = 0x0005
UNKNOWN_COMMAND = 0x0081
ENOMEM = 0x0082
NOT_SUPPORTED = 0x0083
EINTERNAL = 0x0084
EBUSY = 0x0085
ETMPFAIL = 0x0086

#: ``registry.commands`` key of each opcode (and of ``FRAMING_LOST``).
COMMAND_KEYS = tuple(b"binary %d" % opcode for opcode in range(FRAMING_LOST + 1))


class BinaryRequest:
    """One framed binary request.

    ``command`` is its ``registry.commands`` key; ``args`` is ``[key]`` (or ``[]``), as
    a text request's tokens, for the status rules and the trace; ``data`` is the value.
    ``error`` is always None: a request that could not be framed is delivered as
    ``FRAMING_LOST`` and answered by its handler in the binary form.
    """

    __slots__ = ("command", "opcode", "key", "extras", "data", "opaque", "cas", "args", "error",
                 "too_large")

    def __init__(self, opcode, key, extras, data, opaque, cas, too_large=False):
        self.command = COMMAND_KEYS[opcode]
        self.opcode = opcode
        self.key = key
        self.extras = extras
        self.data = data
        self.opaque = opaque
        self.cas = cas
        self.args = [key] if key else []
        self.error = None
        self.too_large = too_large

    def __repr__(self):
        return (f"BinaryRequest(0x{self.opcode:02x}, {self.key!r}, extras={self.extras!r}, "
                f"data_len={len(self.data)}, opaque={self.opaque}, cas={self.cas}, "
                f"too_large={self.too_large})")


_HEADER = 0  # waiting for (the rest of) a header and its body
_SKIP_BODY = 1  # discarding a body over the item limit
_CLOSED = 2  # framing lost: all further input is ignored


class BinaryParser:
    """Incremental binary request parser, with the text ``Parser``'s interface for the
    connection (``feed``, ``buffered``, ``partial``, ``closed``, ``abandon``)."""

    __slots__ = ("_buf", "_grown", "_need", "_state", "_skip", "_pending", "max_item_size", "max_body")

    def __init__(self, max_item_size: int = 16 * 1024 * 1024):
        self.max_item_size = max_item_size
        self.max_body = max_item_size + MAX_KEY_AND_EXTRAS
        self._state = _HEADER
        self._skip = 0  # body bytes still to discard (_SKIP_BODY)
        self._buf = b""
        # A large request's bytes, gathered until all ``_need`` of them have come.
        self._grown: bytearray | None = None
        self._need = 0
        self._pending: BinaryRequest | None = None  # delivered when its skipped body ends

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a request."""
        return len(self._grown) if self._grown is not None else len(self._buf)

    @property
    def partial(self) -> bool:
        """True while a request has started and not yet been completed."""
        return self._state == _SKIP_BODY or self._grown is not None or bool(self._buf)

    @property
    def closed(self) -> bool:
        """True once the framing is lost: nothing more will be parsed."""
        return self._state == _CLOSED

    @staticmethod
    def error_reply(error) -> bytes:
        """The response to a request the connection refused before parsing it (a limit:
        ``max_buffered_input``, ``request_timeout``), in the binary form; opcode and
        opaque are unknown, so 0."""
        status = ENOMEM if isinstance(error, InputLimit) else EINTERNAL
        message = str(error).encode("utf-8", "replace")
        return _pack_header(RESPONSE_MAGIC, 0, 0, 0, 0, status, len(message), 0, 0) + message

    def abandon(self) -> None:
        """Drop the partial request and ignore all further input."""
        self._buf = b""
        self._grown = None
        self._pending = None
        self._state = _CLOSED

    def feed(self, data: bytes) -> list:
        out: list = []
        state = self._state
        if state == _CLOSED:
            return out
        if state == _SKIP_BODY:
            if len(data) < self._skip:
                self._skip -= len(data)
                return out
            data = data[self._skip :]
            self._skip = 0
            self._state = _HEADER
            out.append(self._pending)
            self._pending = None
        grown = self._grown
        if grown is not None:
            # A large request in progress grows in one bytearray (no copy of all of it
            # per read) until it is complete, then is copied out once.
            grown += data
            if len(grown) < self._need:
                return out
            self._grown = None
            buf = bytes(grown)
            del grown
        else:
            buf = self._buf + data if self._buf else data
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_SIZE:
            magic, opcode, key_length, extras_length, _type, _vbucket, body_length, opaque, cas = (
                _unpack_header(buf, pos))
            if magic != REQUEST_MAGIC or key_length + extras_length > body_length:
                out.append(BinaryRequest(FRAMING_LOST, b"", b"", b"", opaque, 0))
                self.abandon()
                return out
            body = pos + HEADER_SIZE
            if body_length > self.max_body:
                request = BinaryRequest(opcode, b"", b"", b"", opaque, cas, too_large=True)
                if end - body >= body_length:
                    out.append(request)
                    pos = body + body_length
                    continue
                self._pending = request
                self._skip = body_length - (end - body)
                self._state = _SKIP_BODY
                pos = end
                break
            stop = body + body_length
            if stop > end:
                if stop - pos > GROW_IN_PLACE:
                    self._grown = bytearray(memoryview(buf)[pos:])
                    self._need = stop - pos
                    self._buf = b""
                    return out
                break
            key_start = body + extras_length
            value_start = key_start + key_length
            out.append(BinaryRequest(
                opcode, buf[key_start:value_start], buf[body:key_start] if extras_length else b"",
                buf[value_start:stop], opaque, cas,
            ))
            pos = stop
        self._buf = buf[pos:] if pos < end else b""
        return out


def response(request, status: int = SUCCESS, *, key: bytes = b"", flags: int | None = None,
             value: bytes = b"", cas: int = 0) -> bytes:
    """The response to ``request``: its opcode and opaque echoed, so that the client
    matches it to the request; ``flags`` are the 4 bytes of extras a get returns."""
    extras = b"" if flags is None else _FLAGS.pack(flags)
    body = len(key) + len(extras) + len(value)
    header = _pack_header(RESPONSE_MAGIC, request.opcode & 0xFF, len(key), len(extras), 0, status, body,
                          request.opaque, cas)
    return header + extras + key + value


def value_response(request, key: bytes, flags: int, value, cas: int):
    """A get's response carrying ``value``; a large value is returned as parts (the
    header, the value) so that the item's data is not copied into the reply."""
    length = len(value)
    head = _pack_header(RESPONSE_MAGIC, request.opcode, len(key), 4, 0, SUCCESS, len(key) + 4 + length,
                        request.opaque, cas) + _FLAGS.pack(flags) + key
    if length > LARGE_VALUE:
        return [head, value]
    return head + value


def error_response(request, status: int, message: str) -> bytes:
    """A failed request's response: ``status`` and a message for people, as memcached
    sends (``Not found``, ``Too large.``)."""
    return response(request, status, value=message.encode("utf-8", "replace"))
