"""Queue names: which are valid (they become file names) and how a fanout child is named."""

import re

from erqpy.errors import ClientError

#: Queue names become file names: no whitespace or control bytes, none of "/ . ~".
MAX_NAME = 250
_BAD_NAME_BYTE = re.compile(rb"[\x00-\x20\x7f/.~]")
FANOUT_SEPARATOR = "+"


def check_name(raw: bytes) -> str:
    """The queue name as text, or ``ClientError("bad queue name")``."""
    if not raw or len(raw) > MAX_NAME or _BAD_NAME_BYTE.search(raw):
        raise ClientError("bad queue name")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ClientError("bad queue name") from None
    if name.startswith(FANOUT_SEPARATOR) or name.endswith(FANOUT_SEPARATOR):
        raise ClientError("bad queue name")
    return name
