"""Fail points: named places in the storage code where a test can make the process die,
to prove that a crash at any step loses nothing."""

import logging
import os

# The journal's logger name, kept from when this lived there: tests and operators match it.
log = logging.getLogger("erqpy.journal")

#: Named points inside ``Journal.rewrite`` at which a test can make the process die, to
#: prove that a crash at any step loses nothing.  Set ERQPY_FAILPOINT to one of them.
FAILPOINTS = (
    "rewrite-before-rename",  # the new journal is written and fsynced, not yet in place
    "rewrite-after-rename",  # the new journal is in place; the old descriptor is open
    "snapshot-before-segment-delete",  # store: snapshot done, consumed segments remain
    "segment-after-seal",  # store: a full segment is sealed, the next not yet created
)


def failpoint(name: str) -> None:
    if os.environ.get("ERQPY_FAILPOINT") == name:
        log.error("failpoint %s reached: exiting", name)
        os._exit(86)
