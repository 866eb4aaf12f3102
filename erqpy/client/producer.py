"""Producers: a namespace per project, jobs wrapped in envelopes, batch puts.

::

    from erqpy.client.producer import Producer

    producer = Producer(["127.0.0.1:22133"], namespace="shop", tenant="acme")
    producer.put("emails", "send_welcome", {"user": 42})       # queue "shop:emails"
    producer.put_many("emails", [("send_welcome", {"user": n}) for n in range(100)])

A consumer then runs ``erqpy consume shop:emails --handler app.jobs:handle`` (or
``--namespace shop emails``).
"""

from erqpy.client.client import Client
from erqpy.client.envelope import make_envelope

NAMESPACE_SEPARATOR = ":"


def namespaced(namespace, queue):
    """``<namespace>:<queue>``, or ``queue`` alone without a namespace."""
    if not namespace:
        return queue
    if NAMESPACE_SEPARATOR in namespace:
        raise ValueError(f"a namespace must not contain {NAMESPACE_SEPARATOR!r}: {namespace!r}")
    return f"{namespace}{NAMESPACE_SEPARATOR}{queue}"


class Producer:
    """Puts envelopes (see ``erqpy.envelope``) on namespaced queues.

    ``servers``: a list of ``"host:port"``, or an ``erqpy.client.Client`` to share.
    ``tenant``: the default tenant of every job; ``put(..., tenant=...)`` overrides it.
    ``metadata``: default metadata merged into every envelope's ``meta``.
    Other keyword arguments go to ``Client``.
    """

    def __init__(self, servers=None, *, namespace=None, tenant=None, metadata=None, **client_options):
        if isinstance(servers, Client):
            self.client = servers
            self._owns_client = False
        else:
            self.client = Client(servers or ("127.0.0.1:22133",), **client_options)
            self._owns_client = True
        namespaced(namespace, "probe")  # validate now, not on the first put
        self.namespace = namespace
        self.tenant = tenant
        self.metadata = dict(metadata or {})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._owns_client:
            self.client.close()

    def queue_name(self, queue):
        return namespaced(self.namespace, queue)

    def envelope(self, job, payload=None, *, tenant=None, metadata=None):
        meta = dict(self.metadata)
        if metadata:
            meta.update(metadata)
        return make_envelope(job, payload, tenant=tenant if tenant is not None else self.tenant,
                             metadata=meta)

    def put(self, queue, job, payload=None, *, tenant=None, metadata=None, expire=0,
            delay=None, at=None, priority=None):
        """Put one job; return its envelope once a server has acknowledged it.
        ``delay`` (seconds), ``at`` (datetime or Unix seconds), ``priority`` (0..9): as
        ``Client.put``."""
        envelope = self.envelope(job, payload, tenant=tenant, metadata=metadata)
        self.client.put(self.queue_name(queue), envelope, expire=expire, delay=delay, at=at, priority=priority)
        return envelope

    def put_many(self, queue, jobs, *, tenant=None, metadata=None, expire=0, batch=100,
                 delay=None, at=None, priority=None):
        """Put ``(job, payload)`` pairs, ``batch`` per round trip; return their envelopes.

        Raises ``erqpy.client.NotStored`` (its ``failed`` lists the indexes refused)."""
        envelopes = [self.envelope(job, payload, tenant=tenant, metadata=metadata)
                     for job, payload in jobs]
        self.client.put_many(self.queue_name(queue), envelopes, expire=expire, batch=batch,
                             delay=delay, at=at, priority=priority)
        return envelopes
