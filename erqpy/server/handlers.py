"""Data-port command handlers.  RELOADABLE: this module holds code and constants only.

``erqctl reload`` compiles this file into a fresh module and swaps it in whole
(``reloader``).  So nothing here may keep state between commands: every long-lived object
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

from erqpy.errors import ClientError, TooFewOpenReads
from erqpy.fairness import give_way
from erqpy.server import ops, reload, stats
from erqpy.storage.pqueue import now_ms

#: Bump when the contract between the connection and this module changes
#: (the ``handler(conn, request)`` signature, what it returns, or what ``conn`` offers).
HANDLER_API = 3

STORED = b"STORED\r\n"
NOT_STORED = b"NOT_STORED\r\n"
END = b"END\r\n"
DELETED = b"DELETED\r\n"
OK = b"OK\r\n"
ERROR = b"ERROR\r\n"
NOREPLY = b"noreply"

#: The version a ``version`` reply starts with: the Kestrel release whose dialect erqpy
#: speaks.  Clients parse it as a memcached version (libmemcached needs a major >= 1).
PROTOCOL_VERSION = b"2.4.1"

#: exptime values at or above this are absolute Unix times (memcached, Kestrel).
ABSOLUTE_EXPTIME = 1_000_000
#: Longest blocking wait a client may ask for with ``/t=``: one day, in ms.
MAX_WAIT_MS = 24 * 3600 * 1000
MAX_FLAGS = (1 << 32) - 1
#: Largest exptime whose expiry, in ms, fits the journal's signed 64-bit field.
MAX_EXPTIME = ((1 << 63) - 1) // 1000
#: Long commands give the hub to other connections this often, so that a get naming
#: thousands of keys, or stats over thousands of queues, delays nobody by more than a
#: few milliseconds.  The connection's own later commands still wait their turn.
KEYS_PER_YIELD = 64
QUEUES_PER_YIELD = 100


def _int_field(raw: bytes, what: str) -> int:
    try:
        if len(raw) > 20:
            raise ValueError
        return int(raw)
    except ValueError:
        raise ClientError(f"bad {what}") from None


# -- set -----------------------------------------------------------------------------


def cmd_set(conn, request):
    args = request.args
    if len(args) < 4 or len(args) > 5:
        raise ClientError("bad command line format")
    noreply = len(args) == 5 and args[4] == NOREPLY
    # Clients nearly always send 0 for both; the comparison is cheaper than the parse.
    flags = 0 if args[1] == b"0" else _int_field(args[1], "flags")
    if not 0 <= flags <= MAX_FLAGS:
        raise ClientError("bad flags")
    exptime = 0 if args[2] == b"0" else _int_field(args[2], "exptime")
    if exptime > MAX_EXPTIME:
        raise ClientError("bad exptime")
    state = conn.state
    # Writes are allowed: the dispatch checked (WRITE), so ops.queue_for_write's check
    # again would only cost the hot path.
    queue = state.collection.get_or_create(args[0])
    state.stats.cmd_set += 1
    if request.too_large:
        return b"" if noreply else NOT_STORED
    now = now_ms()
    if exptime == 0:
        expires = 0
    elif exptime < 0:
        expires = 1  # already in the past; 0 would mean "never"
    elif exptime < ABSOLUTE_EXPTIME:
        expires = now + exptime * 1000
    else:
        expires = exptime * 1000
    stored = ops.put(state, queue, request.data, flags, expires, now)
    if noreply:
        return b""
    return STORED if stored else NOT_STORED


# -- get -----------------------------------------------------------------------------


class _GetOptions:
    """Parsed ``/option`` segments of one key; lives for one command only."""

    __slots__ = ("key", "name", "timeout", "open", "close", "abort", "peek")

    def __init__(self, key):
        parts = key.split(b"/")
        self.key = key
        self.name = parts[0]
        self.timeout = 0
        self.open = self.close = self.abort = self.peek = False
        for option in parts[1:]:
            if option == b"open":
                self.open = True
            elif option == b"close":
                self.close = True
            elif option == b"abort":
                self.abort = True
            elif option == b"peek":
                self.peek = True
            elif option.startswith(b"t="):
                self.timeout = min(_int_field(option[2:], "timeout"), MAX_WAIT_MS)
            # Unknown options are ignored, as Kestrel does.
        if not self.name:
            raise ClientError("empty queue name")
        if self.peek and (self.open or self.close or self.abort):
            raise ClientError("peek cannot be combined with open, close or abort")
        if self.abort and (self.open or self.close):
            raise ClientError("abort cannot be combined with open or close")


#: Items larger than this are replied as parts that refer to the item's data, so a
#: reply never copies a large item.  In a get of several keys the limit is lower: one
#: line can name the same item thousands of times (``get q/peek q/peek ...``).
LARGE_VALUE = 64 * 1024
LARGE_VALUE_MULTI = 1024
CRLF = b"\r\n"


def _value(key, item, with_cas, copy_limit=LARGE_VALUE):
    data = item.data
    if len(data) > copy_limit:
        if with_cas:
            return [b"VALUE %s %d %d %d\r\n" % (key, item.flags, len(data), item.id), data, CRLF]
        return [b"VALUE %s %d %d\r\n" % (key, item.flags, len(data)), data, CRLF]
    if with_cas:
        return b"VALUE %s %d %d %d\r\n%s\r\n" % (key, item.flags, len(data), item.id, data)
    return b"VALUE %s %d %d\r\n%s\r\n" % (key, item.flags, len(data), data)


def _with_end(reply):
    """A value reply followed by ``END``, whether it is bytes or parts (``_value``)."""
    return reply + [END] if reply.__class__ is list else reply + END


def _get_plain(conn, key, with_cas, copy_limit=LARGE_VALUE):
    """``get q`` with no options: the hot path.  A missing queue is a miss, not created."""
    state = conn.state
    queue = state.collection.get_for_read(key)
    if queue is not None and conn.session.open_reads and conn.session.open_count(queue.name):
        raise ClientError("this connection has an open read on the queue; close or abort it first")
    state.stats.cmd_get += 1
    # After the client's FIN the item is held as an open read until the reply is
    # acknowledged (conn.confirm_delivery): the client may have gone.
    eof = conn.eof
    item = ops.take(state, queue, eof)
    if item is None:
        state.stats.get_misses += 1
        return b""
    if eof:
        conn.hold_until_delivered(queue, item)
    state.stats.get_hits += 1
    return _value(key, item, with_cas, copy_limit)


def _check_options(conn, opts, opening):
    """Everything that can refuse a key, checked before any key is served.

    ``opening`` counts, per queue name, the reads that earlier keys of the same request
    will open, so that several ``/open`` keys cannot pass ``max_open_reads`` together.
    """
    state = conn.state
    queue = state.collection.lookup(opts.name)
    if opts.abort or (opts.close and not opts.open):
        return queue
    if queue is None:  # a new fanout child is created now, so a limit refuses the whole get
        queue = state.collection.get_for_read(opts.name)
    name = queue.name if queue is not None else opts.name.decode()
    open_now = conn.session.open_count(name) + opening.get(name, 0)
    if opts.open:
        limit = queue.config.max_open_reads if queue else state.settings.queue_config(name).max_open_reads
        closing = 1 if opts.close and open_now else 0
        if open_now - closing >= limit:
            raise ClientError(f"too many open reads on this queue (max_open_reads is {limit})")
        opening[name] = opening.get(name, 0) + 1 - closing
    elif not opts.peek and open_now:
        raise ClientError("this connection has an open read on the queue; close or abort it first")
    return queue


def _get_with_options(conn, opts, with_cas, copy_limit=LARGE_VALUE):
    state = conn.state
    session = conn.session
    if opts.abort:
        queue = state.collection.lookup(opts.name)
        if queue is not None:
            session.abort_oldest(queue.name)
        return b""
    if opts.close:
        queue = state.collection.lookup(opts.name)
        if queue is not None:
            session.close_oldest(queue.name)
        if not opts.open:
            return b""
    queue = state.collection.get_for_read(opts.name)
    if opts.peek:
        state.stats.cmd_peek += 1
    else:
        state.stats.cmd_get += 1
    # After the client's FIN (perhaps only a half-close) a plain take is held as an open
    # read until the reply is acknowledged (conn.confirm_delivery).
    until_delivered = not (opts.open or opts.peek)
    queue, item = ops.take_or_wait(
        state, queue, opts.name, opts.timeout / 1000.0, conn.wait_for_item,
        open_read=opts.open, peek=opts.peek, open_if=_input_ended(conn) if until_delivered else None,
    )
    if item is None:
        state.stats.get_misses += 1
        return b""
    if until_delivered and conn.eof:
        conn.hold_until_delivered(queue, item)
    state.stats.get_hits += 1
    if opts.open:
        session.add_open(queue, item)
    return _value(opts.key, item, with_cas, copy_limit)


def _input_ended(conn):
    """Asked when a waiting get takes its item: has the client ended its input?"""
    return lambda: conn.eof


def _get(conn, request, with_cas):
    keys = request.args
    if not keys:
        raise ClientError("get needs at least one key")
    if len(keys) == 1 and b"/" not in keys[0]:
        reply = _get_plain(conn, keys[0], with_cas)  # the hot path: _with_end, inlined
        return reply + END if reply.__class__ is bytes else reply + [END]
    parsed = [_GetOptions(key) if b"/" in key else None for key in keys]
    opening = {}
    for index, (key, opts) in enumerate(zip(keys, parsed, strict=True), 1):
        if opts is None:
            # get_for_read: a fanout child over its limit refuses the get before any key
            # is served (nothing taken and then lost behind the error).
            queue = conn.state.collection.get_for_read(key)
            if queue is not None and conn.session.open_count(queue.name):
                raise ClientError("this connection has an open read on the queue; close or abort it first")
        else:
            _check_options(conn, opts, opening)
        if index % KEYS_PER_YIELD == 0:
            give_way()
    replies = []
    parts = False
    copy_limit = LARGE_VALUE if len(keys) == 1 else LARGE_VALUE_MULTI
    for index, (key, opts) in enumerate(zip(keys, parsed, strict=True), 1):
        if index % KEYS_PER_YIELD == 0:
            give_way()
        if opts is None:
            reply = _get_plain(conn, key, with_cas, copy_limit)
        else:
            reply = _get_with_options(conn, opts, with_cas, copy_limit)
        if reply.__class__ is list:
            replies.extend(reply)
            parts = True
        else:
            replies.append(reply)
    replies.append(END)
    return replies if parts else b"".join(replies)


def cmd_get(conn, request):
    return _get(conn, request, False)


def cmd_gets(conn, request):
    return _get(conn, request, True)


# -- reliable reads --------------------------------------------------------------------


def cmd_monitor(conn, request):
    args = request.args
    if len(args) not in (2, 3):
        raise ClientError("usage: monitor <queue> <seconds> [max_items]")
    seconds = _int_field(args[1], "seconds")
    state = conn.state
    queue = state.collection.get_for_read(args[0])
    config = queue.config if queue is not None else state.settings.queue_config(args[0].decode())
    limit = config.max_open_reads
    max_items = _int_field(args[2], "max_items") if len(args) == 3 else limit
    deadline = conn.clock() + max(seconds, 0)
    if queue is None and (max_items < 1 or seconds <= 0):
        return END
    sent = 0
    # A missing queue is not created for a reader: the first take waits for a write to
    # create it, and the queue it returns is the one every later take reads.
    while sent < max_items and (queue is None or conn.session.open_count(queue.name) < limit):
        state.stats.cmd_get += 1
        queue, item = ops.take_or_wait(
            state, queue, args[0], deadline - conn.clock(), conn.wait_for_item, open_read=True,
        )
        if item is None:
            break
        state.stats.get_hits += 1
        conn.session.add_open(queue, item)
        conn.send_now(_with_end(_value(args[0], item, False)))
        sent += 1
    return END


def cmd_confirm(conn, request):
    args = request.args
    if len(args) != 2:
        raise ClientError("usage: confirm <queue> <count>")
    count = _int_field(args[1], "count")
    if count < 0:
        raise ClientError("bad count")
    if count == 0:
        return END  # nothing to confirm, which is never "fewer than asked"
    queue = conn.state.collection.lookup(args[0])
    if queue is None or not conn.session.close_oldest(queue.name, count):
        raise TooFewOpenReads()
    return END


# -- queue management ------------------------------------------------------------------


def _noreply(args, index):
    return len(args) > index and args[index] == NOREPLY


def cmd_delete(conn, request):
    args = request.args
    if not args:
        raise ClientError("usage: delete <queue> [noreply]")
    ops.delete(conn.state, conn.state.collection.lookup(args[0]))
    return b"" if _noreply(args, 1) else DELETED


def cmd_flush(conn, request):
    args = request.args
    if not args:
        raise ClientError("usage: flush <queue> [noreply]")
    ops.flush(conn.state, conn.state.collection.lookup(args[0]))
    return b"" if _noreply(args, 1) else END


def cmd_flush_all(conn, request):
    args = request.args
    noreply = bool(args) and args[-1] == NOREPLY
    if args and not noreply:
        _int_field(args[0], "delay")  # accepted for memcached compatibility, not applied
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


def _format(value) -> bytes:
    return str(value).encode()


def _stream(conn, blocks) -> bytes:
    """Send a long reply (stats over thousands of queues: megabytes) as it is rendered,
    ``QUEUES_PER_YIELD`` queues at a time, giving the hub away in between: neither the
    rendering nor one huge send holds up the other connections.  ``blocks`` yields
    lists of byte strings; the last piece is returned as the reply."""
    pending = []
    for index, block in enumerate(blocks, 1):
        pending.extend(block)
        if index % QUEUES_PER_YIELD == 0:
            conn.send_now(b"".join(pending))
            pending = []
            give_way()
    pending.append(END)
    return b"".join(pending)


def _stats_blocks(state):
    yield [b"STAT %s %s\r\n" % (k.encode(), _format(v)) for k, v in stats.server_stats(state).items()]
    for name, fields in stats.iter_queue_stats(state):
        prefix = b"STAT queue_" + name.encode() + b"_"
        yield [prefix + b"%s %s\r\n" % (k.encode(), _format(v)) for k, v in fields.items()]


def _dump_stats_blocks(state, names):
    for name, fields in stats.iter_queue_stats(state, names):
        block = [b"queue '%s' {\r\n" % name.encode()]
        block.extend(b"  %s=%s\r\n" % (k.encode(), _format(v)) for k, v in fields.items())
        block.append(b"}\r\n")
        yield block


def _stat_lines(fields, prefix=b""):
    return [b"STAT %s%s %s\r\n" % (prefix, k.encode(), _format(v)) for k, v in fields.items()]


def _setting_value(value):
    if isinstance(value, bool):
        return "yes" if value else "no"  # memcached's form in ``stats settings``
    if isinstance(value, str):
        return "".join(c if c.isprintable() else "?" for c in value)  # one line per STAT
    return value


#: Server settings shown by ``stats settings``.  Named one by one so that a secret
#: (``control_token``, the ``[http]`` table's token and password) never reaches the data port.
STATS_SETTINGS = (
    "host", "port", "data_dir", "fsync", "fsync_interval_ms", "max_connections", "log_level",
    "admin_commands", "shutdown_grace",
)


#: The ``[queues.default]`` settings shown by ``stats settings``, as ``default_<name>``.
QUEUE_SETTINGS = (
    "max_items", "max_size", "max_item_size", "max_age", "discard_old_when_full", "expire_to",
    "max_memory_size", "max_journal_size", "keep_journal", "fsync", "max_open_reads",
    "open_read_timeout", "max_queue_age", "fanout_only", "max_deliveries", "dead_letter_to",
)


def _stats_settings(conn):
    """The running settings as ``STAT`` lines; an empty text setting (no ``expire_to``,
    say) is left out, since an empty value is not a token for many parsers."""
    state = conn.state
    settings = state.settings
    fields = {name: getattr(settings, name) for name in STATS_SETTINGS}
    if state.listen_address:
        fields["port"] = state.listen_address[1]  # the bound one, when started with port 0
    # memcached's names for the same things, which its tooling looks for.
    fields["maxconns"] = settings.max_connections
    fields["tcpport"] = fields["port"]
    fields["item_size_max"] = settings.largest_item_size
    defaults = settings.queue_config("default")
    for name in QUEUE_SETTINGS:
        fields["default_" + name] = getattr(defaults, name)
    return _stat_lines({k: _setting_value(v) for k, v in fields.items() if v != ""})


def _tcp_address(address):
    return b"tcp:%s:%d" % (str(address[0]).encode(), address[1])


def _stats_conns(conn):
    """memcached's ``stats conns`` form, ``STAT <id>:<field> <value>``, one block per
    connection; the id is the connection's session id (memcached uses the fd)."""
    lines = []
    listen = conn.state.listen_address
    for other in sorted(conn.state.connections, key=lambda c: c.session.id):
        session = other.session
        prefix = b"STAT %d:" % session.id
        lines.append(prefix + b"addr %s\r\n" % _tcp_address(other.address))
        if listen:
            lines.append(prefix + b"listen_addr %s\r\n" % _tcp_address(listen))
        open_reads = sum(session.open_count(name) for name in list(session.open_reads))
        lines.append(prefix + b"open_reads %d\r\n" % open_reads)
    return lines


