"""The data port's per-connection request loop: one greenlet per connection.

The connection loop is the stable trampoline that hot reload needs: it looks the command
up in ``registry.commands`` for every request, so each open connection runs new handler
code from its next command on, while a command already running (a blocked ``get``)
finishes on the code it started with.

Per read, the loop parses every complete request in the buffer, runs them in order, and
sends their replies together (``flush``): up to ``JOIN_LIMIT`` bytes they are joined and
handed to one non-blocking ``send`` of the OS socket, larger parts (an item's data) go
out as they are between joined runs of small ones.  A pipelining client so costs one
``recv`` and usually one ``send`` per batch; what the socket buffer does not take is sent
with gevent's ``sendall``, which waits for the client to read.  Pending replies are
bounded (``max_output_buffer``): past it they are sent before more requests run, so a
client that does not read stalls its own connection instead of growing the server.
Replies that acknowledge a journal write wait for the fsync first when the queue's
policy is ``always``.

While a connection is idle between requests its greenlet is parked, and the batches that
cannot wait for anything are served from the event loop's own callback instead
(``loop_serving``): the same lookups, replies and order, without two greenlet switches
per request.
"""

import logging
import socket
import time

import gevent

from erqpy.server import binary, waiters
from erqpy import descriptors
from erqpy.compat import raw_socket
from erqpy.fairness import give_way, turn_end
from erqpy.errors import (
    REPLY_ERROR, REPLY_INTERNAL, REPLY_NO_DESCRIPTORS, ConnectionGone, ErqError, JournalWriteError, to_reply,
)
from erqpy.server.loop_serving import END, FLUSH, RUN, LoopServing
from erqpy.server.protocol import Parser
from erqpy.server.receiving import receive
from erqpy.server.session import Session
from erqpy.server import ops  # the durability wait (flush)

log = logging.getLogger("erqpy.server")
trace = logging.getLogger("erqpy.protocol")

#: Replies up to this size are joined and sent with one call; larger parts are sent as
#: they are (an item's data is never copied into a reply buffer).
JOIN_LIMIT = 256 * 1024
#: Requests run between two checks that the client has not reset the connection.
LIVENESS_BATCH = 512
#: A pipeline runs this many requests between two looks at the clock ...
TURN_BATCH = 16
#: ... and, once the loop's turn is this old (from its poll, libev's ``now``), gives way
#: first: 10,000 queue creations in one pipeline would hold every client for seconds.
TURN_SECONDS = 0.002


