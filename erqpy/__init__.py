"""erqpy: a persistent message queue server speaking the Kestrel memcache dialect."""

__version__ = "0.1.0"
