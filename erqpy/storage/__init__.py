"""Queues on disk: record format, journals, the fsync syncer, segment files, recovery and
the data directory (which owns every file name).

Nothing here imports ``erqpy.server`` or ``erqpy.client``.
"""