class Connection(LoopServing):
    """One client connection: its socket, parser, session and pending replies.

    Ends of a connection (PROTOCOL.md, README "Connections"):

    * end of input (a FIN: the client closed, or only shut down its sending side) is not
      "gone": every request received before it is still served and the replies are
      written; then the connection closes.  A blocking ``get`` still waits its time, but
      an item taken after a FIN is held as an open read until the client's TCP stack
      acknowledges the reply (``confirm_delivery``): a FIN cannot tell a half-close from a
      close, and an item must never be lost to a reader that has gone;
    * a reset, or a send that fails, is "gone": nothing more of the buffered input runs,
      a blocking ``get`` leaves its queue's line at once, and no reply is attempted.

    The waits of blocking commands and the delivery after a FIN are its base class,
    ``blocking.BlockingCommands``.
    """

    __slots__ = (  # and the bases': handover, seq_mark, awaits_*, group_mark; input_held,
        # request_started, out_size, eof; requests, absorbed, undelivered
        "state", "sock", "address", "session", "parser", "out", "closing", "clock",
        "raw_send", "recv_into",
    )

    def __init__(self, state, sock, address):
        self.state = state
        self.sock = sock
        self.address = address
        self.session = Session()
        self.parser = Parser(max_item_size=state.settings.largest_item_size)
        self.out = []  # replies not yet sent: bytes, or parts of one (bytes, memoryview)
        self.out_size = 0  # their total length
        self.requests: list | None = None
        self.closing = False
        self.eof = False  # the client has ended its input (FIN)
        self.seq_mark = 0
        self.awaits_fsync = False
        self.group_mark = 0
        self.awaits_write = False
        self.clock = time.monotonic
        # The OS socket under gevent's wrapper, whose send raises BlockingIOError instead
        # of waiting (compat.raw_socket holds the private attribute it comes from).
        self.raw_send = raw_socket(sock).send
        self.recv_into = raw_socket(sock).recv_into  # non-blocking too (receiving.receive)
        self.handover = None  # while parked: the Waiter the loop's callback hands over to
        self.input_held = 0  # this connection's share of state.buffered_input
        self.request_started = 0.0  # clock() when the partial request began; 0 = none
        self.absorbed = 0  # bytes read while commands of this batch waited
        # Items taken after the client's FIN, held open until the reply that carries
        # them is acknowledged: a Session of their own, or None.
        self.undelivered: Session | None = None

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        state = self.state
        stats = state.stats
        syncer = state.syncer
        recv_into = self.recv_into
        hub = gevent.get_hub()
        # Started only inside hub.wait or serve_from_loop, so it needs no closing when
        # the loop ends.
        readable = hub.loop.io(self.sock.fileno(), 1)
        # After a reply, wait for the next request before reading: the client is
        # most likely still reading the reply, so reading first (as gevent's recv does)
        # fails, and when it succeeds the connection keeps the hub while the others
        # wait (p50 30 µs but p99 25 ms at 128 connections).  Otherwise (a new
        # connection, noreply commands) read first, so that what a client sent before
        # it opened another connection is served first.
        wait_first = False
        first_read = True
        try:
            while not self.closing:
                requests = None
                if wait_first:
                    if self.request_started:
                        if not self._wait_readable(hub, readable):
                            self._request_timed_out()
                            break
                    elif not first_read and self.may_serve_from_loop():
                        # (After the first read, which tells the protocol.)
                        # Idle: the loop's callback serves the batches that need no wait
                        # (loop_serving); what one leaves over continues here.
                        kind, left = self.serve_from_loop(readable)
                        if kind == FLUSH:
                            self.flush()
                            continue
                        if kind == END:
                            self._end_of_input()  # everything received was served
                            break
                        if kind != RUN:
                            raise left
                        requests = left  # read and parsed already: run as any batch
                    else:
                        hub.wait(readable)
                if requests is None:
                    try:
                        data = receive(recv_into)
                    except BlockingIOError:
                        wait_first = True
                        continue
                    except OSError as exc:
                        log.debug("connection %s %s: %s", self.session.id, self.address, exc)
                        return
                    if not data:
                        # Everything received has been served already.
                        self._end_of_input()
                        break
                    if first_read:
                        first_read = False
                        other = OTHER_PROTOCOLS.get(data[0])
                        if other is not None:
                            self.parser = other(self.state.settings.largest_item_size)
                    stats.bytes_read += len(data)
                    self.seq_mark = syncer.write_seq
                    requests = self.parser.feed(data)
                self._run_batch(requests)
                wait_first = bool(self.out)
                if self.out:
                    self.flush()
                if self.eof:  # seen while a command waited; what was received is served
                    self._end_of_input()
                    break
            if self.out:
                self.flush()
        except ConnectionGone:
            return  # reset, or a send failed: nothing more of its input runs
        except OSError as exc:  # the read from the loop's callback failed
            log.debug("connection %s %s: %s", self.session.id, self.address, exc)
            return
        finally:
            self._release_input()

    def _run_batch(self, requests) -> None:
        """Run what one read completed (``requests`` grows while a command waits)."""
        self.state.stats.greenlet_batches += 1
        self.requests = requests
        parser = self.parser
        if self.input_held or self.request_started or parser.partial:
            self._input_changed()
        self._run_requests(requests)
        self.requests = None
        self.absorbed = 0

    def _run_requests(self, requests) -> None:
        """Run parsed requests in order, appending their replies to ``out``.

        ``requests`` may grow while a command waits (input absorbed meanwhile).  Every
        ``LIVENESS_BATCH`` requests the socket is checked, so a long pipeline from a
        client that has reset stops early; past ``TURN_SECONDS`` on the hub the other
        connections get a turn before the pipeline goes on; past ``max_output_buffer`` of pending
        replies they are sent (and the connection waits for the client to read them)
        before more requests run.
        """
        state = self.state
        registry = state.registry
        out = self.out
        limit = state.settings.max_output_buffer
        on_loop = self.groups_records()
        start = 0
        turn_ends = turn_end(TURN_SECONDS)
        while start < len(requests):
            # A slice, since the list grows when a command waits and absorbs input.
            batch = requests[start : start + TURN_BATCH]
            start += len(batch)
            for request in batch:
                if request.error is not None:
                    # In the connection's protocol; a handler's reply may be parts.
                    reply: bytes | list = self.parser.error_reply(request.error)
                    out.append(reply)
                    self.out_size += len(reply)
                    if request.error.closes_connection:
                        log.info("closing connection %s %s: %s", self.session.id, self.address,
                                 request.error)
                        self.closing = True
                        return
                    continue
                commands = registry.commands
                handler = commands.get(request.command)
                if handler is None:
                    handler = commands.get(request.command.lower())
                    if handler is None:
                        out.append(REPLY_ERROR)
                        self.out_size += len(REPLY_ERROR)
                        if state.debug:
                            self._trace(request, REPLY_ERROR)
                        continue
                reply = self.answer_grouped(on_loop, handler, request)
                if self.out_size > limit:
                    self.flush()
                if state.debug:
                    self._trace(request, reply)
                if self.closing:
                    return
            if start < len(requests):
                if time.perf_counter() > turn_ends:
                    give_way()
                    turn_ends = turn_end(TURN_SECONDS)
                if start % LIVENESS_BATCH < TURN_BATCH and waiters.client_reset(self.sock):
                    raise ConnectionGone()

    def answer(self, handler, request):
        """Run one request's handler and queue its reply; the reply (for the trace)."""
        try:
            reply = handler(self, request)
        except ConnectionGone:
            raise
        except Exception as exc:
            reply = self.reply_to_failure(request, exc)
        if reply:
            if reply.__class__ is bytes:
                self.out.append(reply)
                self.out_size += len(reply)
            else:  # the parts of a large reply, not joined (handlers._value)
                self.out.extend(reply)
                self.out_size += sum(map(len, reply))
        return reply

    def reply_to_failure(self, request, exc: Exception) -> bytes:
        """The reply to a command whose handler raised ``exc``."""
        if isinstance(exc, ErqError):
            return to_reply(exc)
        if isinstance(exc, OSError) and exc.errno in descriptors.EXHAUSTED:
            return REPLY_NO_DESCRIPTORS
        log.error("command %r failed on connection %s", request.command, self.session.id, exc_info=exc)
        return REPLY_INTERNAL

    def flush(self) -> None:
        """Send pending replies, after the fsync they acknowledge when the policy asks.

        Raises ``ConnectionGone`` when the client has gone (the send failed).
        """
        out = self.out
        if not out:
            return
        if self.awaits_write:
            self.replies_may_go()
        if self.state.syncer.write_seq != self.seq_mark:
            try:
                self.seq_mark = ops.wait_durable(self.state, self.seq_mark)
            except JournalWriteError:
                # The writes these replies acknowledge may not be on disk: withhold the
                # acknowledgements and drop the connection rather than lie.
                log.critical("fsync failed; closing connection %s without replying", self.session.id)
                out.clear()
                self.out_size = 0
                raise ConnectionGone() from None
        size = self.out_size
        try:
            if size <= JOIN_LIMIT:  # the usual case: one joined send per batch
                data = b"".join(out)
                out.clear()
                self.out_size = 0
                self._send(data)
            else:
                # Large parts (an item's data, a big stats reply) go out as they are,
                # never copied into one buffer; small ones are joined between them.
                parts = out[:]
                out.clear()
                self.out_size = 0
                small = []
                small_size = 0
                for part in parts:
                    size_of_part = len(part)
                    if size_of_part < JOIN_LIMIT:
                        small.append(part)
                        small_size += size_of_part
                        if small_size < JOIN_LIMIT:
                            continue
                        part = b""
                    if small:
                        self._send(b"".join(small))
                        small.clear()
                        small_size = 0
                    if part:
                        self._send(part)
                if small:
                    self._send(b"".join(small))
        except OSError as exc:
            log.debug("connection %s %s: send failed: %s", self.session.id, self.address, exc)
            raise ConnectionGone() from None
        self.state.stats.bytes_written += size
        if self.undelivered is not None:
            self.confirm_delivery()

    def _send(self, data) -> None:
        # One non-blocking send usually takes the whole reply.  gevent's sendall would
        # cost a getsockopt system call and five Python calls on every reply; it is
        # kept for the rest when the socket buffer is full (the greenlet then waits for
        # the client to read: this is what bounds the output of a client that doesn't).
        try:
            sent = self.raw_send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self.sock.sendall(memoryview(data)[sent:])

    def send_now(self, data) -> None:
        """Send ``data`` (bytes or a list of parts) and anything pending at once: for
        streaming replies (monitor)."""
        if data.__class__ is bytes:
            self.out.append(data)
            self.out_size += len(data)
        else:
            self.out.extend(data)
            self.out_size += sum(map(len, data))
        self.flush()

    def close_after_reply(self) -> None:
        self.closing = True

    def _trace(self, request, reply) -> None:
        shown = reply[:200] if isinstance(reply, bytes) else reply
        trace.debug(
            "conn %s %s: %r %r -> %r", self.session.id, self.address,
            request.command, request.args[:4], shown,
        )


#: The connection's first byte picks the protocol: text unless listed here, as the
#: parser class for the connection's input (its requests run in the same loop).
OTHER_PROTOCOLS = {binary.REQUEST_MAGIC: binary.BinaryParser}


def serve_connection(state, sock, address) -> None:
    """The StreamServer handle: run one connection and always give its reads back."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Connection(state, sock, address)
    state.connections.add(conn)
    state.stats.total_connections += 1
    try:
        conn.run()
    except (ConnectionError, TimeoutError, OSError):
        pass  # the client went away mid-reply; its reads are given back below
    finally:
        state.connections.discard(conn)
        if conn.undelivered is not None and not state.stopping:
            conn.undelivered.finish()
        # During a stop, sessions end in no particular order; giving their reads back
        # here would shuffle them.  Server.stop gives every open read back in order.
        if not state.stopping:
            conn.session.finish()