def _stats_empty(conn):
    """memcached's slab and size tables: erqpy keeps items in queues, not slabs."""
    return []


#: ``stats <sub-command>``, memcached's names, besides ``reset``.  Anything else is
#: ``ERROR``, as in memcached: Perl's Cache::Memcached asks for ``stats malloc`` and
#: expects that.  (``stats detail`` is memcached's per-key-prefix counting; erqpy has
#: per-queue stats instead, so it is ``ERROR`` too.)
STATS_SUBCOMMANDS = {
    b"settings": _stats_settings,
    b"conns": _stats_conns,
    b"items": _stats_empty,
    b"slabs": _stats_empty,
    b"sizes": _stats_empty,
}

RESET = b"RESET\r\n"


def cmd_stats(conn, request):
    args = request.args
    if not args:
        return _stream(conn, _stats_blocks(conn.state))
    if len(args) > 1:
        return ERROR
    elif args[0].lower() == b"reset":
        # memcached's: the server-wide counters restart from 0; queue stats stay.
        conn.state.stats.reset()
        return RESET
    subcommand = STATS_SUBCOMMANDS.get(args[0].lower())
    if subcommand is None:
        return ERROR
    lines = subcommand(conn)
    lines.append(END)
    return b"".join(lines)


def cmd_dump_stats(conn, request):
    names = [arg.decode("utf-8", "replace") for arg in request.args] or None
    return _stream(conn, _dump_stats_blocks(conn.state, names))


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
}


def _never(request) -> bool:
    return False


def _dispatcher(handler, flags, unless=_never):
    """``handler`` behind the check of its flags' rule, or ``handler`` itself when it
    has none (its dispatch then costs no extra call).  On the hot path the check is one
    status test: ``unless`` is asked only when the rule would refuse."""
    if flags & WRITE:
        def dispatch(conn, request):
            state = conn.state
            if not state.writes_allowed and not unless(request):
                raise ops.refusal(state)
            return handler(conn, request)
    elif flags & READ:
        def dispatch(conn, request):
            state = conn.state
            if not state.reads_allowed and not unless(request):
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
