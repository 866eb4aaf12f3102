"""Handler part: the commands of memcached's binary protocol, translated to
``erqpy.server.ops`` as the text commands are (PROTOCOL.md "Binary protocol").

RELOADABLE, as a part of ``handlers`` (``reloader``): code only, no state between
commands; the codec and a connection's framing state are ``erqpy.server.binary``.  The
name sorts after ``handlers_get`` and ``handlers_stats``, whose reads and stats this part
serves: a part imports only the parts before it in name order.

``BINARY_COMMANDS`` maps every opcode (and ``binary.FRAMING_LOST``) to its handler; the
handler module re-exports it and the registry enters it under ``binary.COMMAND_KEYS``.
A handler returns the response bytes (or parts), ``b""`` for none (a quiet command that
succeeded).  It never raises for a bad request: ``_answering`` turns an error into the
binary status the client expects, so a binary client never sees a text reply.
"""

import logging

from erqpy import descriptors
from erqpy.errors import (
    ClientError, ConnectionGone, ErqError, JournalWriteError, LimitReached, OutOfDescriptors, Unavailable,
)
from erqpy.fairness import give_way
from erqpy.server import binary, ops, stats
from erqpy.server.binary import error_response, response, value_response
from erqpy.server.handlers_common import PROTOCOL_VERSION, QUEUES_PER_YIELD, SLASH, expires_at, set_options
from erqpy.server.handlers_get import GetOptions, check_options, take_plain, take_with_options
from erqpy.server.handlers_stats import STATS_SUBCOMMANDS
from erqpy.storage.items import now_ms

log = logging.getLogger("erqpy.server")

QUIET = frozenset((binary.GETQ, binary.GETKQ, binary.SETQ, binary.DELETEQ, binary.FLUSHQ, binary.QUITQ))
WITH_KEY = frozenset((binary.GETK, binary.GETKQ))


def _status_of(exc: BaseException) -> tuple[int, str]:
    """The binary status and message for an error a command raised."""
    if isinstance(exc, ClientError):
        return binary.EINVAL, exc.reason
    if isinstance(exc, Unavailable):
        return binary.ETMPFAIL, exc.reason
    if isinstance(exc, LimitReached):
        return binary.ENOMEM, exc.reason
    cause = exc.cause if isinstance(exc, JournalWriteError) else exc
    if isinstance(exc, OutOfDescriptors) or (isinstance(cause, OSError) and cause.errno in descriptors.EXHAUSTED):
        return binary.ENOMEM, "out of file descriptors"
    if isinstance(exc, JournalWriteError):
        return binary.EINTERNAL, str(exc)
    return binary.EINTERNAL, "internal error"


def _answering(handler):
    """``handler`` with its errors answered in the binary form, as memcached does: an
    error is answered even for a quiet command."""

    def answer(conn, request):
        if request.too_large:  # its body was skipped: nothing of it is known but the header
            return error_response(request, binary.E2BIG, "Too large.")
        try:
            return handler(conn, request)
        except ConnectionGone:
            raise
        except ErqError as exc:
            return error_response(request, *_status_of(exc))
        except Exception as exc:
            if not (isinstance(exc, OSError) and exc.errno in descriptors.EXHAUSTED):
                log.exception("binary opcode 0x%02x failed on connection %s", request.opcode, conn.session.id)
            return error_response(request, *_status_of(exc))

    answer.__name__ = answer.__qualname__ = handler.__name__
    return answer


# -- reads -------------------------------------------------------------------------------


def _get(conn, request):
    """GET, GETQ, GETK, GETKQ: a dequeue of the key's queue, with the key's options
    (``q/t=500``, ``q/open``, ``q/close``, ``q/abort``, ``q/peek``).  A miss is ``Not
    found``, unsent for the quiet ones; the CAS field is the item's id, as ``gets``."""
    key = request.key
    if not key:
        raise ClientError("get needs a key")
    state = conn.state
    if SLASH not in key:
        ops.require_reads(state)
        item = take_plain(conn, key)
    else:
        opts = GetOptions(key)
        if not ((opts.close or opts.abort) and not opts.open):  # settling a read is no read
            ops.require_reads(state)
        check_options(conn, opts, {})
        item = take_with_options(conn, opts)
    opcode = request.opcode
    if item is None:
        if opcode in QUIET:
            return b""
        return response(request, binary.KEY_ENOENT, key=key if opcode in WITH_KEY else b"", value=b"Not found")
    return value_response(request, key if opcode in WITH_KEY else b"", item.flags, item.data, item.id)


# -- writes ------------------------------------------------------------------------------


