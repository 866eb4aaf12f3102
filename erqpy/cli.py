"""Command line: ``erqpy serve`` (the daemon) and ``erqctl`` (the control client).

This module parses options and calls into ``server`` and ``control``; it holds no logic
of its own.  Every ``serve`` option can also come from the environment (``ERQPY_PORT``,
``ERQPY_DATA_DIR``, ...), and precedence is command line > environment > ``--config``
file > built-in defaults.
"""

import json
import os
import sys

import click

from erqpy import __version__
from erqpy.errors import ConfigError, ServerHalt
from erqpy.storage.syncer import FSYNC_POLICIES


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="erqpy")
def main():
    """erqpy: a persistent queue server speaking the Kestrel memcache dialect."""


@main.command()
@click.option("--host", envvar="ERQPY_HOST", show_envvar=True, help="Address to listen on.  [default: 127.0.0.1]")
@click.option("--port", envvar="ERQPY_PORT", show_envvar=True, type=click.IntRange(0, 65535),
              help="Data port; 0 picks a free one.  [default: 22133]")
@click.option("--data-dir", envvar="ERQPY_DATA_DIR", show_envvar=True, type=click.Path(file_okay=False),
              help="Where journals live (created if missing).  [default: ./data]")
@click.option("--fsync", envvar="ERQPY_FSYNC", show_envvar=True, type=click.Choice(FSYNC_POLICIES),
              help="always: reply after fsync (group commit); interval: fsync every "
                   "100 ms; never: leave it to the OS.  [default: interval]")
@click.option("--max-connections", envvar="ERQPY_MAX_CONNECTIONS", show_envvar=True, type=click.IntRange(1),
              help="Concurrent client connections.  [default: 4096]")
@click.option("--config", "config_path", envvar="ERQPY_CONFIG", show_envvar=True,
              type=click.Path(exists=True, dir_okay=False), help="A TOML configuration file.")
@click.option("--log-level", envvar="ERQPY_LOG_LEVEL", show_envvar=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="[default: info]")
@click.option("--handlers", "handlers_path", envvar="ERQPY_HANDLERS", show_envvar=True, type=click.Path(dir_okay=False),
              help="Handler source file to load and reload (default: erqpy/server/handlers.py).")
@click.option("--control-socket", envvar="ERQPY_CONTROL_SOCKET", show_envvar=True,
              help="Control socket path.  [default: DATA_DIR/erqpy.sock]")
def serve(config_path, **options):
    """Run the server in the foreground until SIGTERM or SIGINT."""
    from gevent import monkey

    # Patch before the server and any plugin import socket or threading.
    monkey.patch_all()
    from erqpy.server import config
    from erqpy.server import lifecycle

    overrides = {k: v for k, v in options.items() if v is not None}
    if "log_level" in overrides:
        overrides["log_level"] = overrides["log_level"].lower()
    try:
        settings = config.build_settings(config_path, **overrides)
    except ConfigError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from None
    try:
        status = lifecycle.run(settings, overrides)
    except ConfigError as exc:  # a plugin's table, checked once the plugins are imported
        raise click.ClickException(f"bad configuration: {exc}") from None
    except ServerHalt as exc:
        click.echo(f"erqpy: {exc}", err=True)
        sys.exit(exc.exit_status)
    except OSError as exc:
        click.echo(f"erqpy: cannot start: {exc}", err=True)
        sys.exit(1)
    sys.exit(status)


# -- erqctl -------------------------------------------------------------------------------


