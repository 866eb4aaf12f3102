"""Handler part: ``get``/``gets`` with their ``/t= /open /close /abort /peek
/max_deliveries= /delay=`` options,
``monitor`` and ``confirm``: the reads, translated to ``erqpy.server.ops``.

RELOADABLE, as a part of ``handlers`` (``reloader``): code only, no state between commands.
"""

from erqpy.errors import ClientError, TooFewOpenReads
from erqpy.fairness import give_way
from erqpy.server import ops
from erqpy.server.handlers_common import END, KEYS_PER_YIELD, MAX_WAIT_MS, SLASH, int_field


class GetOptions:
    """Parsed ``/option`` segments of one key; lives for one command only."""

    __slots__ = ("key", "name", "timeout", "open", "close", "abort", "peek", "max_deliveries", "delay")

    def __init__(self, key):
        parts = key.split(b"/")
        self.key = key
        self.name = parts[0]
        self.timeout = self.max_deliveries = self.delay = 0
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
                self.timeout = min(int_field(option[2:], "timeout"), MAX_WAIT_MS)
            elif option.startswith(b"max_deliveries="):
                self.max_deliveries = int_field(option[15:], "max_deliveries")
                if self.max_deliveries < 0:
                    raise ClientError("bad max_deliveries")
            elif option.startswith(b"delay="):  # erqpy: abort with a delay
                self.delay = int_field(option[6:], "delay")
            # Unknown options are ignored, as Kestrel does.
        if not self.name:
            raise ClientError("empty queue name")
        if self.peek and (self.open or self.close or self.abort):
            raise ClientError("peek cannot be combined with open, close or abort")
        if self.abort and (self.open or self.close):
            raise ClientError("abort cannot be combined with open or close")
        if self.delay and not self.abort:
            raise ClientError("delay is an option of abort (get <queue>/abort/delay=<ms>)")


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
    """``get q`` with no options: the hot path."""
    item = take_plain(conn, key)
    return b"" if item is None else _value(key, item, with_cas, copy_limit)


def take_plain(conn, key):
    """The item a key without options takes, or None.  A missing queue is a miss, not
    created.  (The meta protocol's ``mg`` and the binary GET share it.)"""
    state = conn.state
    queue = state.collection.get_for_read(key)
    if queue is not None and state.settings.aliases and ops.is_alias(state, key):
        queue = None  # a queue left from before the alias was configured is not read
    if queue is not None and conn.session.open_reads and conn.session.open_count(queue.name):
        raise ClientError("this connection has an open read on the queue; close or abort it first")
    state.stats.cmd_get += 1
    # After the client's FIN the item is held as an open read until the reply is
    # acknowledged (conn.confirm_delivery): the client may have gone.
    eof = conn.eof
    item = ops.take(state, queue, eof)
    if item is None:
        state.stats.get_misses += 1
        return None
    if eof:
        conn.hold_until_delivered(queue, item)
    state.stats.get_hits += 1
    return item


def check_options(conn, opts, opening):
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
    item = take_with_options(conn, opts)
    return b"" if item is None else _value(opts.key, item, with_cas, copy_limit)


def settle(conn, opts) -> bool:
    """The ``/abort`` (with its ``/delay=``) or ``/close`` of a key: True when there was
    an open read to settle."""
    queue = conn.state.collection.lookup(opts.name)
    if queue is None:
        return False
    if opts.abort:
        return conn.session.abort_oldest(queue.name, opts.delay)
    return conn.session.close_oldest(queue.name)


def take_with_options(conn, opts):
    """The item a key with options (checked by ``check_options``) hands out, or None:
    settles ``/close`` or ``/abort`` first, waits ``/t=``.  (``mg`` and the binary GET
    share it.)"""
    state = conn.state
    session = conn.session
    if opts.abort or opts.close:
        settle(conn, opts)
        if not opts.open:
            return None
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
        max_deliveries=opts.max_deliveries,
    )
    if item is None:
        state.stats.get_misses += 1
        return None
    if until_delivered and conn.eof:
        conn.hold_until_delivered(queue, item)
    state.stats.get_hits += 1
    if opts.open:
        session.add_open(queue, item)
    return item


