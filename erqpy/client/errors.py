"""The client's errors, and what counts as a server not answering."""

from pymemcache.exceptions import MemcacheUnexpectedCloseError, MemcacheUnknownError

#: pymemcache closes its socket on these; for us they mean "this server is not answering".
CONNECTION_ERRORS = (OSError, MemcacheUnexpectedCloseError, MemcacheUnknownError)


def describe(exc):
    """``"ConnectionRefusedError: [Errno 111] Connection refused"``; the class name alone
    when the text is empty, as pymemcache's ``MemcacheUnexpectedCloseError()`` is."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class QueueClientError(Exception):
    """Base of the client's errors."""


class NoServerAvailable(QueueClientError):
    """Every server is marked dead (or refused the operation); retry later."""


class NotStored(QueueClientError):
    """The server answered NOT_STORED: the item is larger than ``max_item_size`` or the queue
    is full.  ``failed`` lists the indexes of a batch that were refused."""

    def __init__(self, message, failed=()):
        super().__init__(message)
        self.failed = list(failed)


class ReadLost(QueueClientError):
    """The connection holding an open read ended before the read was confirmed, so the server
    gave the item back to its queue: it will be delivered again (at-least-once)."""


class RequestRefused(QueueClientError):
    """The server refused the request with ``CLIENT_ERROR``: a usage error."""
