"""A reader blocked on a queue, and the promise queues make to it.

A queue never hands an item to a waiter directly.  It appends the item, then *notifies*
the oldest waiter, which takes the item itself when it runs.  So an item is never in
flight between a queue and a reader that may have just gone: if the notified waiter
leaves without taking (its client disconnected, its deadline passed, the server is
stopping), it passes the notification to the next waiter (``PersistentQueue.pass_on``).
"""

import fcntl
import socket
import struct
import termios
import time

import gevent
from gevent.event import Event

from erqpy.compat import raw_socket
from erqpy.errors import ConnectionGone


class Waiter:
    """One blocked reader.  ``event`` wakes it for any reason; the flags say which."""

    __slots__ = ("event", "notified", "readable", "since", "sock")

    def __init__(self, sock=None):
        self.event = Event()
        self.notified = False  # a queue has an item for this waiter to try
        self.readable = False  # the client's socket has input (data or EOF)
        self.since = time.monotonic()  # for the consumers view: how long it has waited
        self.sock = sock  # the reader's socket, if known: the consumers view names its peer

    def notify(self) -> None:
        self.notified = True
        self.event.set()

    def on_readable(self) -> None:
        """Called from the hub's I/O watcher on the client socket."""
        self.readable = True
        self.event.set()


#: What a non-blocking peek at a client socket finds.
INPUT_PENDING, NO_INPUT, END_OF_INPUT, BROKEN = "pending", "none", "eof", "broken"


def peek_input(sock) -> str:
    """Look at the client socket without reading: input waiting, none yet, end of input
    (FIN), or broken (a reset, an error).

    The peek goes to the OS socket under gevent's wrapper, whose ``recv`` would wait on
    EAGAIN instead of returning.
    """
    raw = raw_socket(sock)
    try:
        return INPUT_PENDING if raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) else END_OF_INPUT
    except BlockingIOError:
        return NO_INPUT
    except OSError:
        return BROKEN


def client_gone(sock) -> bool:
    """True when the peer has closed its end (FIN) or reset it."""
    return peek_input(sock) in (END_OF_INPUT, BROKEN)


#: ``tcp_info.tcpi_state`` of a connection the peer has reset (Linux ``TCP_CLOSE``).
_TCP_CLOSE = 7


def client_reset(sock) -> bool:
    """True when the connection is broken: reset by the peer, or failed.

    Unlike ``client_gone``, a clean end of input (FIN) is not "gone": the peer may have
    only shut down its sending side and still read the replies (half-close).  A reset
    that has arrived shows as a pending error or as the TCP state ``CLOSE``.
    """
    state = peek_input(sock)
    if state != END_OF_INPUT:
        return state == BROKEN
    raw = raw_socket(sock)
    try:
        return raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == _TCP_CLOSE
    except OSError:  # not TCP: end of input is all there is to know
        return True


def delivered(sock, timeout: float) -> bool:
    """True once the peer's TCP stack has acknowledged every byte sent on ``sock``.

    A peer whose socket is open (even half-closed) acknowledges what it receives; a peer
    that has closed its socket answers with a reset, which empties the send queue too,
    so the state is checked once the queue is empty.  False on a reset, an error, or
    ``timeout`` seconds without the acknowledgement.
    """
    raw = raw_socket(sock)
    deadline = time.monotonic() + timeout
    delay = 0.0002
    while True:
        if client_reset(sock):
            return False
        try:
            unacknowledged = struct.unpack("i", fcntl.ioctl(raw.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        except OSError:
            return False
        if unacknowledged == 0:
            return not client_reset(sock)
        if time.monotonic() > deadline:
            return False
        gevent.sleep(delay)
        delay = min(delay * 2, 0.05)


class _Place:
    """A multi-queue reader's place in one queue's line (``wait_for_item`` over several
    lines): the queue notifies the place, so the reader knows which lines owe it a turn."""

    __slots__ = ("waiter", "line", "notified")

    def __init__(self, waiter, line):
        self.waiter = waiter
        self.line = line
        self.notified = False

    @property
    def event(self):  # the queue's wake_all sets it: a deleted queue, a shutdown
        return self.waiter.event

    def notify(self) -> None:
        self.notified = True
        self.waiter.notify()


def wait_for_item(queue, timeout: float, take, is_stopping, *, sock=None, on_input=None,
                  is_gone=client_gone, watch=True):
    """Stand in ``queue``'s line of waiters until ``take()`` returns an item.

    Returns the item, or None when ``timeout`` seconds pass, the queue is deleted or
    ``is_stopping()`` says the server is stopping.  With ``sock`` (the client's socket)
    the socket is watched while waiting: ``on_input()`` is called when it becomes
    readable and returns whether to keep watching; it raises ``ConnectionGone`` when the
    client has gone, which ends the wait at once.  Before taking an item ``is_gone(sock)``
    is asked as well, so an item is never handed to a client known to have gone
    (``client_gone``: the peer closed or reset; ``client_reset``: it reset, for a caller
    that serves half-closed connections).

    ``queue`` may be a list of lines (queues, or lines of queues not created yet): the
    reader then stands in every one of them at once, one wait, and ``take()`` looks at
    them all (``ops.take_first_or_wait``).  The rules hold per line: a line notifies its
    oldest place; a place notified that did not get an item (lost the race) goes back to
    the head of its line; one whose reader leaves, or took from another line, passes the
    turn on, so no item waits while a reader waits for it.  It ends when any line is
    deleted.

    This is the one implementation of the protocol in the module docstring; the data
    port and plugins (HTTP ``?wait=``) wrap it.
    """
    waiter = Waiter(sock)
    watcher = None
    if sock is not None and watch:
        watcher = gevent.get_hub().loop.io(sock.fileno(), 1)
        watcher.start(waiter.on_readable)
    places = None
    if queue.__class__ is list:
        places = [_Place(waiter, line) for line in queue]
        for place in places:
            place.line.waiters.append(place)
    else:
        queue.waiters.append(waiter)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if waiter.notified:
                if sock is not None and is_gone(sock):
                    raise ConnectionGone()  # still notified: the turn passes on below
                waiter.notified = False
                if places is None:
                    item = take()
                    if item is not None:
                        return item
                    queue.waiters.appendleft(waiter)  # lost a race (or paused): keep our turn
                else:
                    item = _take_from_places(places, take)
                    if item is not None:
                        return item
            if waiter.readable:
                assert watcher is not None  # only the watcher sets readable
                waiter.readable = False
                if not on_input():
                    watcher.stop()
            if is_stopping() or _deleted(queue, places):
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            waiter.event.clear()
            if waiter.notified or waiter.readable:
                continue
            waiter.event.wait(remaining)
    finally:
        if watcher is not None:
            watcher.stop()
            watcher.close()
        if places is None:
            _leave(queue, waiter, waiter.notified)
        else:
            for place in places:
                _leave(place.line, place, place.notified)


def _take_from_places(places, take):
    """One try of a multi-line reader: the lines that notified it owe it nothing more;
    on a lost race they keep its turn, after an item they pass theirs on (an extra
    notification is only a spurious wake for the next reader)."""
    owing = [place for place in places if place.notified]
    for place in owing:
        place.notified = False
    item = take()
    for place in owing:
        if item is None:
            place.line.waiters.appendleft(place)
        else:
            place.line.pass_on()
    return item


def _deleted(queue, places) -> bool:
    if places is None:
        return queue.deleted
    return any(place.line.deleted for place in places)


def _leave(line, place, notified: bool) -> None:
    try:
        line.waiters.remove(place)
    except ValueError:
        pass
    if notified:
        line.pass_on()
