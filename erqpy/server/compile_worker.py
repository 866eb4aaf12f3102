"""One long-lived child process that compiles changed reloadable files off the hub.

``compile()`` holds the interpreter lock for its whole run (about 5 ms for a 400-line
handler file here), so a thread would not free the hub; a child process does.  Starting
a child for every reload cost 30-40 ms of CPU (the interpreter's start) on top of the
compile: with 500 busy connections and a reload every 100 ms that took a third of a core
from the clients on a 2-core machine.  So one child is started by the first reload that
has something to compile, and kept: a request is one length-prefixed ``marshal`` message
each way over its pipes.  It exits at the end of its input (the server has gone, even
by SIGKILL), and after any failure it is stopped and the next request starts another.
"""

import marshal
import struct
import sys

import gevent
from gevent import subprocess
from gevent.lock import Semaphore

#: The child: reads ``(wanted, optimize)`` messages, where ``wanted`` lists (path, known
#: digest) pairs; compiles each file whose text hashes otherwise; answers with a list of
#: (path, digest, code).  ``-I -S``: no site, no user environment.
_WORKER = """
import hashlib, marshal, struct, sys
read, write, flush = sys.stdin.buffer.read, sys.stdout.buffer.write, sys.stdout.buffer.flush
while True:
    header = read(8)
    if len(header) < 8:
        break
    wanted, optimize = marshal.loads(read(struct.unpack(">Q", header)[0]))
    out = []
    for path, known in wanted:
        try:
            with open(path, "rb") as f:
                source = f.read()
            digest = hashlib.sha256(source).digest()
            if digest != known:
                out.append((path, digest, compile(source, path, "exec", dont_inherit=True, optimize=optimize)))
        except (OSError, SyntaxError, ValueError):
            pass  # compiled on the hub later, which reports the error the usual way
    blob = marshal.dumps(out)
    write(struct.pack(">Q", len(blob)) + blob)
    flush()
"""

_HEADER = struct.Struct(">Q")
_process = None  # the child, once started
_one_at_a_time = Semaphore()  # two reloads must not interleave their messages


def compile_files(wanted: list, optimize: int, timeout: float):
    """``[(path, digest, code)]`` for the ``(path, known digest)`` pairs whose files
    changed, or None when no child could answer (the caller compiles on the hub).  A
    child found dead (killed since the last reload) is replaced once."""
    with _one_at_a_time:
        for _attempt in range(2):
            try:
                return _ask(marshal.dumps((wanted, optimize)), timeout)
            except TimeoutError:
                stop()
                return None  # a compile that slow would be as slow again
            except (OSError, subprocess.SubprocessError, ValueError, EOFError, TypeError, struct.error):
                stop()
        return None


def _ask(blob: bytes, timeout: float):
    global _process
    if _process is None or _process.poll() is not None:
        _process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WORKER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
    with gevent.Timeout(timeout, TimeoutError):
        _process.stdin.write(_HEADER.pack(len(blob)) + blob)
        _process.stdin.flush()
        (size,) = _HEADER.unpack(_read_exactly(_process.stdout, _HEADER.size))
        return marshal.loads(_read_exactly(_process.stdout, size))


def _read_exactly(stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise EOFError("the compile worker ended its output")
        data += chunk
    return data


def stop() -> None:
    """Stop the child (it is started again when needed)."""
    global _process
    process, _process = _process, None
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(timeout=5)


def pid() -> int:
    """The child's pid, or 0 while none runs (for tests and ``erqctl status``)."""
    return _process.pid if _process is not None and _process.poll() is None else 0
