"""/ws in a real headless Chromium (Debian's, driven by Playwright, as the dashboard test):
a page of the server's own origin opens it and receives a stats push; a page of another
origin opening it is refused by the server's Origin check (the browser's real handshake,
with the Origin it sets itself).

Without chromium or playwright these are skipped on a developer machine and FAIL under
CI, as the dashboard tests (the ``browser`` fixture is theirs).
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from http_helpers import wait_until
from test_dashboard_browser import browser  # noqa: F401  (the fixture)

pytestmark = pytest.mark.protocol
TIMEOUT_MS = 15_000

OPEN_AND_WAIT = """url => new Promise(resolve => {
    const socket = new WebSocket(url);
    socket.onmessage = event => { resolve({message: JSON.parse(event.data)}); socket.close(); };
    socket.onclose = event => resolve({closed: event.code});
})"""


@pytest.fixture
def context(browser):  # noqa: F811
    opened = browser.new_context(viewport={"width": 1400, "height": 900})
    yield opened
    opened.close()


def test_a_page_of_the_dashboards_origin_receives_a_stats_push(http_server, context):
    server = http_server({"ws_push_interval": 0.2})
    server.enqueue("browserws", {"n": 1})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.goto(server.url("/"))  # the dashboard: its CSP (connect-src 'self') allows the socket
    url = server.base.replace("http://", "ws://") + "/ws"
    result = page.evaluate(OPEN_AND_WAIT, url)
    assert "message" in result, result
    assert "stats" == result["message"]["type"]
    assert 1 == result["message"]["body"]["queues"]["browserws"]["items"]
    assert [] == problems


@pytest.fixture
def foreign_site():
    """A page on another origin (another port of 127.0.0.1: a private address like the
    server's, so Chromium's private-network rules do not stop the page first)."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><title>another site</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    site = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{site.server_address[1]}"
    site.shutdown()
    site.server_close()
    thread.join(timeout=5)


def test_a_page_of_another_origin_is_refused(http_server, context, foreign_site):
    server = http_server({"ws_push_interval": 0.2, "access_log": True})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(foreign_site + "/page")
    for path in ("/ws", "/ws/q/browserws"):
        url = server.base.replace("http://", "ws://") + path
        result = page.evaluate(OPEN_AND_WAIT, url)
        assert {"closed": 1006} == result  # the handshake failed: no socket
        line = f"GET {path} -> 403"  # refused by the server, not by the browser
        wait_until(lambda line=line: line in server.srv.log(), what=line)
