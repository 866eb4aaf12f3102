"""Data-port command handlers.  RELOADABLE: this module holds code and constants only.

``erqctl reload`` compiles this file and its parts (``handlers_common``, ``handlers_get``:
the reads, ``handlers_meta``: the meta protocol, ``handlers_stats``) into fresh modules and swaps them in whole (``reloader``).  So nothing here may keep state between commands: every long-lived object
is reached through ``conn`` (a ``server.Connection``) and ``conn.state``.  Define no
classes whose instances outlive a command; old instances would keep old code.

Each handler is ``handler(conn, request) -> bytes``: the reply, or ``b""`` for none; a
large reply may instead be a list of parts (bytes), which the connection sends without
joining, so an item's data is never copied per reply (HANDLER_API 2); after the
client's FIN a get holds what it takes with ``conn.hold_until_delivered`` (HANDLER_API 3).  Failures raise
the classes in ``erqpy.errors``; the connection turns them into replies.

Handlers only translate: what a command does to queues is ``erqpy.server.ops``, which
enforces the status rules for every front end.  Each command's flags (``COMMAND_TABLE``)
are checked once, before its handler runs (``_dispatcher``), so no handler can forget
a rule; ``COMMANDS``, the table the connection looks a command up in, holds the checking
callables, so dispatch stays one dictionary lookup.
"""

from erqpy.errors import ClientError
from erqpy.server import ops, reload
from erqpy.server.handlers_common import (
    DELETED,
    END,
    MAX_EXPTIME,
    MAX_FLAGS,
    KEYS_PER_YIELD,
    NOREPLY,
    NOT_STORED,
    OK,
    PROTOCOL_VERSION,
    SLASH,
    STORED,
    expires_at,
    int_field,
    set_options,
    wants_noreply,
)
from erqpy.server.handlers_get import cmd_confirm, cmd_get, cmd_gets, cmd_monitor
from erqpy.server.handlers_meta import (
    cmd_ma, cmd_md, cmd_me, cmd_mg, cmd_mn, cmd_ms, only_settles_read,
)
from erqpy.server.handlers_stats import cmd_dump_stats, cmd_stats
from erqpy.server.handlers_wire_binary import BINARY_COMMANDS as BINARY_COMMANDS  # the binary protocol's
from erqpy.storage.pqueue import now_ms

#: Bump when the contract between the connection and this module changes
#: (the ``handler(conn, request)`` signature, what it returns, or what ``conn`` offers).
HANDLER_API = 3


# -- set -----------------------------------------------------------------------------


def cmd_set(conn, request):
    args = request.args
    count = len(args)
    if count < 4 or count > 5:
        raise ClientError("bad command line format")
    noreply = count == 5 and args[4] == NOREPLY
    # Clients nearly always send 0 for both; the comparison is cheaper than the parse.
    flags = 0 if args[1] == b"0" else int_field(args[1], "flags")
    if not 0 <= flags <= MAX_FLAGS:
        raise ClientError("bad flags")
    exptime = 0 if args[2] == b"0" else int_field(args[2], "exptime")
    if exptime > MAX_EXPTIME:
        raise ClientError("bad exptime")
    key = args[0]
    options = set_options(key) if SLASH in key else None
    state = conn.state
    # Writes are allowed: the dispatch checked (WRITE), so ops.queue_for_write's check
    # again would only cost the hot path.
    name = key if options is None else options[0]
    # An alias (ops.queue_for_write) only when there are aliases at all.
    queue = ops.queue_for_write(state, name) if state.settings.aliases else state.collection.get_or_create(name)
    state.stats.cmd_set += 1
    if request.too_large:
        return b"" if noreply else NOT_STORED
    now = now_ms()
    expires = 0 if exptime == 0 else expires_at(exptime, now)
    if options is None:
        stored = ops.put(state, queue, request.data, flags, expires, now)
    else:
        stored = ops.put(state, queue, request.data, flags, expires, now, delay_ms=options[1], due_ms=options[2],
                         priority=options[3])
    if noreply:
        return b""
    return STORED if stored else NOT_STORED


# -- queue management ------------------------------------------------------------------


