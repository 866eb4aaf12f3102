"""erqpy-statsd: send queue metrics to a statsd server over UDP.

Every ``interval`` seconds it sends, per queue, gauges for items, bytes, open reads,
waiters and journal size, and counters for items enqueued, dequeued and expired since
the last flush; plus server gauges for connections and items.  Configure it with::

    [plugins.statsd]
    host = "127.0.0.1"   # the statsd server
    port = 8125
    prefix = "erqpy"     # metric names start with this
    interval = 10        # seconds between flushes

Without a ``[plugins.statsd]`` table the plugin is installed but idle.  The data port
gains ``statsd_flush``, which sends at once and replies with the number of
metric lines sent (handy to check a dashboard without waiting for the interval).

Metric names: a statsd line is ``<name>:<value>|<type>[|@<rate>]``, so a ``:`` in a name
ends it early (``shop:emails``, every ``Producer`` namespace, would arrive as a metric
``erqpy.queue.shop`` with garbage after it).  As statsd_exporter and graphite do, each
``:``, ``|``, ``@``, ``/``, whitespace or control character in a queue name is replaced
by ``_``: queue ``shop:emails`` reports as ``erqpy.queue.shop_emails.items``.  Queue names
never contain ``.`` (the statsd hierarchy separator), so one queue stays one node.  Two
queue names that differ only in those characters (``a:b`` and ``a_b``) share metrics.
The prefix is checked instead: one with such a character is refused at load.
"""

import re
import socket

import gevent

#: statsd packets stay under a typical Ethernet MTU once IP and UDP headers are added.
MAX_PACKET = 1432
DEFAULTS = {"host": "127.0.0.1", "port": 8125, "prefix": "erqpy", "interval": 10.0}
#: Characters that break the statsd line format ``<name>:<value>|<type>[|@rate]`` (and
#: newlines, which separate lines in a packet), plus ``/``, which graphite turns into
#: directories.  Each one becomes ``_``.
UNSAFE_IN_NAME = re.compile(r"[:|@/\s\x00-\x1f\x7f]")


def metric_name_part(name: str) -> str:
    """A queue name as one node of a statsd metric name: ``shop:emails`` -> ``shop_emails``."""
    return UNSAFE_IN_NAME.sub("_", name)


def _settings(config: dict) -> dict:
    settings = dict(DEFAULTS)
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown statsd settings: {', '.join(sorted(unknown))}")
    settings.update(config)
    if not isinstance(settings["port"], int) or not 0 < settings["port"] < 65536:
        raise ValueError("statsd port must be 1 to 65535")
    if not isinstance(settings["interval"], (int, float)) or settings["interval"] <= 0:
        raise ValueError("statsd interval must be a positive number of seconds")
    prefix = settings["prefix"]
    if not isinstance(prefix, str) or not prefix or UNSAFE_IN_NAME.search(prefix):
        raise ValueError("statsd prefix must be a non-empty string without : | @ / or whitespace")
    return settings


def queue_counters(queue) -> dict:
    stats = queue.stats
    return {"enqueued": stats.total_items, "dequeued": stats.gets, "expired": stats.expired_items}


def baseline(state) -> dict:
    """Counters as they are now, so the first flush does not report replayed history."""
    return {name: queue_counters(q) for name, q in state.collection.queues.items()}


def metric_lines(state, previous: dict, prefix: str) -> list[str]:
    """The lines of one flush.  ``previous`` holds last flush's counters (a queue absent
    from it was created since, so all its counts are new); it is updated."""
    lines = [
        f"{prefix}.connections:{len(state.connections)}|g",
        f"{prefix}.items:{state.collection.total_items}|g",
    ]
    for name, queue in list(state.collection.queues.items()):
        base = f"{prefix}.queue.{metric_name_part(name)}"
        counters = queue_counters(queue)
        last = previous.get(name, {})
        for key, value in counters.items():
            lines.append(f"{base}.{key}:{max(value - last.get(key, 0), 0)}|c")
        previous[name] = counters
        lines.extend((
            f"{base}.items:{queue.count}|g",
            f"{base}.bytes:{queue.bytes}|g",
            f"{base}.open_reads:{len(queue.open)}|g",
            f"{base}.waiters:{len(queue.waiters)}|g",
            f"{base}.journal_bytes:{queue.store.size if queue.store is not None else 0}|g",
        ))
    for gone in set(previous) - set(state.collection.queues):
        del previous[gone]
    return lines


def packets(lines: list[str]):
    """Pack lines into newline-separated datagrams of at most MAX_PACKET bytes."""
    batch, size = [], 0
    for line in lines:
        encoded = line.encode()
        if batch and size + len(encoded) + 1 > MAX_PACKET:
            yield b"\n".join(batch)
            batch, size = [], 0
        batch.append(encoded)
        size += len(encoded) + 1
    if batch:
        yield b"\n".join(batch)


class Exporter:
    """Owns the UDP socket; the counters live in ``data`` so a plugin reload keeps them."""

    def __init__(self, api, settings: dict):
        self.api = api
        self.settings = settings
        if "previous" not in api.data:
            api.data["previous"] = baseline(api.state)
        self.previous = api.data["previous"]
        self.address = (settings["host"], settings["port"])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def flush(self) -> int:
        lines = metric_lines(self.api.state, self.previous, self.settings["prefix"])
        for packet in packets(lines):
            try:
                self.sock.sendto(packet, self.address)
            except OSError as exc:  # statsd down: metrics are best effort, never fatal
                self.api.log.debug("statsd send failed: %s", exc)
        return len(lines)

    def run(self) -> None:
        try:
            while True:
                gevent.sleep(self.settings["interval"])
                self.flush()
        finally:
            self.sock.close()


class Plugin:
    def validate_config(self, table: dict) -> list:
        """Checked by the core at start and reload: a bad table refuses the whole file."""
        try:
            _settings(table)
        except ValueError as exc:
            return [str(exc)]
        return []

    def register(self, api) -> None:
        if not api.config:
            api.log.info("no [plugins.statsd] table: statsd export is off")
            return
        exporter = Exporter(api, _settings(api.config))

        def cmd_statsd_flush(conn, request):
            return b"%d\r\n" % exporter.flush()

        api.add_command("statsd_flush", cmd_statsd_flush)
        api.add_service(exporter.run)
        api.log.info("sending metrics to statsd at %s:%d every %ss",
                     exporter.address[0], exporter.address[1], exporter.settings["interval"])


plugin = Plugin()
