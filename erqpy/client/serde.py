"""Serialisation through the item flags, for the queue client (pymemcache's serde interface).

The low four bits of the flags are the value type in PHP Memcached's scheme, so that items
read back correctly from PHP too: 0 is a string (raw bytes), 6 is JSON.  Compression is off
unless asked for.
"""

import json
import zlib

#: Flags values.  The low four bits are the value type in PHP Memcached's scheme, so the same
#: items read back correctly from PHP: 0 is a string, 6 is JSON.
FLAG_RAW = 0
FLAG_JSON = 6
FLAG_TYPE_MASK = 0xF
#: zlib compression, only when asked.  Outside PHP's type bits and its own compression bits
#: (PHP compresses with fastlz by default), so PHP cannot read compressed items.
FLAG_ZLIB = 1 << 8


class JsonSerde:
    """bytes travel as they are (flags 0); every other value as JSON (flags 6).

    ``compress_over``: zlib-compress encoded values longer than this many bytes (flag
    ``FLAG_ZLIB``).  Off by default: only Python readers understand it.
    """

    def __init__(self, compress_over=None, level=6):
        self.compress_over = compress_over
        self.level = level

    def serialize(self, key, value):
        if isinstance(value, (bytes, bytearray, memoryview)):
            data, flags = bytes(value), FLAG_RAW
        else:
            data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
            flags = FLAG_JSON
        if self.compress_over is not None and len(data) > self.compress_over:
            data, flags = zlib.compress(data, self.level), flags | FLAG_ZLIB
        return data, flags

    def deserialize(self, key, data, flags):
        if flags & FLAG_ZLIB:
            data = zlib.decompress(data)
        if flags & FLAG_TYPE_MASK == FLAG_JSON:
            return json.loads(data)
        # Flags 0 and anything we do not know (a PHP-serialised array, say): the bytes.
        return data


class RawSerde(JsonSerde):
    """bytes in, bytes out; refuses anything else instead of guessing an encoding."""

    def serialize(self, key, value):
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"RawSerde stores bytes only, not {type(value).__name__}")
        return super().serialize(key, value)

    def deserialize(self, key, data, flags):
        return zlib.decompress(data) if flags & FLAG_ZLIB else data
