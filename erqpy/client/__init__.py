"""The client library: a multi-server queue client, producers and the worker harness.

It talks to erqpy only over the memcache protocol and never imports the server or the
storage packages, so an application can use it without the daemon's code.
"""

from erqpy.client.client import (  # noqa: F401 (the package's public names)
    DEFAULT_SERVER,
    Client,
    Item,
    NoServerAvailable,
    NotStored,
    QueueClientError,
    ReadLost,
    RequestRefused,
    parse_servers,
)
from erqpy.client.serde import FLAG_JSON, FLAG_RAW, FLAG_ZLIB, JsonSerde, RawSerde  # noqa: F401
