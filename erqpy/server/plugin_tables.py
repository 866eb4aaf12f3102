"""Checking the tables of a configuration file that plugins read, once the installed
plugins are known: a table no core part or plugin reads is refused, and each plugin's
``validate_config`` hook checks its own, with the error naming ``file:line``."""

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass

from erqpy.errors import ConfigError
from erqpy.server.config import CORE_TABLES, Settings
from erqpy.server.config_lines import did_you_mean, header_text, locate


@dataclass(frozen=True)
class PluginTable:
    """What the configuration needs to know of one installed plugin.

    ``table`` is the table the plugin reads ("http" for a top-level ``[http]``, else
    ``plugins.<name>``); "" when the plugin was not imported (disabled, or broken), in
    which case both ``[<name>]`` and ``[plugins.<name>]`` are left to it unchecked.
    ``validate`` is its ``validate_config(table) -> list of errors`` hook, or None.
    """

    name: str
    table: str = ""
    validate: Callable[[dict], list | None] | None = None


def _error_key(reason: str, table: dict) -> str:
    """The key of ``table`` that an error text names first, to point at its line."""
    found = []
    for key in table:
        match = re.search(rf"(?<![\w]){re.escape(key)}(?![\w])", reason)
        if match:
            found.append((match.start(), key))
    return min(found)[1] if found else ""


def check_plugin_tables(settings: Settings, plugins: list[PluginTable]) -> None:
    """Refuse tables no core part or installed plugin reads, ``[plugins]`` names that are
    not installed, and plugin tables their plugin's ``validate_config`` rejects."""
    names = {p.name for p in plugins}
    owned = {}  # top-level table -> plugin
    for plugin in plugins:
        if not plugin.table:
            owned.setdefault(plugin.name, plugin)
        elif not plugin.table.startswith("plugins."):
            owned[plugin.table] = plugin
    for table in settings.sections:
        if table not in owned:
            hint = did_you_mean(settings.config_text, table, [*CORE_TABLES, *owned])
            raise ConfigError(f"unknown table [{header_text(settings.config_text, table)}]{hint}",
                              locate(settings, table=table))
    conf = settings.plugins or {}
    for key, value in conf.items():
        if key in ("enabled", "disabled"):
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                raise ConfigError(f"plugins.{key} must be a list of names", locate(settings, key, "plugins"))
            for name in value:
                if name not in names:
                    close = difflib.get_close_matches(name, list(names), n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else f"; installed: {', '.join(sorted(names)) or 'none'}"
                    raise ConfigError(f"plugins.{key} names {name!r}, which is not an installed plugin{hint}",
                                      locate(settings, key, "plugins"))
        elif isinstance(value, dict):
            if key not in names:
                close = difflib.get_close_matches(key, list(names), n=1)
                hint = f" (did you mean [plugins.{close[0]}]?)" if close else f"; installed: {', '.join(sorted(names)) or 'none'}"
                raise ConfigError(f"[plugins.{key}] is for no installed plugin{hint}",
                                  locate(settings, table=f"plugins.{key}"))
        else:
            raise ConfigError(f"unknown setting {key!r} in [plugins]; known: enabled, disabled, "
                              "and a [plugins.<name>] table per plugin", locate(settings, key, "plugins"))
    for plugin in plugins:
        if plugin.validate is None:
            continue
        table = plugin.table or f"plugins.{plugin.name}"
        if table.startswith("plugins."):
            value = conf.get(table.split(".", 1)[1])
        else:
            value = settings.sections.get(table)
        if not isinstance(value, dict):
            continue
        try:
            errors = list(plugin.validate(dict(value)) or [])
        except Exception as exc:  # a bug in the hook must not pass a table unchecked
            errors = [f"validate_config of plugin {plugin.name} failed: {type(exc).__name__}: {exc}"]
        if not errors:
            continue
        error = errors[0]
        key, reason = error if isinstance(error, tuple) else (_error_key(str(error), value), str(error))
        if table not in reason and f"[{table}]" not in reason:
            reason = f"[{table}] {reason}"
        raise ConfigError(reason, locate(settings, key, table))
