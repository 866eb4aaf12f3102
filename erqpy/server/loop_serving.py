"""Serving a connection from the event loop's own callback while nothing has to wait.

A connection greenlet that waits for its next request costs two greenlet switches per
request (to the hub and back, each copying the greenlet's stack) and a gevent waiter.
On this machine kind that was 10-15 µs of the ~50 µs a small request cost.  So while a
connection is idle between requests, its greenlet parks and the socket's readable
watcher calls ``_on_readable`` in the hub itself: it reads, parses and runs the batch,
as an asyncio protocol would, and leaves the replies for the end of the loop's turn,
where the replies of every connection served in it are sent together (``TurnReplies``),
after the journal records of the turn are written together (``Syncer.write_pending``).

Only what can never wait runs there: the commands the handler module lists in
``LOOP_SAFE`` (a plain ``set``, a ``get`` without ``/t=``, ...; each with a check of the
request), on the text protocol, on a storage that does no network I/O, while no plugin
subscribes to queue events (a subscriber may do anything a greenlet may).  Anything else
(a blocking get, a partial request, a framing error, a reply that needs an fsync first,
a socket buffer that is full, a pipeline past its turn) is handed over, at the request
where it stops, to the connection's greenlet, which runs the rest as before and parks
again once it is idle.  Replies keep their order: what ran here is pending in ``out``
and goes out before (or with) the rest.  Reloads work as before: every request looks
its handler up in ``registry.commands`` (and ``registry.on_loop``).

The greenlet groups the records of those commands too (``answer_grouped``), under its
own name (``Syncer.grouping``): a command of the greenlet may yield (a compaction's
thread handoff), and another greenlet's record must not be grouped then.
"""

import logging
import time
from typing import TYPE_CHECKING, Any

from gevent import getcurrent
from gevent.hub import Waiter, get_hub

from erqpy.errors import ConnectionGone
from erqpy.fairness import turn_end
from erqpy.server.input_limits import InputLimits
from erqpy.server.protocol import Parser
from erqpy.server.receiving import receive

#: What a callback hands the greenlet: the requests left to run (after any already
#: pending in ``out``) ...
RUN = 1
#: ... or replies to send that may have to wait (fsync ``always``, a full socket) ...
FLUSH = 2
#: ... or the end of input (the read returned nothing) ...
END = 3
#: ... or an error that ends the connection (the read failed, or something unforeseen).
FAILED = 4

#: Replies up to this many bytes are sent from the callback; larger ones by the greenlet
#: (``flush`` sends big parts without joining them).
LOOP_SEND_LIMIT = 64 * 1024
#: A batch run from the callback looks at the clock every this many requests ...
LOOP_TURN_BATCH = 16
#: ... and hands the rest to the greenlet (which gives way as it goes) once the loop's
#: turn is this old, counted from its poll (libev's ``now``: the callbacks that ran
#: before this one count, as do the first requests); a batch of fewer requests never
#: asks the clock.  Counted from the first look instead, a batch ran 2 ms past its first
#: 16 requests, and one with a refill and a collection among them held the turn 9 ms.
LOOP_TURN_SECONDS = 0.002

_UNSAFE = object()

log = logging.getLogger("erqpy.server")


class TurnReplies:
    """The replies of one turn of the event loop, sent once every ready connection ran.

    A reply sent as soon as its batch ran wakes the client's process for that one reply,
    and on loopback the sender pays for the wake-up inside ``send`` (the peer's receive
    path runs in it).  Sent together after the loop's callbacks (as Redis writes its
    replies before the loop sleeps), most of them find the client awake already.  A turn
    that runs long (``LOOP_TURN_SECONDS``) sends what is due at once, so a reply waits
    for at most that long plus one batch.
    """

    __slots__ = ("due", "since", "stats")

    def __init__(self, stats):
        self.due: list = []
        self.since = 0.0
        self.stats = stats

    def add(self, conn) -> None:
        due = self.due
        if not due:
            self.since = time.perf_counter()
            get_hub().loop.run_callback(self.send_all)  # after this turn's callbacks
        elif time.perf_counter() - self.since > LOOP_TURN_SECONDS:
            due.append(conn)
            self.send_all()
            return
        due.append(conn)

    def send_all(self) -> None:
        due = self.due
        if not due:
            return
        self.due = []
        stats = self.stats
        stats.turn_end_sends += 1
        stats.turn_end_replies += len(due)
        for conn in due:
            try:
                conn.send_at_turn_end()
            except Exception:  # never lose the rest of the turn's replies to one
                log.exception("sending the replies of connection %s failed", conn.session.id)


