"""When and how urgently a put's item is served: ``delay``, ``at`` and ``priority``, as the
options of the ``set`` key (``set q/delay=<ms>``, ``set q/at=<unix seconds>``, ``set
q/pri=<0..9>``: erqpy extensions, docs/PROTOCOL.md).

``delay``: seconds from now (a float; sent in milliseconds).  ``at``: a ``datetime`` (a
naive one is local time, as ``datetime.timestamp`` reads it) or Unix seconds; sent as whole
seconds, rounded up, so the item is never served before the time asked.  ``priority``:
0 (most urgent) to 9; the server's default is 5.  No option: a plain ``set``, which any
Kestrel-compatible server takes.
"""

import datetime
import math

MIN_PRIORITY, MAX_PRIORITY = 0, 9


def key_options(delay=None, at=None, priority=None) -> str:
    """The ``/option`` suffix of a set key for these arguments ("" for none)."""
    suffix = ""
    if delay is not None and at is not None:
        raise ValueError("give delay or at, not both")
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not delay >= 0:
            raise ValueError(f"delay must be a number of seconds >= 0, not {delay!r}")
        delay_ms = math.ceil(delay * 1000)
        if delay_ms:
            suffix += f"/delay={delay_ms}"
    if at is not None:
        if isinstance(at, datetime.datetime):
            at = at.timestamp()
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not at >= 0:
            raise ValueError(f"at must be a datetime or Unix seconds >= 0, not {at!r}")
        suffix += f"/at={math.ceil(at)}"
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, int) \
                or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be a whole number {MIN_PRIORITY} to {MAX_PRIORITY}, not {priority!r}")
        suffix += f"/pri={priority}"
    return suffix
