"""What the dashboard's browser tests share: Debian's chromium under Playwright, a page that
records script errors and the confirmations it was asked, screenshots and the overflow check.

Chromium comes from the system (``scripts/ci-deps``).  Without it the tests are skipped on
a developer machine but FAIL under CI (``CI=true``), so they can never pass unseen.
Screenshots go to test-artifacts/ (gitignored).
"""

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("ERQPY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
TIMEOUT_MS = 15_000
WIDE = {"width": 1400, "height": 900}
NARROW = {"width": 360, "height": 740}


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


def open_page(browser, viewport=WIDE):
    """A page whose script errors are collected in ``page.problems`` and whose confirm
    dialogs are answered by ``page.answer`` (True: accept) and recorded in ``page.asked``."""
    context = browser.new_context(viewport=viewport)
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    problems, asked = [], []
    opened.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    opened.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)

    def on_dialog(dialog):
        asked.append(dialog.message)
        if opened.answer:
            dialog.accept()
        else:
            dialog.dismiss()

    opened.on("dialog", on_dialog)
    opened.problems, opened.asked, opened.answer = problems, asked, True
    return opened


@pytest.fixture
def page(browser):
    opened = open_page(browser)
    yield opened
    opened.context.close()


def row(page, queue: str):
    return page.locator(f'#queues tr.queue-row[data-queue="{queue}"]')


def cell(page, queue: str, field: str, server=None):
    where = f'tr.server-row[data-queue="{queue}"][data-server="{server}"]' if server is not None \
        else f'tr.queue-row[data-queue="{queue}"]'
    return page.locator(f'#queues {where} td[data-field="{field}"]')


def wait_for_value(page, queue, field, expected, server=None):
    cell(page, queue, field, server).and_(page.locator(f'[data-value="{expected}"]')).wait_for()


def click_action(page, queue, action, server=None):
    where = f'tr.server-row[data-queue="{queue}"][data-server="{server}"]' if server is not None \
        else f'tr.queue-row[data-queue="{queue}"]'
    page.locator(f'#queues {where} button[data-action="{action}"]').click()


def message(page, expected_class: str) -> str:
    box = page.locator(f"#message.{expected_class}")
    box.wait_for()
    return box.inner_text()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    return path


def overflow(page) -> int:
    """Pixels the document is wider than the window (0: no horizontal scrolling)."""
    return page.evaluate("() => document.scrollingElement.scrollWidth - window.innerWidth")


def chart_points(page, chart_id: str) -> int:
    """Points drawn in a chart, once uPlot has made its canvas."""
    page.locator(f"#{chart_id} canvas").first.wait_for()
    return int(page.locator(f"#{chart_id}").get_attribute("data-points") or 0)
