"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): it shows a
queue that a memcache client filled, and pausing, flushing and the other actions change
both the page and the server.  Screenshots go to test-artifacts/ (gitignored).

Chromium comes from the system (``scripts/ci-deps``).  Without it the tests are skipped on
a developer machine but FAIL under CI (``CI=true``), so they can never pass unseen.
"""

import os
import shutil
from pathlib import Path

import pytest

from http_helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("ERQPY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
TIMEOUT_MS = 15_000


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must run the browser test (run scripts/ci-deps first)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no chromium at {CHROMIUM}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    problems = []
    opened.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    opened.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    opened.on("dialog", lambda dialog: dialog.accept())  # the confirmations of flush, pause ...
    opened.problems = problems
    yield opened
    context.close()


def cell(page, queue: str, field: str, server: int = 0):
    return page.locator(f'#queues tr[data-server="{server}"][data-queue="{queue}"] td[data-field="{field}"]')


def wait_for_value(page, queue, field, expected, server=0):
    cell(page, queue, field, server).and_(page.locator(f'[data-value="{expected}"]')).wait_for()


def click_action(page, queue, action, server=0):
    page.locator(f'#queues tr[data-server="{server}"][data-queue="{queue}"] button[data-action="{action}"]').click()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_dashboard_shows_a_memcache_filled_queue_then_pause_and_flush_change_it(http_server, page):
    """Fill with pymemcache, open the page, peek, pause, flush, enqueue, resume; watch the numbers."""
    server = http_server({"sample_interval": 0.3, "refresh": 1})
    client = server.srv.client(default_noreply=False)
    for n in range(25):
        client.set("browserq", f'{{"n": {n}}}'.encode())
    client.set("otherq", b"x")

    page.goto(server.url("/"))
    wait_for_value(page, "browserq", "items", 25)
    wait_for_value(page, "otherq", "items", 1)
    assert "25" == cell(page, "browserq", "items").inner_text()
    assert "0.1.0" == page.locator('#servers .server[data-server="0"] dd[data-field="version"]').inner_text()
    # The burst of sets shows as a rise in the in-rate sparkline (y < 23 is above the floor).
    page.wait_for_function("""() => [...document.querySelectorAll(
        "#queues tr[data-queue='browserq'] svg.spark polyline.in")].some(line =>
        line.getAttribute("points").split(" ").some(point => parseFloat(point.split(",")[1]) < 23))""")
    before = screenshot(page, "dashboard-filled.png")

    click_action(page, "browserq", "peek")
    page.locator("#detail-items li").first.wait_for()
    assert '{"n": 0}' == page.locator("#detail-items li pre").first.inner_text()
    assert 10 == page.locator("#detail-items li").count()

    click_action(page, "browserq", "pause")
    wait_for_value(page, "browserq", "paused", 1)
    assert "paused" == cell(page, "browserq", "paused").inner_text()
    assert server.get("/control/browserq").json()["paused"] is True
    assert client.get("browserq") is None  # memcache consumers see an empty queue

    click_action(page, "browserq", "flush")
    wait_for_value(page, "browserq", "items", 0)
    assert 0 == server.depth("browserq")

    click_action(page, "browserq", "enqueue")
    wait_for_value(page, "browserq", "items", 1)
    click_action(page, "browserq", "resume")
    wait_for_value(page, "browserq", "paused", 0)
    assert server.get("/control/browserq").json()["paused"] is False
    assert b'"test": true' in client.get("browserq").replace(b'"test":true', b'"test": true')

    after = screenshot(page, "dashboard-after-actions.png")
    assert before.stat().st_size > 0 and after.stat().st_size > 0
    assert [] == page.problems


def test_dashboard_sorts_filters_and_pauses_its_refresh(http_server, page):
    """Column sort, the filter expression, and the pause-updates button."""
    server = http_server({"refresh": 1})
    client = server.srv.client(default_noreply=False)
    for name, count in (("alpha", 3), ("beta", 1), ("gamma", 2)):
        for _ in range(count):
            client.set(name, b"1")

    page.goto(server.url("/"))
    wait_for_value(page, "alpha", "items", 3)
    rows = page.locator("#queues tbody tr")

    page.locator('#queues th[data-sort="items"]').click()
    ascending = rows.evaluate_all("rows => rows.map(r => r.dataset.queue)")
    page.locator('#queues th[data-sort="items"]').click()
    descending = rows.evaluate_all("rows => rows.map(r => r.dataset.queue)")
    page.fill("#filter", "items>=2")
    filtered = rows.evaluate_all("rows => rows.map(r => r.dataset.queue)")
    page.fill("#filter", "queue!=^a")
    by_name = rows.evaluate_all("rows => rows.map(r => r.dataset.queue)")
    page.fill("#filter", "")

    page.click("#refresh-toggle")
    assert "Resume updates" == page.inner_text("#refresh-toggle")
    client.set("alpha", b"1")
    page.wait_for_timeout(2500)  # more than two refresh periods: a running refresh would show 4
    frozen = cell(page, "alpha", "items").get_attribute("data-value")
    page.click("#refresh-toggle")
    wait_for_value(page, "alpha", "items", 4)

    assert ["beta", "gamma", "alpha"] == ascending
    assert ["alpha", "gamma", "beta"] == descending
    assert ["alpha", "gamma"] == filtered
    assert ["gamma", "beta"] == by_name  # still sorted by items, descending
    assert "3" == frozen
    assert [] == page.problems


def test_dashboard_shows_several_servers_side_by_side(http_server, page):
    """With a server list, each server has a panel and its queues appear in the table."""
    second = http_server()
    second.srv.client(default_noreply=False).set("on-second", b"1")
    first = http_server({"servers": [{"url": second.base, "name": "second"}], "refresh": 1})
    first.srv.client(default_noreply=False).set("on-first", b"1")

    page.goto(first.url("/"))
    wait_for_value(page, "on-first", "items", 1, server=0)
    wait_for_value(page, "on-second", "items", 1, server=1)
    panels = page.locator("#servers .server h2").all_inner_texts()
    click_action(page, "on-second", "flush", server=1)
    wait_for_value(page, "on-second", "items", 0, server=1)
    screenshot(page, "dashboard-two-servers.png")

    assert ["this server", "second"] == panels
    assert 0 == second.depth("on-second")
    assert 1 == first.depth("on-first")
    assert [] == page.problems


def test_dashboard_reload_button_reloads_code(http_server, page):
    """The server panel's reload button bumps the handler generation shown."""
    server = http_server({"refresh": 1})

    page.goto(server.url("/"))
    generation = page.locator('#servers .server[data-server="0"] dd[data-field="handler generation"]')
    generation.wait_for()
    before = int(generation.inner_text())
    page.locator('#servers button[data-action="reload"]').click()

    assert wait_until(lambda: int(generation.inner_text()) == before + 1, timeout=10)
    assert before + 1 == server.get("/stats").json()["server"]["handler_generation"]
    assert [] == page.problems
