"""One client's long pipeline does not hold every other client until it ends: the
connection lets the others in every couple of milliseconds (connection.TURN_SECONDS)."""

import select


def test_another_client_is_served_while_a_long_pipeline_of_queue_creations_runs(server):
    """3,000 queue creations (each makes a journal file) take the server a second or
    more; a ``version`` sent after them is answered while the pipeline's client has not
    yet had one reply (its replies go out when its batch ends)."""
    creator = server.raw()
    creator.send(b"".join(b"set fair%d 0 0 1\r\nx\r\n" % n for n in range(3000)))
    other = server.raw()

    other.send(b"version\r\n")
    assert other.read_until(b"\r\n", timeout=30).startswith(b"VERSION ")

    readable, _, _ = select.select([creator.sock], [], [], 0)
    assert not readable, "the pipeline finished before the other client was served"
    assert b"STORED\r\n" * 3000 == creator.read_exactly(8 * 3000, timeout=120)
