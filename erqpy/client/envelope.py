"""The job format shared by producers and consumers.

An envelope is a JSON object::

    {"job": "send_welcome", "payload": {...}, "tenant": "acme",
     "meta": {"id": "9f0c...", "enqueued_at": 1718000000.123, "attempt": 1, ...}}

``job`` names what to do, ``payload`` is the caller's data, ``tenant`` says on whose behalf,
``meta`` holds the enqueue time, the attempt number and any metadata the producer added.
A consumer also accepts items that are not envelopes (a PHP producer putting plain strings,
say): they become jobs with no name whose payload is the item itself.

A job that failed and is to be tried again is put back as a *retry envelope*: the same
envelope with ``meta.attempt`` (the attempt the next delivery runs), ``meta.retry_at``
(Unix time it is due) and ``meta.last_error``.  A bare item is wrapped for that, with
``meta.bare`` saying how its payload was encoded (``utf-8``, ``base64`` or ``json``), and
unwrapped again when read, so the handler sees the item as it was first put.
"""

import base64
import json
import time
import uuid


def make_envelope(job, payload=None, *, tenant=None, metadata=None):
    """A new envelope dict; ``metadata`` keys are added to ``meta``."""
    if not isinstance(job, str) or not job:
        raise ValueError("a job name is a non-empty str")
    meta = {"id": uuid.uuid4().hex, "enqueued_at": round(time.time(), 6), "attempt": 1}
    if metadata:
        meta.update(metadata)
    return {"job": job, "payload": payload, "tenant": tenant, "meta": meta}


def is_envelope(data):
    return isinstance(data, dict) and "job" in data and "payload" in data


def _attempt_of(meta):
    attempt = meta.get("attempt")
    if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 1:
        return attempt
    return 1


def _encode_bare(data):
    """A bare item as a JSON-able payload, and how to get it back."""
    if isinstance(data, (bytes, bytearray)):
        try:
            return bytes(data).decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            return base64.b64encode(data).decode("ascii"), "base64"
    return data, "json"


def _decode_bare(payload, encoding):
    if encoding == "utf-8" and isinstance(payload, str):
        return payload.encode("utf-8")
    if encoding == "base64" and isinstance(payload, str):
        return base64.b64decode(payload)
    return payload


class Job:
    """What a handler receives: the envelope's fields, the queue, and this delivery's state.

    ``attempt`` is the number of this attempt at the job, counted across deliveries
    (``meta.attempt``; 1 on the first).
    ``item`` is the ``erqpy.client.Item`` it came from (``item.server``, ``item.id``).
    ``data`` is the item as it was read (the whole envelope, or the bare value).
    """

    __slots__ = ("queue", "name", "payload", "tenant", "meta", "data", "item", "attempt")

    def __init__(self, queue, name, payload, tenant=None, meta=None, data=None, item=None):
        self.queue = queue
        self.name = name
        self.payload = payload
        self.tenant = tenant
        self.meta = meta if meta is not None else {}
        self.data = data
        self.item = item
        self.attempt = _attempt_of(self.meta)

    @classmethod
    def from_item(cls, item):
        data = item.data
        if isinstance(data, bytes) and data[:1] == b"{":
            # A producer that json-encodes by hand stores a plain string (flags 0).
            try:
                decoded = json.loads(data)
            except ValueError:
                decoded = None
            if is_envelope(decoded):
                data = decoded
        if is_envelope(data):
            meta = data.get("meta")
            meta = dict(meta) if isinstance(meta, dict) else {}
            bare = meta.pop("bare", None)
            if bare is not None and data["job"] is None:  # a wrapped bare item, unwrapped
                original = _decode_bare(data["payload"], bare)
                return cls(item.queue, None, original, None, meta, original, item)
            return cls(item.queue, data["job"], data["payload"], data.get("tenant"), meta, data, item)
        return cls(item.queue, None, data, None, {}, data, item)

    @property
    def id(self):
        """The envelope's id, or the server's item id for a bare item."""
        return self.meta.get("id") or (self.item.id if self.item is not None else None)

    def __repr__(self):
        return f"Job(queue={self.queue!r}, name={self.name!r}, id={self.id!r}, attempt={self.attempt})"

    @property
    def retry_at(self):
        """Unix time before which this delivery should not run, or None."""
        value = self.meta.get("retry_at")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return None

    def retry_envelope(self, attempt, retry_at, error):
        """What to put back on the queue so that ``attempt`` runs at ``retry_at``: the
        envelope as it came, or the bare item wrapped in one."""
        meta = dict(self.meta)
        meta.update({"attempt": attempt, "retry_at": round(retry_at, 3),
                     "last_error": f"{type(error).__name__}: {error}"})
        if is_envelope(self.data):
            envelope = dict(self.data)
            envelope["meta"] = meta
            return envelope
        payload, meta["bare"] = _encode_bare(self.data)
        return {"job": None, "payload": payload, "tenant": None, "meta": meta}

    def error_record(self, error, trace, attempts):
        """The envelope put on ``<queue>_errors`` when the job is given up: the original job
        with ``meta.error``, ``meta.traceback``, ``meta.attempts``, ``meta.failed_at`` and
        ``meta.queue`` added, and ``meta.attempt`` back at 1, so that it can be inspected
        and put back as it is."""
        payload = self.payload
        meta = dict(self.meta)
        # Put back as it is, the job starts again from its first attempt.
        meta.pop("retry_at", None)
        meta.pop("last_error", None)
        meta["attempt"] = 1
        if isinstance(payload, (bytes, bytearray)):
            try:
                payload = bytes(payload).decode("utf-8")
                meta["payload_encoding"] = "utf-8"
            except UnicodeDecodeError:
                payload = base64.b64encode(payload).decode("ascii")
                meta["payload_encoding"] = "base64"
        meta.update({
            "error": f"{type(error).__name__}: {error}",
            "traceback": trace,
            "attempts": attempts,
            "failed_at": round(time.time(), 6),
            "queue": self.queue,
        })
        return {"job": self.name, "payload": payload, "tenant": self.tenant, "meta": meta}