def _set(conn, request):
    """SET, SETQ: an enqueue, with the options of a text ``set`` key (``q/delay=<ms>``,
    ``q/at=<unix seconds>``, ``q/pri=<0..9>``).  The extras are the flags (stored with
    the item) and the expiry, as memcached's; a CAS other than 0 is refused: a queue's
    items have no version to compare."""
    extras = request.extras
    key = request.key
    if len(extras) != 8 or not key:
        raise ClientError("set needs a key and 8 bytes of extras (flags, expiry)")
    if request.cas:
        raise ClientError("cas: a queue item has no version to compare")
    options = set_options(key) if SLASH in key else None
    state = conn.state
    queue = ops.queue_for_write(state, key if options is None else options[0])
    state.stats.cmd_set += 1
    flags = int.from_bytes(extras[:4], "big")
    now = now_ms()
    expires = expires_at(int.from_bytes(extras[4:], "big"), now)
    if options is None:
        stored = ops.put(state, queue, request.data, flags, expires, now)
    else:
        stored = ops.put(state, queue, request.data, flags, expires, now, delay_ms=options[1],
                         due_ms=options[2], priority=options[3])
    if not stored:
        return error_response(request, binary.NOT_STORED, "Not stored.")
    return b"" if request.opcode == binary.SETQ else response(request)


def _delete(conn, request):
    """DELETE, DELETEQ: the queue is deleted (``delete q``)."""
    if not request.key or request.extras or request.data:
        raise ClientError("delete needs a key and nothing else")
    state = conn.state
    ops.require_writes(state)
    ops.delete(state, state.collection.lookup(request.key))
    return b"" if request.opcode == binary.DELETEQ else response(request)


def _flush(conn, request):
    """FLUSH, FLUSHQ: every queue is emptied (``flush_all``); the optional delay of the
    extras is accepted and not applied, as in the text protocol."""
    if request.key or len(request.extras) not in (0, 4):
        raise ClientError("flush takes no key and at most a 4-byte delay")
    state = conn.state
    ops.require_writes(state)
    ops.flush_all(state)
    return b"" if request.opcode == binary.FLUSHQ else response(request)


# -- information and the connection ------------------------------------------------------


def _noop(conn, request):
    """NOOP: answered at once; a client sends it after quiet commands to learn that they
    are all done (the responses before it are all there are)."""
    return response(request)


def _version(conn, request):
    return response(request, value=PROTOCOL_VERSION + b" erqpy-" + conn.state.version.encode())


def _stat_responses(request, fields, prefix=b""):
    return [response(request, key=prefix + name.encode(), value=str(value).encode())
            for name, value in fields.items()]


def _stat(conn, request):
    """STAT: one response per field, then one with no key.  No key: the fields of
    ``stats``; ``reset``, ``settings``, ``conns``, ``items``, ``slabs``, ``sizes``: as
    the text sub-commands; any other key: ``Not found``, as memcached answers."""
    state = conn.state
    key = request.key.lower()
    if not key:
        replies = _stat_responses(request, stats.server_stats(state))
        for index, (name, fields) in enumerate(stats.iter_queue_stats(state), 1):
            replies.extend(_stat_responses(request, fields, b"queue_" + name.encode() + b"_"))
            if index % QUEUES_PER_YIELD == 0:
                give_way()
    elif key == b"reset":
        state.stats.reset()
        replies = []
    elif key in STATS_SUBCOMMANDS:
        replies = []
        for line in STATS_SUBCOMMANDS[key](conn):  # b"STAT <name> <value>\r\n"
            name, _, value = line[5:-2].partition(b" ")
            replies.append(response(request, key=name, value=value))
    else:
        return error_response(request, binary.KEY_ENOENT, "Not found")
    replies.append(response(request))
    return b"".join(replies)


def _verbosity(conn, request):
    """VERBOSITY: accepted, as memcached does; erqpy's log level is its configuration's."""
    return response(request)


def _quit(conn, request):
    """QUIT answers, then the connection closes; QUITQ closes without an answer."""
    conn.close_after_reply()
    return b"" if request.opcode == binary.QUITQ else response(request)


def _framing_lost(conn, request):
    """A header that cannot be framed: answered, then the connection is closed (the
    parser ignores the rest of its input)."""
    conn.close_after_reply()
    return error_response(request, binary.EINVAL, "bad request header: framing lost")


def _unknown(conn, request):
    """Any other opcode (ADD, REPLACE, APPEND, INCREMENT, TOUCH, SASL, ...): memcached's
    answer to a command it does not know; the connection stays in step."""
    return error_response(request, binary.UNKNOWN_COMMAND, "Unknown command")


_SERVED = {
    binary.GET: _get, binary.GETQ: _get, binary.GETK: _get, binary.GETKQ: _get,
    binary.SET: _set, binary.SETQ: _set,
    binary.DELETE: _delete, binary.DELETEQ: _delete,
    binary.FLUSH: _flush, binary.FLUSHQ: _flush,
    binary.NOOP: _noop, binary.VERSION: _version, binary.STAT: _stat, binary.VERBOSITY: _verbosity,
    binary.QUIT: _quit, binary.QUITQ: _quit,
    binary.FRAMING_LOST: _framing_lost,
}

#: opcode -> handler, for every opcode a header can carry and ``FRAMING_LOST``.
BINARY_COMMANDS = {
    opcode: _answering(_SERVED.get(opcode, _unknown)) for opcode in range(binary.FRAMING_LOST + 1)
}
