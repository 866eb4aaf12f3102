"""Fail points: named places in the storage code where a test can make the process die,
to prove that a crash at any step loses nothing.  Set ERQPY_FAILPOINT to one of them.

Both spellings are checked, because a misspelt fail point would otherwise never fire and
a crash test would pass without crashing: ``failpoint`` refuses a name not listed here,
and ``check_environment`` (at start-up) refuses an ERQPY_FAILPOINT that names none.
"""

import logging
import os

from erqpy.errors import ServerHalt

# The journal's logger name, kept from when this lived there: tests and operators match it.
log = logging.getLogger("erqpy.journal")

ENV = "ERQPY_FAILPOINT"
#: Exit status of a process stopped at a fail point.
EXIT_STATUS = 86

FAILPOINTS = frozenset((
    "rewrite-before-rename",  # journal: the new file is written and fsynced, not yet in place
    "rewrite-after-rename",  # journal: the new file is in place; the old descriptor is open
    "snapshot-before-segment-delete",  # segments: snapshot done, consumed segments remain
    "segment-after-seal",  # segments: a full segment is sealed, the next not yet created
    "create-before-header",  # newfiles: a new queue's journal exists, empty (worker thread)
))


def failpoint(name: str) -> None:
    if name not in FAILPOINTS:
        raise ValueError(f"unknown fail point {name!r}; add it to failpoints.FAILPOINTS")
    if os.environ.get(ENV) == name:
        log.error("failpoint %s reached: exiting", name)
        os._exit(EXIT_STATUS)


def check_environment() -> None:
    """Halt when ERQPY_FAILPOINT is set to a name no fail point has."""
    armed = os.environ.get(ENV)
    if armed and armed not in FAILPOINTS:
        raise ServerHalt(f"{ENV}={armed!r} names no fail point; known: {', '.join(sorted(FAILPOINTS))}")
