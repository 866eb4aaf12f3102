"""Sans-IO codec for the memcache text protocol: bytes in, ``Request`` objects out.

The parser knows framing only: where a line ends, which commands carry a data block and
how long it is.  What the tokens mean (queue names, ``/t=500/open`` options, numbers other
than a block length) is command semantics and lives in the reloadable handlers.

Framing rules (PROTOCOL.md):

* a line ends at ``\\n``; one ``\\r`` before it is dropped; tokens are split on runs of
  whitespace;
* a line longer than ``MAX_LINE`` yields a ``LineTooLong`` error and the parser skips
  input up to the end of that line;
* storage commands (``STORAGE_COMMANDS``) are followed by a block of exactly ``<bytes>``
  bytes and ``\\r\\n``.  A block whose terminator is wrong yields ``BadDataChunk``; the
  parser then skips to the next ``\\n`` so that a client that sent too much is still in
  step.  A block longer than the item limit is skipped as it arrives, never buffered
  whole, and the request is delivered with ``too_large`` set.
"""

from erqpy.errors import BadDataChunk, ClientError, ErqError, LineTooLong

#: Longest request line accepted: room for a ``get`` of a couple of hundred full-length
#: keys with options (PROTOCOL.md: 64 KiB).
MAX_LINE = 64 * 1024

#: Commands whose line is followed by a data block; the length is token 4 (``cas``
#: carries one more token after it, which framing does not need).
STORAGE_COMMANDS = frozenset((b"set", b"add", b"replace", b"append", b"prepend", b"cas"))

#: The length field of a storage command is a non-negative decimal of at most this many
#: digits; anything longer is refused before ``int()`` sees it.
MAX_LENGTH_DIGITS = 12

_LINE = 0  # waiting for a request line
_BLOCK = 1  # waiting for a data block of known length
_SKIP_BLOCK = 2  # discarding an over-size data block
_SKIP_LINE = 3  # discarding input up to the next newline


class Request:
    """One parsed request.

    ``command`` is the command word as sent (callers lower-case it when needed), ``args``
    the remaining tokens, ``data`` the block of a storage command, ``error`` an
    ``ErqError`` when the request could not be framed, and ``too_large`` is set when the
    declared block exceeded the item limit and was thrown away.
    """

    __slots__ = ("command", "args", "data", "error", "too_large")

    def __init__(self, command, args, data=None, error=None, too_large=False):
        self.command = command
        self.args = args
        self.data = data
        self.error = error
        self.too_large = too_large

    def __repr__(self):
        data = None if self.data is None else len(self.data)
        return (
            f"Request({self.command!r}, {self.args!r}, data_len={data}, "
            f"error={self.error!r}, too_large={self.too_large})"
        )


def error_request(error: ErqError) -> Request:
    """A request that carries only a framing error, to be answered in order."""
    return Request(b"", [], error=error)


class Parser:
    """Incremental request parser; ``feed`` returns the requests completed by the data."""

    __slots__ = (
        "_buf", "_chunks", "_have", "_state", "_pending", "_need", "max_item_size", "max_line"
    )

    def __init__(self, max_item_size: int = 16 * 1024 * 1024, max_line: int = MAX_LINE):
        self.max_item_size = max_item_size
        self.max_line = max_line
        self._buf = b""
        # A data block that arrives over many reads is kept as a list of chunks and
        # joined once, so a 16 MiB item costs one copy rather than one per read.
        self._chunks = None
        self._have = 0
        self._state = _LINE
        self._pending = None  # the storage Request whose block is awaited
        self._need = 0  # bytes still to skip (_SKIP_BLOCK)

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a request."""
        return self._have if self._chunks is not None else len(self._buf)

    def feed(self, data: bytes) -> list:
        if self._chunks is not None:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need + 2:
                return []
            buf = b"".join(self._chunks)
            self._chunks = None
            self._have = 0
        else:
            buf = self._buf + data if self._buf else data
        out = []
        pos = 0
        end = len(buf)
        while pos < end:
            state = self._state
            if state == _LINE:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    # Too long already, unless the last byte is a CR that may end
                    # the line: the verdict must not depend on where reads split.
                    over = end - pos - self.max_line
                    if over > 1 or (over == 1 and buf[end - 1] != 13):
                        out.append(error_request(LineTooLong(self.max_line)))
                        self._state = _SKIP_LINE
                        pos = end
                    break
                if nl - pos > self.max_line and (
                    nl - pos > self.max_line + 1 or buf[nl - 1] != 13  # 13 is CR
                ):
                    out.append(error_request(LineTooLong(self.max_line)))
                    pos = nl + 1
                    continue
                line = buf[pos:nl]
                pos = nl + 1
                tokens = line.split()
                if not tokens:
                    out.append(Request(b"", []))
                    continue
                command = tokens[0]
                if command in STORAGE_COMMANDS or command.lower() in STORAGE_COMMANDS:
                    request = Request(command, tokens[1:])
                    length = _block_length(tokens)
                    if length is None:
                        request.error = ClientError("bad command line format")
                        out.append(request)
                    elif length > self.max_item_size:
                        request.too_large = True
                        self._pending = request
                        self._need = length + 2
                        self._state = _SKIP_BLOCK
                    else:
                        stop = pos + length
                        if buf[stop : stop + 2] == b"\r\n":
                            # The usual case: the whole block came with its line.
                            request.data = buf[pos:stop]
                            pos = stop + 2
                            out.append(request)
                        else:  # more to come, or a wrong terminator: _BLOCK decides
                            self._pending = request
                            self._need = length
                            self._state = _BLOCK
                    continue
                out.append(Request(command, tokens[1:]))
            elif state == _BLOCK:
                length = self._need
                if end - pos < length + 2:
                    self._chunks = [buf[pos:]]
                    self._have = end - pos
                    pos = end
                    break
                request = self._pending
                self._pending = None
                self._state = _LINE
                stop = pos + length
                if buf[stop : stop + 2] == b"\r\n":
                    request.data = buf[pos:stop]
                    pos = stop + 2
                else:
                    # Too much data, or a wrong terminator: skip to the end of the line
                    # the block ends on, so the next request is read from a line start.
                    request.error = BadDataChunk()
                    pos = stop
                    self._state = _SKIP_LINE
                out.append(request)
            elif state == _SKIP_BLOCK:
                take = min(self._need, end - pos)
                pos += take
                self._need -= take
                if self._need == 0:
                    out.append(self._pending)
                    self._pending = None
                    self._state = _LINE
            else:  # _SKIP_LINE
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    pos = end
                    break
                pos = nl + 1
                self._state = _LINE
        # Keep only what is unparsed; a large block in progress is kept whole (it is
        # bounded by max_item_size), a partial line by max_line.
        self._buf = buf[pos:] if pos < end else b""
        return out


def _block_length(tokens):
    """The data length of a storage command line, or None when it cannot be read."""
    if len(tokens) < 5:
        return None
    field = tokens[4]
    if not field.isdigit() or len(field) > MAX_LENGTH_DIGITS:
        return None
    return int(field)
