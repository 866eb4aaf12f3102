"""waiters: what a peek at a client socket finds, and the line of blocked readers.

Real TCP connections on 127.0.0.1 through gevent's sockets and real journaled queues in
tmp_path; no mock stands in for either.  A reset is made the way a client makes one:
``SO_LINGER`` 0 and close.
"""

import socket
import struct
import time

import gevent
import pytest
from gevent import socket as gsocket

from erqpy.errors import ConnectionGone
from erqpy.events import EventBus
from erqpy.server import waiters
from erqpy.server.config import Settings
from erqpy.server.state import ServerStats
from erqpy.storage.collection import QueueCollection
from erqpy.storage.datadir import DataDir
from erqpy.storage.syncer import Syncer

pytestmark = pytest.mark.unit

WAIT = 5.0  # bound of every wait for the kernel to show what the peer did


@pytest.fixture
def pair():
    """``(client, served)``: both ends of one loopback TCP connection."""
    listener = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = gsocket.create_connection(listener.getsockname())
    served, _address = listener.accept()
    listener.close()
    yield client, served
    client.close()
    served.close()


@pytest.fixture
def queue(tmp_path):
    settings = Settings(data_dir=str(tmp_path))
    collection = QueueCollection(DataDir(str(tmp_path)), settings, Syncer(), EventBus(), ServerStats())
    yield collection.create("jobs")
    collection.close_all()


def reset(sock) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def readable(sock) -> None:
    """Wait until the kernel shows input, a FIN or a reset on ``sock``."""
    gsocket.wait_read(sock.fileno(), timeout=WAIT)


def test_peek_tells_no_input_pending_end_and_broken_without_reading(pair):
    client, served = pair
    assert waiters.NO_INPUT == waiters.peek_input(served)

    client.sendall(b"get q\r\n")
    readable(served)
    assert waiters.INPUT_PENDING == waiters.peek_input(served)
    assert b"get q\r\n" == served.recv(100)  # the peek consumed nothing

    client.shutdown(socket.SHUT_WR)
    readable(served)
    assert waiters.END_OF_INPUT == waiters.peek_input(served)
    assert waiters.client_gone(served)


def test_a_fin_is_not_a_reset_but_a_reset_is(pair):
    client, served = pair
    assert not waiters.client_reset(served)
    client.shutdown(socket.SHUT_WR)  # half-close: the client may still read
    readable(served)
    assert not waiters.client_reset(served)

    reset(client)
    deadline = time.monotonic() + WAIT
    while not waiters.client_reset(served) and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert waiters.client_reset(served)


def test_delivered_once_acknowledged_and_not_to_a_closed_socket(pair):
    client, served = pair
    served.sendall(b"VALUE q 0 1\r\nx\r\nEND\r\n")
    assert waiters.delivered(served, WAIT)  # the open peer's stack acknowledged it
    assert b"VALUE q 0 1\r\nx\r\nEND\r\n" == client.recv(100)

    # A FIN, as a half-close sends; but a closed socket answers later data with a reset.
    client.close()
    readable(served)
    served.sendall(b"END\r\n")
    assert not waiters.delivered(served, WAIT)


def test_a_waiter_takes_the_item_added_while_it_waits(queue):
    def add_later():
        gevent.sleep(0.05)
        queue.add(b"job")

    adder = gevent.spawn(add_later)
    started = time.monotonic()
    item = waiters.wait_for_item(queue, WAIT, queue.remove, lambda: False)
    adder.join()

    assert b"job" == bytes(item.data)
    assert time.monotonic() - started < WAIT
    assert 0 == len(queue.waiters)


def test_a_wait_ends_empty_at_its_deadline_and_leaves_the_line(queue):
    started = time.monotonic()
    assert waiters.wait_for_item(queue, 0.1, queue.remove, lambda: False) is None
    assert time.monotonic() - started >= 0.1
    assert 0 == len(queue.waiters)


@pytest.mark.parametrize("how", ["stopping", "deleted"])
def test_a_wait_ends_empty_when_the_server_stops_or_the_queue_goes(queue, how):
    stopping = []

    def end():
        gevent.sleep(0.05)
        if how == "stopping":
            stopping.append(True)
        else:
            queue.deleted = True
        queue.wake_all()

    ender = gevent.spawn(end)
    started = time.monotonic()
    assert waiters.wait_for_item(queue, WAIT, queue.remove, lambda: bool(stopping)) is None
    ender.join()
    assert time.monotonic() - started < WAIT


def test_waiters_are_served_in_the_order_they_came(queue):
    got = []

    def reader(label):
        item = waiters.wait_for_item(queue, WAIT, queue.remove, lambda: False)
        got.append((label, bytes(item.data)))

    readers = [gevent.spawn(reader, label) for label in ("first", "second")]
    gevent.sleep(0)  # both stand in line (spawn order is run order)
    assert 2 == len(queue.waiters)
    queue.add(b"1")
    queue.add(b"2")
    gevent.joinall(readers, timeout=WAIT)

    assert [("first", b"1"), ("second", b"2")] == got


def test_a_reset_while_waiting_leaves_the_line_at_once(queue, pair):
    client, served = pair

    def on_input():
        if waiters.peek_input(served) == waiters.BROKEN:
            raise ConnectionGone()
        return True

    def reset_later():
        gevent.sleep(0.05)
        reset(client)

    resetter = gevent.spawn(reset_later)
    started = time.monotonic()
    with pytest.raises(ConnectionGone):
        waiters.wait_for_item(queue, WAIT, queue.remove, lambda: False, sock=served,
                              on_input=on_input, is_gone=waiters.client_reset)
    resetter.join()
    assert time.monotonic() - started < WAIT
    assert 0 == len(queue.waiters)


def test_a_notified_waiter_whose_client_went_passes_the_item_to_the_next(queue, pair):
    """The item is never handed to a reader known to be gone: the turn passes on."""
    client, served = pair
    outcome = {}

    def gone_reader():
        try:
            waiters.wait_for_item(queue, WAIT, queue.remove, lambda: False, sock=served,
                                  watch=False, is_gone=waiters.client_gone)
        except ConnectionGone:
            outcome["gone"] = True

    def next_reader():
        outcome["item"] = waiters.wait_for_item(queue, WAIT, queue.remove, lambda: False)

    readers = [gevent.spawn(gone_reader), gevent.spawn(next_reader)]
    gevent.sleep(0)
    client.close()  # a FIN: client_gone says gone
    readable(served)
    queue.add(b"job")
    gevent.joinall(readers, timeout=WAIT)

    assert outcome.get("gone") is True
    assert b"job" == bytes(outcome["item"].data)
    assert 0 == queue.count and {} == queue.open


def test_input_while_waiting_is_handed_to_on_input_and_the_wait_goes_on(queue, pair):
    client, served = pair
    seen = []

    def on_input():
        seen.append(served.recv(100))
        return False  # stop watching; the wait itself goes on

    def client_side():
        client.sendall(b"version\r\n")
        gevent.sleep(0.05)
        queue.add(b"job")

    helper = gevent.spawn(client_side)
    item = waiters.wait_for_item(queue, WAIT, queue.remove, lambda: False, sock=served,
                                 on_input=on_input, is_gone=waiters.client_reset)
    helper.join()

    assert [b"version\r\n"] == seen
    assert b"job" == bytes(item.data)
