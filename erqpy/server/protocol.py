"""Sans-IO codec for the memcache text protocol: bytes in, ``Request`` objects out.

The parser knows framing only: where a line ends, which commands carry a data block and
how long it is.  What the tokens mean (queue names, ``/t=500/open`` options, numbers other
than a block length) is command semantics and lives in the reloadable handlers.

Framing rules (PROTOCOL.md):

* a line ends at ``\\n``; one ``\\r`` before it is dropped; tokens are split on runs of
  whitespace;
* a line longer than ``MAX_LINE`` yields a ``LineTooLong`` error and the parser skips
  input up to the end of that line.  If that line is a storage command, its data block
  is skipped too when the length field can still be read from the line's last tokens;
  when it cannot, the framing is lost;
* storage commands (``STORAGE_COMMANDS``) are followed by a block of exactly ``<bytes>``
  bytes and ``\\r\\n``.  A block whose terminator is wrong yields ``BadDataChunk``; the
  parser then skips to the next ``\\n`` so that a client that sent too much is still in
  step.  A block longer than the item limit is skipped as it arrives, never buffered
  whole, and the request is delivered with ``too_large`` set;
* a storage command whose length field cannot be read (missing, not a decimal, too many
  digits) loses the framing: nobody knows where its block ends, and reading the block as
  commands would let a client smuggle requests inside data.  The request carries a
  ``FramingLost`` error (the connection sends it and closes) and all later input is
  ignored.

The meta protocol's ``ms <key> <datalen> <flags>*`` (an erqpy extension, PROTOCOL.md) is
framed the same way, with its length at token 2 instead of 4: ``META_SET``.  Its flags,
``b`` included, are semantics; only the length matters to the framing.
"""

from erqpy.errors import BadDataChunk, ErqError, FramingLost, LineTooLong, to_reply

#: Longest request line accepted: room for a ``get`` of a couple of hundred full-length
#: keys with options (PROTOCOL.md: 64 KiB).
MAX_LINE = 64 * 1024

#: Commands whose line is followed by a data block; the length is token 4 (``cas``
#: carries one more token after it, which framing does not need).
STORAGE_COMMANDS = frozenset((b"set", b"add", b"replace", b"append", b"prepend", b"cas"))

#: The meta protocol's storage command: ``ms <key> <datalen> <flags>*``, then the block.
META_SET = b"ms"

#: The length field of a storage command is a non-negative decimal of at most this many
#: digits; anything longer is refused before ``int()`` sees it.
MAX_LENGTH_DIGITS = 12

#: Of an over-long storage line, the parser keeps this much of the end, to find the
#: length among its last tokens (flags, exptime, length, cas, noreply fit in it).
LONG_LINE_TAIL = 128

