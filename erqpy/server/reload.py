"""Reload orchestration: the configuration file, the handler code and the plugins,
each prepared and checked before anything is swapped (all or nothing).

The long-lived state it changes (settings, counters, the last error) lives in
``ServerState``; this module holds only the procedure.
"""

import dataclasses
import logging

from erqpy.server import fresh
from erqpy.server.storage_config import uses_journals

log = logging.getLogger("erqpy")

#: Settings a running server cannot change; a config reload reports them as needing a
#: restart instead of pretending to apply them.
RESTART_SETTINGS = (
    "host", "port", "data_dir", "max_connections", "control_socket", "control_host",
    "control_port", "handlers_path", "file_mode", "dir_mode", "max_open_files", "storage",
)


def _compile_off_the_hub(state) -> None:
    """Compile the changed handler and plugin files in a child process first, so that
    ``prepare`` finds their code compiled and holds the hub only to execute it."""
    files = state.registry.source_files() + (state.plugins.source_files() if state.plugins else [])
    fresh.compile_elsewhere(files)


def reload_code(state) -> dict:
    """Reload handlers and plugins together, all or nothing, with the running
    configuration.  Never raises.

    Both are prepared (compiled, imported into fresh modules, checked) before either
    is swapped in, so a failure anywhere leaves the old handlers and plugins serving.
    """
    registry = state.registry
    assert registry is not None  # set by the server at start
    _compile_off_the_hub(state)
    try:
        prepared = registry.prepare()
        staged, restores = state.plugins.prepare() if state.plugins else ({}, [])
    except Exception as exc:
        return registry.refused(exc)
    result = registry.commit(*prepared)
    if state.plugins is not None:
        state.plugins.commit(staged)
        result["plugins"] = sorted(staged)
    return result


def _read_config(state):
    """The file's settings (with the command line and environment over them) and the
    list of changes that need a restart.  Raises ``ConfigError``; changes nothing."""
    from erqpy.server.config import build_settings

    new = build_settings(state.settings.config_path or None, **state.overrides)
    needs_restart = [k for k in RESTART_SETTINGS if getattr(new, k) != getattr(state.settings, k)]
    # A live queue keeps its journal (or its lack of one) until the next start; in
    # engine mode no queue has files, and keep_journal does not apply.
    if uses_journals(state.settings):
        needs_restart += [
            f"queues.{name}.keep_journal" for name, queue in state.collection.queues.items()
            if new.queue_config(name).keep_journal != (queue.store is not None)
        ]
    # Those keep their running values, so the next reload still reports them and
    # stop() still removes the control socket this server actually bound.
    new = dataclasses.replace(new, **{k: getattr(state.settings, k) for k in RESTART_SETTINGS})
    return new, needs_restart


def _config_refused(state, exc) -> None:
    state.last_config_error = str(exc)
    log.error("configuration reload refused, the running configuration stays: %s", exc)


def _apply_config(state, new, needs_restart) -> dict:
    changed_queues = state.collection.apply_settings(new)
    state.syncer.interval = new.fsync_interval_ms / 1000.0
    if new.log_level != state.base_log_level:
        state.base_log_level = new.log_level
        if not state.debug:
            logging.getLogger("erqpy").setLevel(getattr(logging, new.log_level.upper()))
    state.settings = new
    limit = new.largest_item_size
    for conn in state.connections:  # open connections take the new item limit too
        conn.parser.max_item_size = limit
    state.config_reloads += 1
    state.last_config_error = ""
    log.info("configuration reloaded; queues changed: %s", ", ".join(changed_queues) or "none")
    return {"ok": True, "changed_queues": changed_queues, "needs_restart": needs_restart}


def reload_config(state) -> dict:
    """Re-read the configuration file and apply it to live queues, code unchanged
    (the data port's Kestrel ``reload``).  Plugin tables are checked against the
    plugins' current code, which keeps serving with the settings it was loaded with.

    Raises ``ConfigError`` (the running configuration stays) when the file is bad.
    """
    try:
        new, needs_restart = _read_config(state)
        if state.plugins is not None:
            resolved, _failures = state.plugins.resolve(new)
            state.plugins.rollback([restore for _ep, _target, restore in resolved])
    except Exception as exc:
        _config_refused(state, exc)
        raise
    return _apply_config(state, new, needs_restart)


def reload_all(state) -> dict:
    """``erqctl reload``, SIGHUP and so systemd's ExecReload: the configuration file,
    the handler code and the plugins (loaded with the new file), all or nothing.
    Never raises.

    Everything is read, compiled and checked first; only then are the settings
    applied and the code swapped.  A bad file or broken code leaves the running
    configuration and code in force, and the reply says which was refused.
    """
    from erqpy.errors import ConfigError

    registry = state.registry
    assert registry is not None  # set by the server at start
    _compile_off_the_hub(state)
    try:
        new, needs_restart = _read_config(state)
        prepared = registry.prepare()
        staged, _restores = state.plugins.prepare(new) if state.plugins else ({}, [])
    except ConfigError as exc:
        _config_refused(state, exc)
        return {"ok": False, "error": f"bad configuration: {exc}", "generation": registry.generation}
    except Exception as exc:
        return registry.refused(exc)
    config_result = _apply_config(state, new, needs_restart)
    result = registry.commit(*prepared)
    if state.plugins is not None:
        state.plugins.commit(staged)
        result["plugins"] = sorted(staged)
    result.update(changed_queues=config_result["changed_queues"], needs_restart=needs_restart)
    return result
