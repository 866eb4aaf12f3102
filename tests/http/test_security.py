"""Read-only mode, token and basic-auth protection of every changing action, the
cross-origin and Host checks, and the loopback default."""

import base64

import pytest
from erqpy_http import config as http_config

#: (method, path, json body) for every kind of changing action.
CHANGING = [
    ("POST", "/q/sec", {"a": 1}),
    ("PUT", "/q/sec", {"a": 1}),
    ("GET", "/q/sec", None),
    ("GET", "/q/sec?reserve=1", None),
    ("DELETE", "/q/sec", None),
    ("POST", "/q/sec/confirm/someid", None),
    ("GET", "/qb/sec", None),
    ("POST", "/qb/sec", {"jobs": [1]}),
    ("POST", "/qb/sec/abort", {"ids": ["x"]}),
    ("DELETE", "/queues/sec", None),
    ("POST", "/control/sec", {"status": "stop"}),
    ("POST", "/server/reload", None),
]
READING = ["/", "/stats", "/status/sec", "/j/sec", "/queues", "/control/sec", "/metrics", "/openapi.json",
           "/static/dashboard.js", "/peers"]


def seeded(server):
    """A queue 'sec' holding one item, put there through memcache (no HTTP auth needed)."""
    assert server.srv.client(default_noreply=False).set("sec", b'{"seed": 1}') is True
    return server


def test_read_only_mode_refuses_every_changing_action(http_server):
    """read_only = true: 403 on every change (fetching included); reads still work."""
    server = seeded(http_server({"read_only": True}))

    refused = {(m, p): server.request(m, p, json=body) for m, p, body in CHANGING}

    for key, reply in refused.items():
        assert (403, {"error": "read-only mode: this action is disabled"}) == (reply.status_code, reply.json()), key
    for path in READING:
        assert 200 == server.get(path).status_code, path
    assert 1 == server.depth("sec")


def test_token_protects_every_changing_action(http_server):
    """token set: 401 with a Bearer challenge without it; the same requests work with it."""
    server = seeded(http_server({"token": "s3cret"}))

    anonymous = {(m, p): server.request(m, p, json=body) for m, p, body in CHANGING}
    wrong = server.post("/q/sec", json=1, headers={"Authorization": "Bearer nope"})

    for key, reply in anonymous.items():
        assert 401 == reply.status_code, key
        assert 'Bearer realm="erqpy"' == reply.headers["WWW-Authenticate"]
        assert "authentication required" in reply.json()["error"]
    assert 401 == wrong.status_code
    for path in READING:
        assert 200 == server.get(path).status_code, path
    assert 1 == server.depth("sec")
    bearer = server.post("/q/sec", json={"ok": 1}, headers={"Authorization": "Bearer s3cret"})
    header = server.get("/q/sec", headers={"X-Erqpy-Token": "s3cret"})
    assert (201, 200) == (bearer.status_code, header.status_code)
    assert {"seed": 1} == header.json()


def test_basic_auth_protects_changing_actions(http_server):
    """username/password set: 401 with a Basic challenge; right credentials pass, wrong do not."""
    server = seeded(http_server({"username": "ops", "password": "pw"}))

    anonymous = server.get("/q/sec")
    wrong = server.get("/q/sec", auth=("ops", "bad"))
    malformed = server.get("/q/sec", headers={"Authorization": "Basic !!!"})
    right = server.get("/q/sec", auth=("ops", "pw"))

    assert (401, 'Basic realm="erqpy"') == (anonymous.status_code, anonymous.headers["WWW-Authenticate"])
    assert 401 == wrong.status_code
    assert 400 == malformed.status_code
    assert (200, {"seed": 1}) == (right.status_code, right.json())


def test_cross_origin_changes_are_refused(http_server):
    """A browser request from another site (Origin or Sec-Fetch-Site) cannot change anything."""
    server = seeded(http_server())

    foreign = server.post("/control/sec", json={"paused": True}, headers={"Origin": "http://evil.example"})
    fetch_meta = server.delete("/q/sec", headers={"Sec-Fetch-Site": "cross-site"})
    same = server.post("/control/sec", json={"paused": False}, headers={"Origin": server.base})

    assert (403, {"error": "cross-origin request refused"}) == (foreign.status_code, foreign.json())
    assert 403 == fetch_meta.status_code
    assert 200 == same.status_code
    assert 1 == server.depth("sec")


def test_host_header_must_be_a_loopback_name_when_bound_to_loopback(http_server):
    """A DNS-rebinding page (Host: evil.example) is refused; localhost names pass."""
    server = http_server()
    port = server.base.rsplit(":", 1)[1]

    evil = server.get("/stats", headers={"Host": f"evil.example:{port}"})
    localhost = server.get("/stats", headers={"Host": f"localhost:{port}"})

    assert 403 == evil.status_code
    assert "not allowed" in evil.json()["error"]
    assert 200 == localhost.status_code


def test_allowed_hosts_extends_the_accepted_names(http_server):
    """allowed_hosts adds names (a reverse proxy's)."""
    server = http_server({"allowed_hosts": ["queues.internal"]})

    reply = server.get("/stats", headers={"Host": "queues.internal"})

    assert 200 == reply.status_code


def test_token_reaches_the_dashboard_as_a_token_box(http_server):
    """With a token the page offers a token field; read-only hides the write controls."""
    with_token = http_server({"token": "t"}).get("/").text
    read_only = http_server({"read_only": True}).get("/").text

    assert 'id="token"' in with_token
    assert "read-only" in read_only


def test_default_bind_is_loopback_port_22180():
    """No host or port in [http]: 127.0.0.1:22180."""
    settings = http_config.parse({})

    assert ("127.0.0.1", 22180) == (settings.host, settings.port)


@pytest.mark.parametrize("table, message", [
    ({"host": "0.0.0.0"}, "not a loopback address"),
    ({"port": 70000}, "http.port must be"),
    ({"username": "u"}, "go together"),
    ({"servers": ["ftp://x:1"]}, "http://host:port"),
    ({"reserve_timeout": "soon"}, "wrong type"),
    ({"read_only": 1}, "wrong type"),
])
def test_bad_http_tables_are_refused_with_a_clear_reason(table, message):
    """Each mistake is named."""
    with pytest.raises(ValueError, match=message):
        http_config.parse(table)


def test_public_bind_is_allowed_with_a_token():
    """A token makes a non-loopback bind acceptable; then any Host is accepted."""
    settings = http_config.parse({"host": "0.0.0.0", "token": "t"})

    assert frozenset() == http_config.allowed_host_names(settings)


def test_basic_credentials_are_compared_exactly(http_server):
    """A password that is a prefix of the right one fails."""
    server = seeded(http_server({"username": "ops", "password": "longpassword"}))
    token = base64.b64encode(b"ops:long").decode()

    reply = server.get("/q/sec", headers={"Authorization": f"Basic {token}"})

    assert 401 == reply.status_code
