"""Reading a connection's input through one buffer that stays allocated.

``socket.recv(n)`` allocates an ``n``-byte object for every call and shrinks it to what
arrived.  For the 256 KiB a read asks for (so that a large item comes in a few reads),
glibc's malloc maps fresh pages each time (above its 128 KiB mmap threshold), and the
shrink and the free are two more system calls, page faults for the pages the kernel
writes, and TLB shootdowns across the process's threads: under 16 busy connections
three of the five system calls per request were ``mmap``, ``mremap`` and ``munmap``.
Reading into one buffer that is allocated once and copying out what arrived costs a
copy of the bytes received, nothing more.

The buffer is shared by every connection: the copy is taken before anything can yield,
and every reader runs in the event loop's thread.
"""

RECV_SIZE = 256 * 1024  # bytes asked of one read, here and in the connection loop

_buffer = bytearray(RECV_SIZE)
_view = memoryview(_buffer)


def receive(recv_into) -> bytes:
    """What one non-blocking read brought (``b""`` at end of input), as bytes of their own.

    ``recv_into`` is the OS socket's: it raises ``BlockingIOError`` when nothing is
    waiting and ``OSError`` when the connection failed, as ``recv`` does.
    """
    size = recv_into(_view)
    return _view[:size].tobytes()
