"""Walking a whole file's records, and what recovery makes of damage in it.

``records`` decodes one record at a time; this turns a file's bytes into events: records,
damage skipped, and a torn or unreadable tail.  Journal replay and segment scans use it.
"""

from erqpy.storage.records import DAMAGED, HEADER_SIZE, INCOMPLETE, OP_ADD, UNFRAMED, Record

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


def first_add_id(segments: list, index: int, offset: int) -> int:
    """The id of the first item (ADD record) from ``offset`` of ``segments[index]`` on,
    or ``1 << 62`` when there is none: what read-behind would load next.

    Read from a validated record, never from raw bytes: this id becomes a snapshot's
    HEAD, and segments below HEAD are deleted.  A damaged record there is passed over as
    read-behind will pass over it.
    """
    while index < len(segments):
        segment = segments[index]
        fmt = segment.format
        pos = max(offset, fmt.header_size)
        with open(segment.path, "rb") as f:
            f.seek(pos)
            head = f.read(fmt.head_size)
            size = fmt.frame_length(head, 0)
            record = None
            if size is not None:
                record, _end = fmt.decode_at(head + f.read(size - len(head)), 0)
            if not isinstance(record, Record):  # damage at the cursor
                f.seek(pos)
                record = next((r for event, _p, _n, r in walk(fmt, f.read(), 0) if event is RECORD), None)
        if record is not None and record.opcode == OP_ADD:
            return record.item_id
        index += 1  # a SEAL, or nothing valid: the next segment
        offset = HEADER_SIZE
    return 1 << 62
