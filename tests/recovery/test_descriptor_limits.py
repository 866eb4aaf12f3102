"""A server with few file descriptors (issue 9, item 10): more queues than descriptors
all stay readable (idle journals are closed and reopened), and when descriptors do run
out the client is told so, the control channel still answers, and nothing hangs.

The server process gets a low RLIMIT_NOFILE (soft and hard) before exec, as a
systemd ``LimitNOFILE=`` would give it.
"""

import os
import resource
import socket
import time

from tests.conftest import ErqServer
from recovery_support import TIMEOUT, read_values, wait_for

NO_FDS = b"SERVER_ERROR out of file descriptors\r\n"


def limited_server(data_dir, nofile: int, args=()) -> ErqServer:
    server = ErqServer(data_dir, list(args))

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    server.preexec_fn = limit
    return server


def open_fds(server) -> int:
    return len(os.listdir(f"/proc/{server.proc.pid}/fd"))


def set_many(raw, names, batch=50):
    for start in range(0, len(names), batch):
        chunk = names[start:start + batch]
        raw.send(b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (n, len(n), n) for n in chunk))
        for name in chunk:
            assert raw.line(TIMEOUT) == b"STORED\r\n", name


def test_more_queues_than_descriptors_stay_readable(tmp_path):
    server = limited_server(tmp_path / "data", 256).start()
    try:
        names = [b"q%04d" % i for i in range(400)]
        raw = server.raw()
        set_many(raw, names)
        assert open_fds(server) < 256
        assert server.ctl("ping").returncode == 0
        status = server.ctl("--json", "status")
        assert '"max_open_files":192' in status.stdout.replace(" ", ""), status.stdout
        others = [server.raw() for _ in range(5)]
        for other in others:
            assert other.call(b"version\r\n").startswith(b"VERSION ")
            other.close()
        raw.close()
        # A restart replays every journal under the same budget.
        server.restart()
        raw = server.raw()
        for name in names:  # every item, from every queue, closed or not
            raw.send(b"get %s\r\n" % name)
            assert read_values(raw) == [(name, None)], name
        raw.close()
        assert "out of file descriptors" not in server.log()
        assert "internal error" not in server.log()
    finally:
        server.stop()


def test_out_of_descriptors_is_answered_and_the_control_channel_still_works(tmp_path):
    server = limited_server(tmp_path / "data", 64).start()
    held = []
    try:
        refused = None
        for _ in range(200):  # bounded: far more than 64 descriptors
            sock = socket.create_connection(server.address, timeout=TIMEOUT)
            sock.sendall(b"version\r\n")
            reply = sock.recv(100)
            if reply == NO_FDS:
                refused = sock
                break
            assert reply.startswith(b"VERSION "), reply
            held.append(sock)
        assert refused is not None, "the server never ran out of descriptors"
        try:  # closed after the reply (a reset, since the request was never read)
            assert refused.recv(100) == b"", "a refused connection is closed"
        except ConnectionResetError:
            pass
        refused.close()
        # The reserve descriptor answers the operator.
        ping = server.ctl("ping", timeout=30)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        # A queue cannot be created without a descriptor: a named reply, not a hang.
        first = held[0]
        first.sendall(b"set newq 0 0 1\r\nx\r\n")
        assert first.recv(100) == NO_FDS
        first.sendall(b"version\r\n")  # and the connection stays usable
        assert first.recv(100).startswith(b"VERSION ")
        # Descriptors come back: everything works again.
        for sock in held[1:]:
            sock.close()
        del held[1:]

        def stored():
            first.sendall(b"set newq 0 0 1\r\nx\r\n")
            reply = first.recv(100)
            assert reply in (b"STORED\r\n", NO_FDS), reply
            return reply == b"STORED\r\n"

        wait_for(stored, what="a queue could be created again")
        raw = server.raw()
        assert raw.call(b"get newq\r\n", b"END\r\n") == b"VALUE newq 0 1\r\nx\r\nEND\r\n"
        raw.close()
        assert "internal error" not in server.log()
    finally:
        for sock in held:
            sock.close()
        server.stop()