_LINE = 0  # waiting for a request line
_BLOCK = 1  # waiting for a data block of known length
_SKIP_BLOCK = 2  # discarding a data block (over the item limit, or of a refused line)
_SKIP_LINE = 3  # discarding input up to the next newline
_LONG_LINE = 4  # discarding an over-long line, keeping what framing needs of it
_CLOSED = 5  # framing lost: all further input is ignored


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
        "_buf", "_block", "_state", "_pending", "_need", "max_item_size", "max_line",
        "_long_cas", "_long_tail", "_long_tokens", "_long_in_token", "_long_length",
    )

    def __init__(self, max_item_size: int = 16 * 1024 * 1024, max_line: int = MAX_LINE):
        self.max_item_size = max_item_size
        self.max_line = max_line
        self._buf = b""
        # A data block that arrives over many reads grows in one bytearray: no per-read
        # object overhead (a block sent in 16-byte writes would otherwise cost several
        # times its size) and one copy out when it is complete.
        self._block: bytearray | None = None
        self._state = _LINE
        self._pending: Request | None = None  # the storage Request whose block is awaited
        self._need = 0  # block length (_BLOCK), bytes still to skip (_SKIP_BLOCK)
        # An over-long storage line being skipped (_LONG_LINE): whether it is a cas,
        # its last bytes, its token count so far, and whether the last byte seen was
        # inside a token.
        self._long_cas = False
        self._long_tail = b""
        self._long_tokens = 0
        self._long_in_token = False
        # Of an over-long ``ms`` line: its block length, read from the line's start
        # (-1: not an ``ms`` line, or its length was unreadable).
        self._long_length = -1

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a request."""
        return len(self._block) if self._block is not None else len(self._buf)

    @property
    def partial(self) -> bool:
        """True while a request has started and not yet been completed."""
        state = self._state
        return (state != _LINE and state != _CLOSED) or bool(self._buf)

    @property
    def closed(self) -> bool:
        """True once the framing is lost: nothing more will be parsed."""
        return self._state == _CLOSED

    @staticmethod
    def error_reply(error: ErqError) -> bytes:
        """The reply to a request that carries ``error`` (a framing error, a limit)."""
        return to_reply(error)

    def abandon(self) -> None:
        """Drop the partial request and ignore all further input."""
        self._buf = b""
        self._block = None
        self._pending = None
        self._state = _CLOSED

    def feed(self, data: bytes) -> list:
        out = []
        if self._state == _CLOSED:
            return out
        if self._block is not None:
            block = self._block
            block += data
            need = self._need
            if len(block) < need + 2:
                return out
            self._block = None
            request = self._pending
            assert request is not None  # a block is only awaited for a pending request
            self._pending = None
            with memoryview(block) as view:
                if view[need : need + 2] == b"\r\n":
                    request.data = bytes(view[:need])
                    buf = bytes(view[need + 2 :])
                    self._state = _LINE
                else:
                    request.error = BadDataChunk()
                    buf = bytes(view[need:])
                    self._state = _SKIP_LINE
            del block
            out.append(request)
        else:
            buf = self._buf + data if self._buf else data
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
                        out.extend(self._start_long_line(buf, pos))
                        continue
                    break
                if nl - pos > self.max_line and (
                    nl - pos > self.max_line + 1 or buf[nl - 1] != 13  # 13 is CR
                ):
                    out.extend(self._start_long_line(buf, pos))
                    continue
                line = buf[pos:nl]
                pos = nl + 1
                tokens = line.split()
                if not tokens:
                    out.append(Request(b"", []))
                    continue
                command = tokens[0]
                # The token that holds the block length, or 0: not a storage command.
                # Any case: the connection finds a handler in any case too.
                if command in STORAGE_COMMANDS:
                    length_at = 4
                elif command == META_SET:
                    length_at = 2
                else:
                    lowered = command.lower()
                    length_at = 4 if lowered in STORAGE_COMMANDS else 2 if lowered == META_SET else 0
                if length_at:
                    request = Request(command, tokens[1:])
                    length = _block_length(tokens, length_at)
                    if length is None:
                        request.error = FramingLost("bad command line format")
                        out.append(request)
                        self._state = _CLOSED
                        break
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
                    self._block = bytearray(memoryview(buf)[pos:])
                    pos = end
                    break
                request = self._pending
                assert request is not None  # _BLOCK is only entered with a pending request
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
                    request, self._pending = self._pending, None
                    assert request is not None  # _SKIP_BLOCK is entered with a pending request
                    out.append(request)
                    self._state = _LINE
            elif state == _LONG_LINE:
                nl = buf.find(b"\n", pos)
                stop = end if nl < 0 else nl
                self._scan_long_line(buf[pos:stop])
                if nl < 0:
                    pos = end
                    break
                pos = nl + 1
                request = self._end_long_line()
                if request is not None:
                    out.append(request)
            elif state == _SKIP_LINE:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    pos = end
                    break
                pos = nl + 1
                self._state = _LINE
            else:  # _CLOSED
                pos = end
                break
        # Keep only what is unparsed; a large block in progress is kept whole (it is
        # bounded by max_item_size), a partial line by max_line.
        self._buf = buf[pos:] if pos < end and self._state == _LINE else b""
        return out

    # -- over-long lines ------------------------------------------------------------------

    def _start_long_line(self, buf: bytes, pos: int) -> list:
        """An over-long line starts at ``pos`` (more than ``max_line`` bytes are there).

        Returns the requests to deliver now: the error at once for most lines; for a
        storage command only at the end of the line, when its length can be read.
        """
        window = buf[pos : pos + self.max_line]
        words = window.split(None, 1)
        # The first token may run on past the window; only a short one can be a
        # storage command cut in two.
        cut = len(words) == 1 and not window[-1:].isspace()
        command = words[0].lower() if words else b""
        if not words or (cut and len(command) <= 7):
            self._state = _CLOSED  # a command word past the limit: assume the worst
            return [error_request(FramingLost("line too long"))]
        meta = command == META_SET
        if not meta and command not in STORAGE_COMMANDS:
            self._state = _SKIP_LINE
            return [error_request(LineTooLong(self.max_line))]
        self._state = _LONG_LINE
        self._long_cas = command == b"cas"
        self._long_tail = b""
        self._long_tokens = 0
        self._long_in_token = False
        self._long_length = -1
        if meta:
            # The length is token 2, near the start: whole when a token follows it.
            head = window.split(None, 3)
            length = _block_length(head, 2) if len(head) == 4 else None
            self._long_length = -1 if length is None else length
        return []

    def _scan_long_line(self, segment: bytes) -> None:
        """Account for one piece of an over-long line without keeping it."""
        if not segment:
            return
        count = len(segment.split())
        if count and self._long_in_token and not segment[:1].isspace():
            count -= 1  # the first token continues the last one of the previous piece
        self._long_tokens += count
        self._long_in_token = not segment[-1:].isspace()
        self._long_tail = (self._long_tail + segment[-LONG_LINE_TAIL:])[-LONG_LINE_TAIL:]

    def _end_long_line(self):
        """At the end of an over-long storage line: skip its block, or lose the framing.

        The block must not be read as commands: it is skipped when the length can be
        read from the line's last tokens (``set <key> <flags> <exptime> <bytes>
        [noreply]``, ``cas`` with one more), and otherwise the framing is lost.  Returns
        the request to deliver now, or None (the error follows the skipped block).
        """
        if self._long_length >= 0:  # an ``ms`` line, whose length was read at its start
            self._pending = error_request(LineTooLong(self.max_line))
            self._need = self._long_length + 2
            self._long_length = -1
            self._state = _SKIP_BLOCK
            return None
        base = 6 if self._long_cas else 5  # tokens of the line without noreply
        tail = self._long_tail.split()
        extra = self._long_tokens - base
        if extra == 0 or (extra == 1 and tail and tail[-1] == NOREPLY):
            back = 1 + (base - 5) + extra  # the length's position counted from the end
            # The length token must be whole: some token of the tail must precede it.
            if len(tail) > back:
                field = tail[-back]
                if field.isdigit() and len(field) <= MAX_LENGTH_DIGITS:
                    self._pending = error_request(LineTooLong(self.max_line))
                    self._need = int(field) + 2
                    self._state = _SKIP_BLOCK
                    return None
        self._state = _CLOSED
        return error_request(FramingLost("line too long"))


NOREPLY = b"noreply"


def _block_length(tokens, index=4):
    """The data length of a storage command line (token ``index``), or None when it
    cannot be read."""
    if len(tokens) <= index:
        return None
    field = tokens[index]
    if not field.isdigit() or len(field) > MAX_LENGTH_DIGITS:
        return None
    return int(field)
