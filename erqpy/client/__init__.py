"""The client library: a multi-server queue client, producers and the worker harness.

It talks to erqpy only over the memcache protocol and never imports the server or the
storage packages, so an application can use it without the daemon's code.
"""

from erqpy.client.client import Client, Item  # noqa: F401 (the package's public names)
from erqpy.client.errors import (  # noqa: F401
    NoServerAvailable,
    NotStored,
    QueueClientError,
    ReadLost,
    RequestRefused,
)
from erqpy.client.serde import FLAG_JSON, FLAG_RAW, FLAG_ZLIB, JsonSerde, RawSerde  # noqa: F401
from erqpy.client.servers import DEFAULT_SERVER, parse_servers  # noqa: F401