class Target:
    def __init__(self, socket_path, host, port, token, as_json):
        self.socket_path = socket_path
        self.host = host
        self.port = port
        self.token = token
        self.as_json = as_json

    def call(self, command, args=None, timeout=60.0):
        from erqpy.server import control_client

        try:
            reply = control_client.call(command, args, socket_path=self.socket_path, host=self.host,
                                        port=self.port, token=self.token, timeout=timeout)
        except control_client.ControlError as exc:
            raise click.ClickException(str(exc)) from None
        return reply

    def show(self, reply, human):
        """Print the reply; exit 1 with the server's error when it failed."""
        if self.as_json:
            click.echo(json.dumps(reply, indent=2, sort_keys=True))
        elif reply.get("ok"):
            human(reply)
        if not reply.get("ok"):
            if not self.as_json:
                click.echo(f"error: {reply.get('error', 'unknown error')}", err=True)
            sys.exit(1)


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="erqctl")
@click.option("--data-dir", envvar="ERQPY_DATA_DIR", type=click.Path(file_okay=False),
              help="The server's data directory; its control socket is DATA_DIR/erqpy.sock.")
@click.option("--socket", "socket_path", envvar="ERQPY_CONTROL_SOCKET", help="Control socket path.")
@click.option("--host", envvar="ERQPY_CONTROL_HOST", help="TCP control host (loopback).")
@click.option("--port", envvar="ERQPY_CONTROL_PORT", type=int, help="TCP control port.")
@click.option("--token", envvar="ERQPY_CONTROL_TOKEN", default="", help="Token for TCP control.")
@json_option
@click.pass_context
def ctl(ctx, data_dir, socket_path, host, port, token, as_json):
    """Control a running erqpy server over its control channel."""
    if not socket_path and not host:
        socket_path = os.path.join(data_dir or "./data", "erqpy.sock")
    ctx.obj = Target(socket_path, host, port, token, as_json)


def _target(ctx, as_json):
    target = ctx.find_object(Target)
    target.as_json = target.as_json or as_json
    return target


def queue_command(function):
    """An erqctl command on one QUEUE argument, with ``--json``."""
    return ctl.command()(click.argument("queue")(json_option(click.pass_context(function))))


def _run(ctx, as_json, command, args=None, say=lambda reply: "ok", timeout=60.0):
    """Send one control command and show its reply: as JSON, or the line ``say(reply)``."""
    target = _target(ctx, as_json)
    reply = target.call(command, args, timeout=timeout)
    target.show(reply, lambda r: click.echo(say(r)))


@ctl.command()
@click.option("--config", "config_flag", is_flag=True, hidden=True,
              help="Accepted for old scripts: reload always reads the configuration too.")
@json_option
@click.pass_context
def reload(ctx, config_flag, as_json):
    """Reload the configuration file and the handler and plugin code, all or nothing.

    What SIGHUP does too.  A bad file or broken code leaves everything running as it
    was.  Blocks until done; exits non-zero with the error when the reload was refused,
    so it can serve as systemd's ExecReload.
    """
    target = _target(ctx, as_json)
    reply = target.call("reload")

    def human(r):
        click.echo(f"reloaded: generation {r['generation']} sha256 {r['sha256'][:12]}; queues changed: "
                   + (", ".join(r.get("changed_queues", [])) or "none"))
        if r.get("needs_restart"):
            click.echo("needs a restart to apply: " + ", ".join(r["needs_restart"]))

    target.show(reply, human)


@ctl.command()
@click.argument("switch", type=click.Choice(["on", "off"]))
@json_option
@click.pass_context
def debug(ctx, switch, as_json):
    """Turn debug logging and the per-command protocol trace on or off."""
    _run(ctx, as_json, "debug", {"on": switch == "on"}, say=lambda r: f"debug {switch} (log level {r['level']})")


@ctl.command()
@json_option
@click.pass_context
def status(ctx, as_json):
    """Pid, uptime, version, connections, handler generation, last errors."""
    target = _target(ctx, as_json)
    reply = target.call("status")

    def human(r):
        for key in ("pid", "version", "status", "uptime", "listen", "control", "data_dir",
                    "connections", "queues", "debug", "fsync", "handler_generation",
                    "handler_sha256", "reloads", "failed_reloads", "last_reload_error",
                    "config_path", "last_config_error"):
            click.echo(f"{key:20} {r.get(key, '')}")
        for label, address in r.get("listeners", {}).items():
            click.echo(f"{'listen ' + label:20} {address}")
        for plugin in r.get("plugins", []):
            click.echo(f"{'plugin':20} {plugin['name']} ({plugin['dist']})")
        for name, error in r.get("plugin_errors", {}).items():
            click.echo(f"{'plugin error':20} {name}: {error}")

    target.show(reply, human)


