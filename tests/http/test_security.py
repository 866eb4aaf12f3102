"""Read-only mode, token and basic-auth protection of every changing action, the
cross-origin and Host checks, and the loopback default."""

import base64

import pytest
from erqpy_http import config as http_config

#: (method, path, json body) for every kind of changing action.
CHANGING = [
    ("POST", "/q/sec", {"a": 1}),
    ("PUT", "/q/sec", {"a": 1}),
    ("POST", "/q/sec/take", None),
    ("POST", "/q/sec/take?reserve=1", None),
    ("DELETE", "/q/sec", None),
    ("POST", "/q/sec/confirm/someid", None),
    ("POST", "/qb/sec/take", None),
    ("POST", "/qb/sec", {"jobs": [1]}),
    ("POST", "/qb/sec/abort", {"ids": ["x"]}),
    ("DELETE", "/queues/sec", None),
    ("POST", "/control/sec", {"status": "stop"}),
    ("POST", "/server/reload", None),
]
#: presque's consuming GETs: allowed (and then changing) only with a token or allow_get_consume.
GET_CONSUMING = [("GET", "/q/sec", None), ("GET", "/q/sec?reserve=1", None), ("GET", "/qb/sec", None)]
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

    anonymous = {(m, p): server.request(m, p, json=body) for m, p, body in CHANGING + GET_CONSUMING}
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
    header = server.get("/q/sec", headers={"X-Erqpy-Token": "s3cret"})  # presque's GET, with a token
    assert (201, 200) == (bearer.status_code, header.status_code)
    assert {"seed": 1} == header.json()


def test_basic_auth_protects_changing_actions(http_server):
    """username/password set: 401 with a Basic challenge; right credentials pass, wrong do not."""
    server = seeded(http_server({"username": "ops", "password": "pw"}))

    anonymous = server.post("/q/sec/take")
    wrong = server.post("/q/sec/take", auth=("ops", "bad"))
    malformed = server.post("/q/sec/take", headers={"Authorization": "Basic !!!"})
    right = server.post("/q/sec/take", auth=("ops", "pw"))

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


def test_opaque_origin_is_refused_on_every_state_change(http_server):
    """Origin: null (a sandboxed frame, a file:// page) cannot be shown to be this server:
    403 on enqueue, take, flush and reload; nothing changes."""
    server = seeded(http_server())
    null = {"Origin": "null"}

    replies = {
        "enqueue": server.post("/q/sec", json={"a": 1}, headers=null),
        "take": server.post("/q/sec/take", headers=null),
        "flush": server.delete("/q/sec", headers=null),
        "reload": server.post("/server/reload", headers=null),
        "delete": server.delete("/queues/sec", headers=null),
    }

    for action, reply in replies.items():
        assert 403 == reply.status_code, action
        assert "cross-origin request refused" in reply.json()["error"], action
    assert 1 == server.depth("sec")


def test_same_site_pages_on_another_port_cannot_take_jobs(http_server):
    """Sec-Fetch-Site: same-site (say http://localhost:3000) is another origin: refused;
    same-origin and none (the address bar) pass."""
    server = seeded(http_server())

    other_port = server.post("/q/sec/take", headers={"Sec-Fetch-Site": "same-site"})
    same_origin = server.post("/control/sec", json={"paused": False}, headers={"Sec-Fetch-Site": "same-origin"})
    typed = server.post("/control/sec", json={"paused": False}, headers={"Sec-Fetch-Site": "none"})

    assert (403, 200, 200) == (other_port.status_code, same_origin.status_code, typed.status_code)
    assert 1 == server.depth("sec")


def test_get_does_not_take_jobs_without_a_token(http_server):
    """No token and no allow_get_consume: a GET (which a link or an image can make a
    browser send, with no Origin) takes nothing; 405 names the POST route."""
    server = seeded(http_server())

    single = server.get("/q/sec")
    reserve = server.get("/q/sec?reserve=1")
    batch = server.get("/qb/sec")

    assert (405, 405, 405) == (single.status_code, reserve.status_code, batch.status_code)
    assert "POST /q/sec/take" in single.json()["error"]
    assert "POST /qb/sec/take" in batch.json()["error"]
    assert "POST" in single.headers["Allow"]
    assert 1 == server.depth("sec")
    taken = server.post("/q/sec/take")
    assert (200, {"seed": 1}) == (taken.status_code, taken.json())


def test_get_takes_jobs_with_allow_get_consume(http_server):
    """allow_get_consume = true keeps presque's GET /q and GET /qb."""
    server = seeded(http_server({"allow_get_consume": True}))
    server.enqueue("sec", {"second": 2})

    single = server.get("/q/sec")
    batch = server.get("/qb/sec")

    assert (200, {"seed": 1}) == (single.status_code, single.json())
    assert (200, [{"job": {"second": 2}}]) == (batch.status_code, batch.json())


def test_get_takes_jobs_with_basic_auth_only_when_allowed(http_server):
    """Basic credentials are sent by a browser on its own, so they do not turn GET
    consumption on; a bearer token does (tested above)."""
    server = seeded(http_server({"username": "ops", "password": "pw"}))

    reply = server.get("/q/sec", auth=("ops", "pw"))

    assert 405 == reply.status_code
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
    ({"servers": [{"url": "http://127.0.0.1:1", "token": "peer"}]}, r"servers\[0\] has a token but this server has no"),
    ({"max_body": 4096, "max_body_buffer": 2048}, "max_body_buffer must be at least"),
    ({"header_timeout": 0}, "http.header_timeout must be"),
    ({"allow_get_consume": "yes"}, "wrong type"),
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

    reply = server.post("/q/sec/take", headers={"Authorization": f"Basic {token}"})

    assert 401 == reply.status_code
