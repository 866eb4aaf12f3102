"""Configuration: files read from tmp_path and checked as a whole; every refusal is a
ConfigError naming ``file:line`` and the reason, a good file gives the settings it says
(queue tables inherit from ``default`` and a fanout master)."""

import pytest

from erqpy.errors import ConfigError
from erqpy.server.config import Settings, build_settings
from erqpy.server.plugin_tables import PluginTable, check_plugin_tables

pytestmark = pytest.mark.unit


def write(tmp_path, text):
    path = tmp_path / "erqpy.toml"
    path.write_text(text)
    return path


def refusal(tmp_path, text, plugins=()) -> ConfigError:
    """The ConfigError for ``text``: from reading the file, or from the table check
    that runs once the plugins are known."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        settings = build_settings(str(path))
        check_plugin_tables(settings, list(plugins))
    return caught.value


# (file text, line named, part of the reason)
BAD_FILES = {
    "server-value": ("[server]\nhost = \"127.0.0.1\"\nport = 70000\n", 3, "port must be 0 to 65535"),
    "server-unknown-key": ("[server]\nprot = 1\n", 2, "unknown setting 'prot' in [server]"),
    "server-wrong-type": ("[server]\nport = \"x\"\n", 2, "server.port has the wrong type (str)"),
    "server-bool-for-int": ("[server]\nmax_queues = true\n", 2, "server.max_queues has the wrong type (bool)"),
    "fsync-policy": ("[server]\nfsync = \"sometimes\"\n", 2, "fsync must be one of"),
    "log-level": ("\n[server]\nlog_level = \"loud\"\n", 3, "log_level must be one of"),
    "queue-value": ("[queues.q]\nmax_items = 0\n", 2, "[queues.q] max_items must be a positive integer, not 0"),
    "queue-unknown-key": ("[queues.q]\nmax_itmes = 3\n", 2, "unknown queue setting 'max_itmes' in [queues.q]"),
    "queue-not-a-table": ("[queues]\nq = 3\n", 2, "[queues.q] must be a table"),
    "queue-fsync": ("[queues.q]\nfsync = \"never-ever\"\n", 2, "fsync must be one of"),
    "top-level-key": ("port = 1\n", 1, "unknown top-level setting 'port'; settings go in a table"),
    "unknown-table": ("[queues.q]\nmax_items = 1\n\n[sever]\nport = 1\n", 4,
                      "unknown table [sever] (did you mean [server]?)"),
    "control-host": ("[control]\nport = 1\nhost = \"10.0.0.1\"\n", 3, "control.host"),
    "expire-to-cycle": ("[queues.a]\nexpire_to = \"b\"\n\n[queues.b]\nexpire_to = \"a\"\n", 5,
                        "expire_to makes a cycle (a -> b -> a)"),
    "toml-syntax": ("[queues.q]\nmax_items = 3\n[queues.r\n", 3, "Expected ']'"),
    "max-deliveries": ("[queues.q]\nmax_deliveries = -1\n", 2, "max_deliveries must be an integer >= 0"),
    "dead-letter-to-itself": ("[queues.q]\nmax_deliveries = 3\ndead_letter_to = \"q\"\n", 3,
                              "[queues.q] dead_letter_to names the queue itself"),
    "plugins-not-installed": ("[plugins]\nenabled = [\"htp\"]\n", 2, "'htp', which is not an installed plugin"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_refused_with_file_line_and_reason(tmp_path, case):
    text, line, reason = BAD_FILES[case]

    error = refusal(tmp_path, text, [PluginTable("http", "http")])

    assert f"{tmp_path / 'erqpy.toml'}:{line}" == error.where
    assert reason in error.reason, error.reason


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError) as caught:
        build_settings(str(tmp_path / "absent.toml"))
    assert str(tmp_path / "absent.toml") == caught.value.where
    assert "No such file" in caught.value.reason


def test_a_good_file_gives_its_settings_and_queue_tables_inherit(tmp_path):
    path = write(tmp_path, "[server]\nmax_queues = 7\n\n[queues.default]\nmax_items = 10\n\n"
                           "[queues.feed]\nmax_size = 2048\n\n[queues.\"feed+audit\"]\nmax_items = 3\n")

    settings = build_settings(str(path), max_connections=9, log_level=None)

    assert (7, 9, "info") == (settings.max_queues, settings.max_connections, settings.log_level)
    assert str(path) == settings.config_path
    assert (10, Settings().queue_config("x").max_size) == (
        settings.queue_config("other").max_items, settings.queue_config("other").max_size)
    assert (10, 2048) == (settings.queue_config("feed").max_items, settings.queue_config("feed").max_size)
    # A fanout child inherits from its master, then its own table.
    assert (3, 2048) == (settings.queue_config("feed+audit").max_items,
                         settings.queue_config("feed+audit").max_size)


def test_a_command_line_value_is_checked_like_the_file(tmp_path):
    path = write(tmp_path, "[server]\nport = 1\n")
    with pytest.raises(ConfigError, match="port must be 0 to 65535"):
        build_settings(str(path), port=-1)


def check_http(table):
    errors = []
    if "prot" in table:
        errors.append(("prot", "unknown setting 'prot' in [http]"))
    if table.get("port", 0) > 65535:
        errors.append("http.port must be 0 to 65535")
    return errors


@pytest.mark.parametrize("text, line, reason", [
    ("[http]\nport = 0\nprot = 1\n", 3, "unknown setting 'prot' in [http]"),  # (key, reason)
    ("[http]\nhost = \"127.0.0.1\"\nport = 70000\n", 3, "http.port must be 0 to 65535"),  # key found in text
])
def test_a_plugin_table_is_checked_by_its_plugin_and_names_the_line(tmp_path, text, line, reason):
    error = refusal(tmp_path, text, [PluginTable("http", "http", check_http)])
    assert f"{tmp_path / 'erqpy.toml'}:{line}" == error.where
    assert reason in error.reason


def test_a_plugin_table_passes_its_plugin_check(tmp_path):
    path = write(tmp_path, "[http]\nport = 8080\n\n[plugins.statsd]\nport = 8125\n")
    settings = build_settings(str(path))
    check_plugin_tables(settings, [PluginTable("http", "http", check_http), PluginTable("statsd")])
    assert {"port": 8080} == settings.sections["http"]


def test_a_check_that_fails_refuses_the_table_instead_of_passing_it(tmp_path):
    def broken(table):
        raise KeyError("oops")

    error = refusal(tmp_path, "[http]\nport = 1\n", [PluginTable("http", "http", broken)])
    assert "validate_config of plugin http failed: KeyError" in error.reason


def test_a_table_for_no_installed_plugin_is_refused_with_a_hint(tmp_path):
    error = refusal(tmp_path, "[queues.q]\nmax_items = 1\n[plugins.statsdd]\nport = 8125\n",
                    [PluginTable("statsd")])
    assert f"{tmp_path / 'erqpy.toml'}:3" == error.where
    assert "[plugins.statsdd] is for no installed plugin (did you mean [plugins.statsd]?)" in error.reason