@ctl.command()
@click.argument("queues", nargs=-1)
@json_option
@click.pass_context
def stats(ctx, queues, as_json):
    """Server and per-queue statistics."""
    target = _target(ctx, as_json)
    reply = target.call("stats", {"queues": list(queues)})

    def human(r):
        for key, value in r["server"].items():
            click.echo(f"{key:20} {value}")
        for name, fields in r["queues"].items():
            click.echo(f"\nqueue {name}")
            for key, value in fields.items():
                click.echo(f"  {key:22} {value}")

    target.show(reply, human)


@ctl.command()
@json_option
@click.pass_context
def queues(ctx, as_json):
    """List queues with their item counts."""
    target = _target(ctx, as_json)
    reply = target.call("queues")

    def human(r):
        for name, count in r["queues"].items():
            click.echo(f"{name}\t{count}")

    target.show(reply, human)


@ctl.command()
@json_option
@click.pass_context
def nodes(ctx, as_json):
    """Engine mode: the live erqpy nodes sharing the queues, their leases and open reads."""
    target = _target(ctx, as_json)
    reply = target.call("nodes")

    def human(r):
        if not r["engine"]:
            click.echo('not in engine mode: this server keeps its queues in its own journal '
                       '([storage] backend = "journal"); there are no nodes to list')
            return
        click.echo(f"{'node':28} {'host':16} {'pid':>7} {'lease_ms_left':>13} {'open_reads':>10}")
        for node in r["nodes"]:
            mark = " (this node)" if node.get("self") else ""
            click.echo(f"{node['id']:28} {node.get('host', ''):16} {node.get('pid', ''):>7} "
                       f"{node['lease_ms_left']:>13} {node['open_reads']:>10}{mark}")

    target.show(reply, human)


@queue_command
def flush(ctx, queue, as_json):
    """Remove every waiting item of QUEUE (open reads stay)."""
    _run(ctx, as_json, "flush", {"queue": queue}, say=lambda r: f"flushed {r['flushed']} items from {queue}")


@ctl.command()
@click.argument("queue")
@click.option("--yes", is_flag=True, help="Confirm: the queue and its journal are removed.")
@json_option
@click.pass_context
def delete(ctx, queue, yes, as_json):
    """Delete QUEUE, its items and its journal."""
    if not yes:
        raise click.UsageError("deleting a queue loses its items; pass --yes to confirm")
    _run(ctx, as_json, "delete", {"queue": queue}, say=lambda r: f"deleted {queue}")


@queue_command
def compact(ctx, queue, as_json):
    """Rewrite QUEUE's journal now, keeping live data only."""
    _run(ctx, as_json, "compact", {"queue": queue}, say=lambda r: f"{queue}: journal {r['before']} -> {r['after']} bytes")


@queue_command
def pause(ctx, queue, as_json):
    """Stop handing out QUEUE's items (writes still accepted); persisted."""
    _run(ctx, as_json, "pause", {"queue": queue, "paused": True}, say=lambda r: f"{queue} paused")


@queue_command
def resume(ctx, queue, as_json):
    """Hand out QUEUE's items again."""
    _run(ctx, as_json, "pause", {"queue": queue, "paused": False}, say=lambda r: f"{queue} resumed")


@ctl.command("set-status")
@click.argument("value", type=click.Choice(["up", "readonly", "quiescent"]))
@json_option
@click.pass_context
def set_status(ctx, value, as_json):
    """Set the server status (persisted across restarts)."""
    _run(ctx, as_json, "set-status", {"status": value}, say=lambda r: f"status {r['status']}")


@ctl.command()
@json_option
@click.pass_context
def shutdown(ctx, as_json):
    """Stop the server gracefully."""
    _run(ctx, as_json, "shutdown", say=lambda r: "stopping")


