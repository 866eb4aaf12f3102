"""erqpy-http: queues over HTTP/JSON, Prometheus metrics and a web dashboard.

Turned on by an ``[http]`` table in the erqpy configuration file (``host``, ``port``,
default 127.0.0.1:22180; see ``config.py`` for every key).  Without that table the plugin
is installed but stays off.  Served by ``gevent.pywsgi`` in the erqpy process, on its own
port.

Reloadable like every plugin: ``erqctl reload`` executes this package afresh, submodules
included, from their source (the plugin manager does that for the whole package); code
still running (a request in flight) keeps the modules it started with.  Everything
that must outlive a reload is in ``api.data`` (reservations, rate history, the listener)
or in the core (the paused flags, persisted by ``QueueCollection.set_paused``).
"""

import types

from erqpy_http import config as _config
from erqpy_http import history as _history
from erqpy_http import service as _service
from erqpy_http.app import Context, make_app

__version__ = "0.1.0"


def validate_config(table: dict) -> list:
    """The core's check of ``[http]`` at start and before a reload swaps anything: a bad
    table refuses the whole file, with its line, instead of starting without HTTP."""
    try:
        _config.parse(dict(table))
    except ValueError as exc:
        return [str(exc)]
    return []


def register(api) -> None:
    # api.settings, not api.state.settings: at a reload, the file being loaded.
    sections = api.settings.sections
    if "http" not in sections:
        api.log.info("no [http] table in the configuration: the HTTP API stays off")
        return
    settings = _config.parse(dict(sections["http"] or {}))
    application = make_app(Context(api, settings))
    api.expect_listener("http")  # the server's start-up line then names the HTTP port
    api.add_service(_service.serve, api, settings, application)
    api.add_service(_service.sweep, api)
    api.add_service(_service.sample, api, settings)
    api.add_service(_history.record, api)


#: The entry point (``erqpy_http:plugin``) is this object: anything with ``register``.
plugin = types.SimpleNamespace(register=register, name="http", config_table="http",
                               validate_config=validate_config)
