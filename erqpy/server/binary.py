"""The memcache binary protocol: what the data port needs to know of it so far.

A connection's first byte tells the protocols apart: a binary request starts with the
magic byte 0x80, which no text command does.  The binary protocol is not served yet
(PROTOCOL.md lists it as planned), so a binary client gets one binary error response
(``Not supported``) that its library can report, instead of hanging until its own
timeout on a reply that never comes; then the connection is closed.

Header layout (memcached ``protocol_binary.h``), 24 bytes, big-endian: magic, opcode,
key length (2), extras length, data type, vbucket / status (2), total body length (4),
opaque (4), cas (8).
"""

import struct

REQUEST_MAGIC = 0x80
RESPONSE_MAGIC = 0x81
HEADER = struct.Struct(">BBHBBHIIQ")
STATUS_NOT_SUPPORTED = 0x0083


def error_response(request_start: bytes, status: int, message: bytes) -> bytes:
    """A response to the request whose first bytes are ``request_start``, carrying
    ``status`` and ``message``.  Opcode and opaque are echoed when they have arrived,
    so that the client matches the response to its request."""
    opcode = request_start[1] if len(request_start) > 1 else 0
    opaque = request_start[12:16] if len(request_start) >= 16 else b"\0\0\0\0"
    (opaque_value,) = struct.unpack(">I", opaque)
    return HEADER.pack(RESPONSE_MAGIC, opcode, 0, 0, 0, status, len(message), opaque_value, 0) + message