@ctl.command()
@json_option
@click.pass_context
def ping(ctx, as_json):
    """Check that the server answers on its control channel."""
    _run(ctx, as_json, "ping", say=lambda r: "pong", timeout=5.0)


# -- erqpy consume --------------------------------------------------------------------------


def _weights(text):
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of whole numbers",
                                 param_hint="--weights") from None


@main.command()
@click.argument("queues", metavar="QUEUES")
@click.option("--handler", "handler_spec", required=True, envvar="ERQPY_HANDLER",
              help="module:function, or module:WorkerClass (a subclass of erqpy.consumer.Worker).")
@click.option("--servers", multiple=True, envvar="ERQPY_SERVERS",
              help="host:port of a server; repeat or comma-separate.  [default: 127.0.0.1:22133]")
@click.option("--weights", help="One whole number per queue (6,3,1): a weighted random order per "
                                "read, as Sidekiq.  [default: strict order, first queue first]")
@click.option("--max-jobs", type=click.IntRange(1),
              help="Exit 0 after this many jobs (with --processes: each child, then replaced).")
@click.option("--concurrency", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Threads, each with its own connections.")
@click.option("--processes", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Worker processes (prefork; a crashed one is replaced), for CPU-bound handlers.")
@click.option("--namespace", help="Consume NAMESPACE:QUEUE.")
@click.option("--wait", type=click.FloatRange(0.1, 3600), default=2.0, show_default=True,
              help="Seconds one read blocks for; an idle worker notices SIGTERM within it.")
@click.option("--retries", type=click.IntRange(0), default=3, show_default=True,
              help="Extra attempts after a job first fails.")
@click.option("--max-deliveries", type=click.IntRange(0), default=None,
              help="Deliveries of one attempt whose worker died (killed, OOM, crash) before the "
                   "server moves the job to the queue's dead-letter queue; 0: no bound.  "
                   "[default: retries + 1]")
@click.option("--backoff", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Seconds before the first retry; doubles for each next one.")
@click.option("--errors-queue", help="Where failed jobs go.  [default: QUEUE_errors of the job's queue]")
@click.option("--retry-after", type=click.FloatRange(0.001, 3600), default=0.1, show_default=True,
              help="Seconds before a server that failed is tried again; doubles while it keeps failing.")
@click.option("--retry-max", type=click.FloatRange(0.001, 3600), default=5.0, show_default=True,
              help="The longest wait before trying a failed server again.")
@click.option("--debug", is_flag=True, help="Log every action (reserve, handle, confirm, retry).")
def consume(queues, handler_spec, servers, namespace, debug, weights, processes, **options):
    """Run HANDLER for every job on QUEUES, with reliable reads; made for supervisord.

    QUEUES is one queue or several, comma-separated (high,default,low): each read takes
    the first job of the first of them that has one, in that order or, with --weights,
    in a weighted random order; one blocking read waits on all of them.

    SIGTERM finishes the job in hand and exits 0; so does --max-jobs once reached.
    """
    from erqpy.client import consumer, prefork, producer
    from erqpy.client.queue_order import QueueOrder
    from erqpy.client.servers import parse_servers

    consumer.configure_logging(debug)
    try:
        factory = consumer.load_handler(handler_spec)
        names = [producer.namespaced(namespace, name.strip()) for name in queues.split(",")]
        order_weights = _weights(weights)
        QueueOrder(names, order_weights)  # refuses a bad list now, not in each child
        servers = [f"{h}:{p}" for h, p in parse_servers(list(servers) or ["127.0.0.1:22133"])]
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise click.ClickException(str(exc)) from None
    if options["retry_after"] > options["retry_max"]:
        raise click.BadParameter("must not exceed --retry-max", param_hint="--retry-after")

    def run_consumer():
        return consumer.Consumer(names, factory, servers=servers, weights=order_weights, **options).run()

    if processes == 1:
        sys.exit(run_consumer())
    sys.exit(prefork.Prefork(processes, run_consumer).run())
