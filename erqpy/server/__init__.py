"""The daemon: connection loop and lifecycle, the memcache protocol and its handlers, the
control channel, plugins, configuration and the long-lived server state.

Modules here may import ``erqpy.storage``; storage never imports the server.
"""