def _on_queue(conn, request, name, operation, reply):
    """``<name> <queue> [noreply]``: ``operation(state, queue or None)``, then ``reply``."""
    args = request.args
    if not args:
        raise ClientError(f"usage: {name} <queue> [noreply]")
    operation(conn.state, conn.state.collection.lookup(args[0]))
    return b"" if wants_noreply(args, 1) else reply


def cmd_delete(conn, request):
    return _on_queue(conn, request, "delete", ops.delete, DELETED)


def cmd_flush(conn, request):
    return _on_queue(conn, request, "flush", ops.flush, END)


def cmd_flush_all(conn, request):
    args = request.args
    noreply = bool(args) and args[-1] == NOREPLY
    if args and not noreply:
        int_field(args[0], "delay")  # accepted for memcached compatibility, not applied
    ops.flush_all(conn.state)
    return b"" if noreply else OK


def cmd_flush_expired(conn, request):
    if len(request.args) != 1:
        raise ClientError("usage: flush_expired <queue>")
    count = ops.flush_expired(conn.state, conn.state.collection.lookup(request.args[0]))
    return b"%d\r\n" % count


def cmd_flush_all_expired(conn, request):
    return b"%d\r\n" % ops.flush_all_expired(conn.state)


# -- information -----------------------------------------------------------------------


def cmd_version(conn, request):
    # libmemcached (and so PHP's Memcached) parses the reply as major.minor.micro and
    # refuses a major of 0; the erqpy version follows it for people and pymemcache.
    return b"VERSION %s erqpy-%s\r\n" % (PROTOCOL_VERSION, conn.state.version.encode())


def cmd_status(conn, request):
    if not request.args:
        return conn.state.status.upper().encode() + b"\r\n"
    try:
        conn.state.set_status(request.args[0].decode("ascii", "replace"))
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    return END


def cmd_reload(conn, request):
    reload.reload_config(conn.state)
    return b"Reloaded config.\r\n"


def cmd_shutdown(conn, request):
    conn.close_after_reply()
    conn.state.request_stop()
    return b""


def cmd_quit(conn, request):
    conn.close_after_reply()
    return b""


# -- the command table -------------------------------------------------------------------

#: Command flags, as Redis declares them in its command table: what a command does, so
#: that its rule is checked once, before the handler runs.
READ = 1  # hands out items: refused unless the status allows reads (QUIESCENT does not)
WRITE = 2  # changes what queues hold: refused unless the status allows writes (UP only)
ADMIN = 4  # refused on the data port unless ``admin_commands`` is on
BLOCKING = 8  # may wait (for an item): the connection watches its client meanwhile


def _only_settles_reads(request) -> bool:
    """A get whose every key only settles a read (``/close``, ``/abort``, without
    ``/open``): no read, so QUIESCENT lets it finish reads handed out already."""
    for key in request.args:
        options = key.split(b"/")[1:]
        if not options or b"open" in options or (b"close" not in options and b"abort" not in options):
            return False
    return True


def _only_reads_status(request) -> bool:
    """``status`` reads the status; only ``status <new>`` is an admin command."""
    return not request.args


#: name -> (handler, flags[, unless]): ``unless(request)``, asked only when the flags'
#: rule would refuse, names the form of the command that the rule does not cover.
#: A command carries at most one of READ, WRITE and ADMIN.
COMMAND_TABLE: dict[str, tuple] = {
    "set": (cmd_set, WRITE),
    "get": (cmd_get, READ | BLOCKING, _only_settles_reads),
    "gets": (cmd_gets, READ | BLOCKING, _only_settles_reads),
    "monitor": (cmd_monitor, READ | BLOCKING),
    "confirm": (cmd_confirm, 0),  # never refused: it finishes reads handed out already
    "delete": (cmd_delete, WRITE),
    "flush": (cmd_flush, WRITE),
    "flush_all": (cmd_flush_all, WRITE),
    "flush_expired": (cmd_flush_expired, WRITE),
    "flush_all_expired": (cmd_flush_all_expired, WRITE),  # it removes journaled items
    "stats": (cmd_stats, 0),
    "dump_stats": (cmd_dump_stats, 0),
    "version": (cmd_version, 0),
    "status": (cmd_status, ADMIN, _only_reads_status),
    "reload": (cmd_reload, ADMIN),
    "shutdown": (cmd_shutdown, ADMIN),
    "quit": (cmd_quit, 0),
    # The meta protocol (handlers_meta, PROTOCOL.md "Meta protocol").
    "ms": (cmd_ms, WRITE),
    "mg": (cmd_mg, READ | BLOCKING, only_settles_read),
    "md": (cmd_md, WRITE),
    "mn": (cmd_mn, 0),
    "me": (cmd_me, 0),
    "ma": (cmd_ma, 0),  # refused for any queue that exists: nothing to change
}