def _input_ended(conn):
    """Asked when a waiting get takes its item: has the client ended its input?"""
    return lambda: conn.eof


def _get(conn, request, with_cas):
    keys = request.args
    if not keys:
        raise ClientError("get needs at least one key")
    if len(keys) == 1 and SLASH not in keys[0]:
        # The hot path: _get_plain and _with_end, inlined.
        key = keys[0]
        item = take_plain(conn, key)
        if item is None:
            return END
        reply = _value(key, item, with_cas)
        return reply + END if reply.__class__ is bytes else reply + [END]
    parsed = [GetOptions(key) if SLASH in key else None for key in keys]
    if any(opts is not None and _is_choice(opts.key) for opts in parsed):
        return _get_first_of(conn, keys, parsed, with_cas)
    opening = {}
    for index, (key, opts) in enumerate(zip(keys, parsed, strict=True), 1):
        if opts is None:
            # get_for_read: a fanout child over its limit refuses the get before any key
            # is served (nothing taken and then lost behind the error).
            queue = conn.state.collection.get_for_read(key)
            if queue is not None and conn.session.open_count(queue.name):
                raise ClientError("this connection has an open read on the queue; close or abort it first")
        else:
            check_options(conn, opts, opening)
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


def _is_choice(key) -> bool:
    """``/any`` among the key's options: the get is a choice between its keys."""
    return b"/any" in key and b"any" in key.split(b"/")[1:]


def _get_first_of(conn, keys, parsed, with_cas):
    """``get a/any/open/t=500 b/any/open c/any/open`` (an erqpy extension, PROTOCOL.md):
    at most one item, the head of the first of the queues that has one; when all are
    empty, one wait on all of them for the longest ``/t=`` given."""
    if not all(opts is not None and _is_choice(opts.key) for opts in parsed):
        raise ClientError("with /any, every key of the get must have /any")
    if any(opts.peek or opts.abort for opts in parsed):
        raise ClientError("/any cannot be combined with peek or abort")
    open_read = parsed[0].open
    if any(opts.open != open_read for opts in parsed):
        raise ClientError("with /any, either every key has /open or none has")
    state = conn.state
    session = conn.session
    opening = {}
    for opts in parsed:
        check_options(conn, opts, opening)
    for opts in parsed:
        if opts.close:
            queue = state.collection.lookup(opts.name)
            if queue is not None:
                session.close_oldest(queue.name)
    state.stats.cmd_get += 1
    choices = [(opts.name, state.collection.get_for_read(opts.name)) for opts in parsed]
    served = ops.take_first_or_wait(
        state, choices, max(opts.timeout for opts in parsed) / 1000.0, conn.wait_for_item,
        open_read=open_read, open_if=None if open_read else _input_ended(conn),
        max_deliveries=max(opts.max_deliveries for opts in parsed),
    )
    if served is None:
        state.stats.get_misses += 1
        return END
    index, queue, item = served
    if not open_read and conn.eof:
        conn.hold_until_delivered(queue, item)
    state.stats.get_hits += 1
    if open_read:
        session.add_open(queue, item)
    return _with_end(_value(keys[index], item, with_cas))


def cmd_get(conn, request):
    return _get(conn, request, False)


def cmd_gets(conn, request):
    return _get(conn, request, True)


def cmd_monitor(conn, request):
    args = request.args
    if len(args) not in (2, 3):
        raise ClientError("usage: monitor <queue> <seconds> [max_items]")
    seconds = int_field(args[1], "seconds")
    state = conn.state
    queue = state.collection.get_for_read(args[0])
    config = queue.config if queue is not None else state.settings.queue_config(args[0].decode())
    limit = config.max_open_reads
    max_items = int_field(args[2], "max_items") if len(args) == 3 else limit
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
    count = int_field(args[1], "count")
    if count < 0:
        raise ClientError("bad count")
    if count == 0:
        return END  # nothing to confirm, which is never "fewer than asked"
    queue = conn.state.collection.lookup(args[0])
    if queue is None or not conn.session.close_oldest(queue.name, count):
        raise TooFewOpenReads()
    return END