class LoopServing(InputLimits):
    # The state these methods change is declared here; the rest is the connection's.
    __slots__ = ("handover", "seq_mark", "awaits_fsync", "group_mark", "awaits_write")
    handover: Waiter | None
    seq_mark: int  # syncer.write_seq before the batch: flush waits for the fsync past it
    # The replies left for the turn's end acknowledge a write under fsync ``always``
    # (else they wait for no fsync, whatever other connections wrote in the same turn).
    awaits_fsync: bool
    # The pending replies acknowledge records left for the turn's group write
    # (storage/syncer); ``group_mark`` is syncer.group_failures before they were made.
    awaits_write: bool
    group_mark: int
    recv_into: Any
    raw_send: Any
    closing: bool

    if TYPE_CHECKING:
        out: list

        def answer(self, handler, request): ...
        def _trace(self, request, reply) -> None: ...

    def may_serve_from_loop(self) -> bool:
        """Whether the next batches can run in the readable watcher's callback."""
        state = self.state
        return (
            self.parser.__class__ is Parser
            and not state.collection.waits_for_io
            and not state.events.active
            and not self.eof
            and not self.closing
            and not state.stopping
        )

    def serve_from_loop(self, readable):
        """Park the greenlet; the loop's callback serves batches until one needs it.

        Returns what the callback handed over: ``(RUN, requests)``, ``(FLUSH, None)``,
        ``(END, None)`` or ``(FAILED, exception)``.
        """
        waiter = self.handover = Waiter()
        readable.start(self._on_readable)
        try:
            return waiter.get()
        finally:
            readable.stop()
            self.handover = None

    def _on_readable(self) -> None:
        # Runs in the hub: nothing may escape into the loop, and nothing here may wait.
        try:
            outcome = self._serve_batch()
        except BaseException as exc:  # ConnectionGone too: the greenlet ends the connection
            outcome = (FAILED, exc)
        if outcome is not None:
            handover = self.handover
            if handover is not None:
                self.handover = None
                handover.switch(outcome)

    def _serve_batch(self):
        try:
            data = receive(self.recv_into)
        except BlockingIOError:
            return None
        except OSError as exc:
            return (FAILED, exc)
        if not data:
            return (END, None)
        state = self.state
        state.stats.bytes_read += len(data)
        syncer = state.syncer
        if not self.out:  # else replies of an earlier batch still wait for their turn's end
            self.seq_mark = syncer.write_seq
            self.awaits_fsync = False
            self.group_mark = syncer.group_failures
        parser = self.parser
        requests = self.requests = parser.feed(data)
        if self.input_held or parser.partial or state.events.active:
            return (RUN, requests)  # input accounting, request_timeout: the greenlet's
        grouped = syncer.grouped_records
        syncer.grouping = syncer.hub if syncer.group_allowed else None
        try:
            done = self._run_on_loop(requests)
        finally:
            syncer.grouping = None
        if syncer.grouped_records != grouped:
            self.awaits_write = True
        if done < len(requests):
            return (RUN, requests[done:])
        self.requests = None
        state.stats.loop_batches += 1
        if self.out:
            if syncer.write_seq != self.seq_mark:
                self.awaits_fsync = True
            state.turn_replies.add(self)
        return None

    def groups_records(self) -> dict | None:
        """The handler module's ``LOOP_SAFE`` table when the connection's greenlet may
        group the records of the commands it lists (as the loop's callback does: text
        protocol, journal storage), else None; ``answer_grouped`` looks at the rest."""
        state = self.state
        if self.parser.__class__ is Parser and not state.collection.waits_for_io:
            return state.registry.on_loop
        return None

    def answer_grouped(self, on_loop: dict | None, handler, request):
        """``answer``, with the command's records left for the turn's group write when
        ``on_loop`` (``groups_records``) says it cannot wait: a pipeline past the loop's
        turn, run by the greenlet, then writes once per turn, not once per command."""
        state = self.state
        syncer = state.syncer
        # Room on the disk and no event subscriber, looked at per command as the loop
        # looks per batch: a pipeline can run for seconds.
        if on_loop is None or not syncer.group_allowed or state.events.active:
            return self.answer(handler, request)
        check = on_loop.get(request.command, _UNSAFE)
        if check is not None and (check is _UNSAFE or not check(state, request)):
            return self.answer(handler, request)
        grouped = syncer.grouped_records
        if not self.awaits_write:
            self.group_mark = syncer.group_failures
        syncer.grouping = getcurrent()
        try:
            reply = self.answer(handler, request)
        finally:
            syncer.grouping = None
        if syncer.grouped_records != grouped:
            self.awaits_write = True  # flush writes them before the replies go
        return reply

    def replies_may_go(self) -> None:
        """Before the pending replies go out: write the records they acknowledge, if the
        turn's group write has not yet (``Syncer.write_pending``).  When a group write
        failed since they were made, they may acknowledge what is not in the journal:
        withhold them and drop the connection (``ConnectionGone``) rather than lie."""
        syncer = self.state.syncer
        syncer.write_pending()
        self.awaits_write = False
        if syncer.group_failures != self.group_mark:
            log.critical("a journal group write failed; closing connection %s without replying",
                         self.session.id)
            self.out.clear()
            self.out_size = 0
            raise ConnectionGone()

    def send_at_turn_end(self) -> None:
        """Send the replies the loop's callback left for the end of the turn
        (``TurnReplies``); hand over to the greenlet what must wait."""
        if self.handover is None or not self.out:
            return  # the greenlet took over since: it sends them, in order, itself
        syncer = self.state.syncer
        if not self.awaits_fsync:
            # Its batch wrote nothing under ``always``; the writes of connections served
            # after it in this turn are theirs to wait for.
            self.seq_mark = syncer.write_seq
        try:
            if self.awaits_write:
                # Only the first connection of a turn finds records still pending: the
                # rest need no call (this runs once per connection per turn).
                if syncer.pending or syncer.group_failures != self.group_mark:
                    self.replies_may_go()
                else:
                    self.awaits_write = False
            # Sent here when that needs no wait; else ``flush`` (the greenlet) sends them.
            if syncer.write_seq == self.seq_mark and self.out_size <= LOOP_SEND_LIMIT:
                # (No fsync to wait for, nor parts better sent unjoined.)
                out = self.out
                data = out[0] if len(out) == 1 else b"".join(out)  # one request: no copy
                out.clear()
                size = self.out_size
                self.out_size = 0
                try:
                    sent = self.raw_send(data)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    raise ConnectionGone() from None
                self.state.stats.bytes_written += sent
                if sent == size:
                    return
                # The client is not reading: its greenlet waits, not the loop.
                rest = memoryview(data)[sent:]
                out.append(rest)
                self.out_size = len(rest)
            outcome: tuple = (FLUSH, None)
        except BaseException as exc:  # ConnectionGone too: the greenlet ends the connection
            outcome = (FAILED, exc)
        handover = self.handover
        if handover is not None:
            self.handover = None
            handover.switch(outcome)

    def _run_on_loop(self, requests) -> int:
        """Run requests from the first while each is safe on the loop; how many ran."""
        state = self.state
        registry = state.registry
        limit = state.settings.max_output_buffer
        turn_ends = 0.0  # set at the first look at the clock: most batches are shorter
        index = 0
        for request in requests:
            if request.error is not None:
                return index
            command = request.command
            check = registry.on_loop.get(command, _UNSAFE)
            if check is not None and (check is _UNSAFE or not check(state, request)):
                return index
            handler = registry.commands.get(command)
            if handler is None:
                return index
            reply = self.answer(handler, request)
            index += 1
            if state.debug:
                self._trace(request, reply)
            if self.out_size > limit:
                return index  # the greenlet sends them (and waits for the reader) first
            if index % LOOP_TURN_BATCH == 0:
                if not turn_ends:
                    turn_ends = turn_end(LOOP_TURN_SECONDS)
                if time.perf_counter() > turn_ends:
                    return index
        return index
