"""The exception hierarchy and the one place where exceptions become wire replies.

Expected outcomes (an empty queue, a full queue) are return values, not exceptions.
Exceptions here are for requests that cannot be served; ``to_reply`` maps each to the
bytes the client sees.  Every class keeps the connection open (PROTOCOL.md asks that an
error reply leave the client in step, and the parser guarantees the framing) except those
with ``closes_connection``: there the framing is lost or a server-wide limit is hit.
"""

import errno


class ErqError(Exception):
    """Base of every erqpy error."""

    #: True when the connection must be closed after the reply (its framing is lost).
    closes_connection = False


class ClientError(ErqError):
    """The request is malformed or not allowed; replied as ``CLIENT_ERROR <reason>``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class LineTooLong(ClientError):
    """A request line exceeded ``MAX_LINE``; the rest of that line is skipped."""

    def __init__(self, limit: int):
        super().__init__("line too long")
        self.limit = limit


class BadDataChunk(ClientError):
    """A storage command's data block was not followed by ``\\r\\n``."""

    def __init__(self):
        super().__init__("bad data chunk")


class FramingLost(ClientError):
    """A storage command whose data length cannot be read: where its block ends is
    unknown, so nothing after it can be trusted to be a request (it may be a block
    holding commands).  The reply is sent and the connection closed."""

    closes_connection = True


class InputLimit(ErqError):
    """The server-wide bound on buffered request input was reached; replied as
    ``SERVER_ERROR <reason>`` and the connection is closed."""

    closes_connection = True

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TooFewOpenReads(ErqError):
    """``confirm`` asked for more reads than are open; Kestrel's plain ``ERROR``."""


class Unavailable(ErqError):
    """The server status refuses this operation (READONLY, QUIESCENT)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Unsupported(ErqError):
    """The storage in use cannot do what was asked (engine mode and delayed items)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class LimitReached(ErqError):
    """A server-side limit refuses the request (``max_queues``, ``max_fanout_children``);
    replied as ``SERVER_ERROR <reason>``, the reason naming the setting."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class JournalWriteError(ErqError):
    """The journal could not be written: the operation is not acknowledged."""

    def __init__(self, queue: str, cause: OSError):
        super().__init__(queue, cause)
        self.queue = queue
        self.cause = cause

    def __str__(self) -> str:
        return f"journal write failed for {self.queue}: {self.cause.strerror or self.cause}"


class OutOfDescriptors(ErqError):
    """The process has no file descriptor left for the file this command needs."""

    def __init__(self, cause: OSError):
        super().__init__(cause)
        self.cause = cause


class ConnectionGone(ErqError):
    """The client went away while a command waited; never sent, only unwinds."""


class ConfigError(ErqError, ValueError):
    """A configuration value or file is invalid; ``where`` names the file and line."""

    def __init__(self, reason: str, where: str = ""):
        super().__init__(reason, where)
        self.reason = reason
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" if self.where else self.reason


class ServerHalt(BaseException):
    """Start-up cannot go on (data directory locked, port in use).

    A BaseException so that no ``except Exception`` in library code swallows it.
    """

    def __init__(self, reason: str, exit_status: int = 1):
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status

    def __str__(self) -> str:
        return self.reason


REPLY_ERROR = b"ERROR\r\n"
REPLY_NO_DESCRIPTORS = b"SERVER_ERROR out of file descriptors\r\n"
REPLY_INTERNAL = b"SERVER_ERROR internal error\r\n"
_EXHAUSTED = (errno.EMFILE, errno.ENFILE)


def to_reply(exc: BaseException) -> bytes:
    """Render an exception raised while serving a command as the reply line."""
    if isinstance(exc, ClientError):
        return b"CLIENT_ERROR " + exc.reason.encode("utf-8", "replace") + b"\r\n"
    if isinstance(exc, TooFewOpenReads):
        return REPLY_ERROR
    if isinstance(exc, (Unavailable, LimitReached, InputLimit, Unsupported)):
        return b"SERVER_ERROR " + exc.reason.encode() + b"\r\n"
    if isinstance(exc, OutOfDescriptors) or (
        isinstance(exc, JournalWriteError) and exc.cause.errno in _EXHAUSTED
    ):
        return REPLY_NO_DESCRIPTORS
    if isinstance(exc, JournalWriteError):
        return b"SERVER_ERROR " + str(exc).encode("utf-8", "replace") + b"\r\n"
    if isinstance(exc, ConfigError):  # the data port's admin ``reload`` of a bad file
        reason = " ".join(f"bad configuration: {exc}".split())  # one line
        return b"SERVER_ERROR " + reason.encode("utf-8", "replace") + b"\r\n"
    return REPLY_INTERNAL
