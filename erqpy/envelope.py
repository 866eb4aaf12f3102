"""The job format shared by producers and consumers.

An envelope is a JSON object::

    {"job": "send_welcome", "payload": {...}, "tenant": "acme",
     "meta": {"id": "9f0c...", "enqueued_at": 1718000000.123, "attempt": 1, ...}}

``job`` names what to do, ``payload`` is the caller's data, ``tenant`` says on whose behalf,
``meta`` holds the enqueue time, the attempt number and any metadata the producer added.
A consumer also accepts items that are not envelopes (a PHP producer putting plain strings,
say): they become jobs with no name whose payload is the item itself.
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


class Job:
    """What a handler receives: the envelope's fields, the queue, and this delivery's state.

    ``attempt`` counts the calls of the handler for this delivery (1 on the first).
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
        self.attempt = 1

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
            return cls(item.queue, data["job"], data["payload"], data.get("tenant"),
                       meta if isinstance(meta, dict) else {}, data, item)
        return cls(item.queue, None, data, None, {}, data, item)

    @property
    def id(self):
        """The envelope's id, or the server's item id for a bare item."""
        return self.meta.get("id") or (self.item.id if self.item is not None else None)

    def __repr__(self):
        return f"Job(queue={self.queue!r}, name={self.name!r}, id={self.id!r}, attempt={self.attempt})"

    def error_record(self, error, trace, attempts):
        """The envelope put on ``<queue>_errors`` when the job is given up: the original job
        with ``meta.error``, ``meta.traceback``, ``meta.attempts``, ``meta.failed_at`` and
        ``meta.queue`` added, so that it can be inspected and put back as it is."""
        payload = self.payload
        meta = dict(self.meta)
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
