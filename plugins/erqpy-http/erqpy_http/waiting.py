"""Blocking fetches (``?wait=ms``): stand in the queue's line of waiters.

Same contract as the data port (``server.Connection.wait_for_item``): the queue only
*notifies* the oldest waiter; the waiter takes the item itself, and if it leaves without
taking it passes the turn on.  The client's socket is watched, so an HTTP client that
gives up ends its wait at once instead of later taking an item nobody will read.
"""

import socket
import time

import gevent
from erqpy.waiters import Waiter

#: Even without a notification the waiter looks again this often: a resumed queue or a
#: state change is noticed without relying on every path to notify.
RECHECK = 0.5


def _client_gone(sock) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def wait_for_item(state, queue, timeout: float, take, sock=None):
    """``take()`` until it returns an item; None at the deadline, when the queue is
    deleted, when the server stops, or when the client disconnects."""
    waiter = Waiter()
    watcher = None
    if sock is not None:
        watcher = gevent.get_hub().loop.io(sock.fileno(), 1)
        watcher.start(waiter.on_readable)
    queue.waiters.append(waiter)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if waiter.readable:
                waiter.readable = False
                if _client_gone(sock):
                    return None
                watcher.stop()  # the client sent more (pipelining): stop looking
            if state.stopping or queue.deleted:
                return None
            notified = waiter.notified
            waiter.notified = False
            item = take()
            if item is not None:
                return item
            if notified and waiter not in queue.waiters:
                queue.waiters.appendleft(waiter)  # lost a race (or paused): keep our turn
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            waiter.event.clear()
            if waiter.notified or waiter.readable:
                continue
            waiter.event.wait(min(remaining, RECHECK))
    finally:
        if watcher is not None:
            watcher.stop()
            watcher.close()
        try:
            queue.waiters.remove(waiter)
        except ValueError:
            pass
        if waiter.notified:
            queue.pass_on()