def _set_never_waits(state, request) -> bool:
    """A set into a fanout master gives way between its children (``collection.put``);
    one that creates its queue waits for a worker thread (``storage/newfiles``)."""
    if not request.args:
        return True
    collection = state.collection
    key = request.args[0]
    if key not in collection.by_key and key.split(b"/", 1)[0] not in collection.by_key:
        return False
    children = collection.children
    if not children:
        return True
    if state.settings.aliases:
        return False  # an alias's destinations may be masters
    if request.command == b"ms" and b"b" in request.args[1:]:
        return False  # a base64 key: its queue name is known only once decoded
    name = request.args[0].split(b"/", 1)[0]
    return name.decode("utf-8", "replace") not in children


def _get_never_waits(state, request) -> bool:
    """Only ``/t=`` waits; many keys give way between them (``handlers_get``).  Of an
    ``mg``, the first token is the key and the rest are flags."""
    if state.collection.creations.pending:
        return False  # a read of a queue being created waits for it (collection.get_for_read)
    keys = request.args
    if request.command == b"mg":  # a base64 key (flag b) may hide its /t=
        return not keys or (keys[0].find(b"t=") < 0 and b"b" not in keys[1:])
    if len(keys) == 1:
        return keys[0].find(b"t=") < 0
    return len(keys) < KEYS_PER_YIELD and not any(key.find(b"t=") >= 0 for key in keys)


#: The commands the connection may run from the event loop's callback (``loop_serving``):
#: name -> None (always) or ``check(state, request)``, True when this request cannot wait
#: for anything (no gevent wait, no ``give_way``).  Everything else runs in the
#: connection's greenlet.
LOOP_SAFE = {
    "set": _set_never_waits,
    "get": _get_never_waits,
    "gets": _get_never_waits,
    "version": None,
    "ms": _set_never_waits,
    "mg": _get_never_waits,  # its key is the first token, as a get's (flags follow)
    "mn": None,
}


def _never(request) -> bool:
    return False


def _dispatcher(handler, flags, unless=_never):
    """``handler`` behind the check of its flags' rule, or ``handler`` itself when it
    has none (its dispatch then costs no extra call).  On the hot path the check is one
    status test: ``unless`` is asked only when the rule would refuse."""
    if flags & (WRITE | READ):
        writes = bool(flags & WRITE)

        def dispatch(conn, request):
            state = conn.state
            # Two attribute reads, not getattr(): this runs for every set and get.
            if not (state.writes_allowed if writes else state.reads_allowed) and not unless(request):
                raise ops.refusal(state)
            return handler(conn, request)
    elif flags & ADMIN:
        def dispatch(conn, request):
            if not conn.state.settings.admin_commands and not unless(request):
                raise ClientError("admin commands are disabled")
            return handler(conn, request)
    else:
        return handler
    dispatch.__name__ = dispatch.__qualname__ = handler.__name__
    dispatch.__doc__ = handler.__doc__
    return dispatch


#: The table the connection looks each command up in (``registry.commands``).
COMMANDS = {name: _dispatcher(*entry) for name, entry in COMMAND_TABLE.items()}


def selfcheck():
    """Called by the reloader before the swap: the module must be usable as a whole."""
    for name, handler in COMMANDS.items():
        if not callable(handler):
            raise TypeError(f"handler for {name!r} is not callable")
    for name, (_handler, flags, *_unless) in COMMAND_TABLE.items():
        if flags & ~(READ | WRITE | ADMIN | BLOCKING):
            raise ValueError(f"unknown flags {flags!r} for {name!r}")
        if bin(flags & (READ | WRITE | ADMIN)).count("1") > 1:
            raise ValueError(f"{name!r} carries more than one of READ, WRITE and ADMIN")
