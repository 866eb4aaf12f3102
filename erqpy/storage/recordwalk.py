"""Walking a whole file's records, and what recovery makes of damage in it.

``records`` decodes one record at a time; this turns a file's bytes into events: records,
damage skipped, and a torn or unreadable tail.  Journal replay and segment scans use it.
"""

from erqpy.storage.records import DAMAGED, INCOMPLETE, UNFRAMED

RECORD = "record"
SKIPPED = "skipped"  # (pos, next_pos): damaged bytes dropped, records follow
TORN = "torn"  # (pos, end): the file ends in a record that was not written whole
GIVEN_UP = "given-up"  # (pos, end): damage with no boundary the format can vouch for


def walk(fmt, buf, pos: int):
    """Every event of a whole file's records from ``pos``: ``(RECORD, pos, next, record)``,
    ``(SKIPPED, pos, next, None)``, and at most one final ``(TORN | GIVEN_UP, pos, end,
    None)``.  Never looks for a record inside a frame it has validated, and never
    searches past a torn tail."""
    end = len(buf)
    decode_at = fmt.decode_at
    while pos < end:
        record, next_pos = decode_at(buf, pos)
        if record is INCOMPLETE:
            yield TORN, pos, end, None
            return
        if record is DAMAGED:
            if next_pos == end:
                # A damaged last record cannot be told from one the disk never got
                # whole (power loss); it was never acknowledged under fsync=always.
                yield TORN, pos, end, None
                return
            yield SKIPPED, pos, next_pos, None
            pos = next_pos
            continue
        if record is UNFRAMED:
            resume = fmt.resync(buf, pos)
            if resume is None:
                # A version 2 head that is damaged with nothing valid after it is a
                # tail that never reached the disk whole (power loss), as before.
                yield (TORN if fmt.version >= 2 else GIVEN_UP), pos, end, None
                return
            yield SKIPPED, pos, resume, None
            pos = resume
            continue
        yield RECORD, pos, next_pos, record
        pos = next_pos
