"""The dashboard's other pages in a real headless Chromium: one queue's page (figures,
charts, pretty-printed items with paging, delete and move of the head job, settings),
the error queues (retry one, retry all, delete) and the consumers; and every page at
360 px and 1400 px without horizontal overflow.  Screenshots go to test-artifacts/.
"""

import json
import re
import threading

import pytest

from dashboard_helpers import (  # noqa: F401 (browser and page are fixtures)
    NARROW, WIDE, browser, chart_points, message, open_page, overflow, page, screenshot,
)
from test_dashboard_api import error_record


def test_what_is_typed_into_the_move_box_survives_a_refresh_of_the_list(http_server, page):
    """Each refresh rebuilt the items list and emptied the head job's "to queue" box: a
    refresh between typing and clicking Move sent no target (a clean-clone CI run saw
    the move never happen).  The box keeps its text, and its focus, while the head is
    the same job."""
    server = http_server({"refresh": 1})
    for n in range(3):
        server.enqueue("jobs", {"n": n})
    page.goto(server.url("/dashboard/q/jobs"))
    page.locator('#queue-figures .card[data-field="items"][data-value="3"]').wait_for()
    page.fill("#items li .move-to", "later")
    old_box = page.locator("#items li .move-to").element_handle()
    page.evaluate("() => window.erqpy.refresh()")
    page.wait_for_function("(box) => !box.isConnected", arg=old_box, timeout=15000)  # the list was rebuilt

    assert "later" == page.input_value("#items li .move-to")
    assert page.evaluate("() => document.activeElement.classList.contains('move-to')")


def test_queue_page_items_paging_and_head_job_actions(http_server, page):
    server = http_server({"refresh": 1}, extra_toml="[queues.jobs]\nmax_items = 900\n")
    for n in range(25):
        server.enqueue("jobs", {"n": n, "enqueued_at": 1764590400.5, "tags": ["a", True, None]})

    page.goto(server.url("/dashboard/q/jobs"))
    page.locator('#queue-figures .card[data-field="items"][data-value="25"]').wait_for()
    first_page = page.locator("#items li").count()
    head_json = page.locator("#items li pre.json").first
    keys = head_json.locator("span.k").all_inner_texts()
    stamp = head_json.locator("span.c").inner_text()
    added = page.locator("#items li .meta").first.inner_text()
    setting = page.locator('#settings dd[data-setting="max_items"]').inner_text()
    page.wait_for_function("() => Number(document.getElementById('chart-depth').dataset.points) >= 1")
    points = chart_points(page, "chart-depth")
    screenshot(page, "queue-page.png")
    page.click("#next-page")
    page.locator("#items-range", has_text="21–25 of 25").wait_for()
    second = page.locator("#items li pre.json").first.inner_text()
    page.click("#prev-page")
    page.locator("#items-range", has_text="1–20 of 25").wait_for()

    page.locator('#items li button[data-action="delete-item"]').click()
    page.locator('#queue-figures .card[data-field="items"][data-value="24"]').wait_for()
    deleted = message(page, "ok")
    # The figures and the list refresh apart: move the new head, not the deleted row
    # (a clean-clone CI run clicked the old row's button and got a 409).
    page.locator("#items li pre.json").first.filter(has_text=re.compile(r'"n": 1\b')).wait_for()
    page.fill("#items li .move-to", "later")
    page.locator('#items li button[data-action="move-item"]').click()
    page.locator('#queue-figures .card[data-field="items"][data-value="23"]').wait_for()
    moved = message(page, "ok")

    assert 20 == first_page
    assert ['"n"', '"enqueued_at"', '"tags"'] == keys
    assert "2025" in stamp and "ago" in stamp  # a Unix time under *_at, shown as a date
    assert "added" in added and "ago" in added
    assert "900" == setting
    assert points >= 1
    assert '"n": 20' in second
    assert deleted.startswith("Deleted job #") and moved.endswith("to later.")
    assert 1 == server.depth("later") and 23 == server.depth("jobs")
    assert json.loads(server.srv.client().get("later"))["n"] == 1
    assert 1 == len(page.asked) and "Delete job #" in page.asked[0]  # the move asks nothing
    assert [] == page.problems


def test_error_queue_retry_one_retry_all_and_delete(http_server, page):
    server = http_server({"refresh": 1})
    client = server.srv.client(default_noreply=False)
    for n in range(4):
        client.set("images_errors", error_record("images", n))

    page.goto(server.url("/dashboard/errors"))
    panel = page.locator('#error-queues .error-queue[data-queue="images_errors"]')
    panel.locator("li.error-record").nth(3).wait_for()
    error_text = panel.locator("li.error-record .error-text").first.inner_text()
    when = panel.locator("li.error-record .meta").first.inner_text()
    panel.locator("li.error-record details.traceback summary").first.click()
    trace = panel.locator("li.error-record details.traceback pre").first.inner_text()
    screenshot(page, "error-queues.png")

    panel.locator('button[data-action="retry"]').click()
    panel.locator("li.error-record").nth(2).wait_for()
    page.wait_for_function("() => document.querySelectorAll('#error-queues li.error-record').length === 3")
    retried = message(page, "ok")
    panel.locator('button[data-action="delete-item"]').click()
    page.wait_for_function("() => document.querySelectorAll('#error-queues li.error-record').length === 2")
    panel.locator('button[data-action="retry-all"]').click()
    page.wait_for_function(
        "() => document.querySelectorAll('#error-queues li.error-record').length === 0")
    retried_all = message(page, "ok")
    back = [json.loads(client.get("images")) for _ in range(3)]

    assert "ValueError: bad image 0" == error_text
    assert re.search(r"failed \d\d/\d\d/\d{4}, [\d:]+ \((\d+ ms|[\d.]+ s) ago\)", when), when
    assert "ValueError: bad image 0" in trace and "Traceback" in trace
    assert "Put job #" in retried and "back on images." in retried
    assert "Put 2 jobs back." == retried_all
    assert [0, 2, 3] == [record["payload"]["n"] for record in back]  # 1 was deleted
    assert 0 == server.depth("images_errors")
    assert 2 == len(page.asked)  # delete and retry all ask; retry one does not
    assert [] == page.problems


def test_consumers_page_shows_holders_and_blocked_readers(http_server, page):
    server = http_server({"refresh": 1})
    holder = server.srv.raw()
    holder.call(b"set work 0 0 1\r\nx\r\n")
    holder.call(b"get work/open\r\n", b"END\r\n")
    waiter = server.srv.raw()

    def wait_in_line():
        try:
            waiter.call(b"get work/t=8000\r\n", b"END\r\n", timeout=15)
        except OSError:
            pass  # closed by the test once the page showed it

    blocked = threading.Thread(target=wait_in_line)
    blocked.start()
    try:
        page.goto(server.url("/dashboard/consumers"))
        page.locator('#holders tbody tr[data-queue="work"]').wait_for()
        page.locator('#blocked tbody tr[data-queue="work"]').wait_for()
        held = page.locator('#holders tbody tr[data-queue="work"]').inner_text()
        port = holder.sock.getsockname()[1]
        screenshot(page, "consumers.png")
    finally:
        holder.close()
        waiter.close()
        blocked.join(timeout=15)

    assert f"127.0.0.1:{port}" in held
    assert "1" == page.locator('#holders tbody tr[data-queue="work"] td[data-field="count"]').inner_text()
    assert [] == page.problems


PAGES = ["/dashboard", "/dashboard/q/layoutq", "/dashboard/errors", "/dashboard/consumers"]


@pytest.mark.parametrize("viewport", [NARROW, WIDE], ids=["360px", "1400px"])
def test_no_page_overflows_sideways(http_server, browser, viewport):
    """Every page at 360 and 1400 px: the document is never wider than the window."""
    server = http_server({"refresh": 1})
    server.enqueue("layoutq", {"a-rather-long-key-for-a-narrow-screen": "x" * 200, "n": 1})
    server.enqueue("a_queue_with_a_really_long_name_for_the_table_errors", {"n": 1})
    page = open_page(browser, viewport)
    widths = {}
    try:
        for path in PAGES:
            page.goto(server.url(path))
            page.wait_for_function("() => document.getElementById('last-update').textContent.startsWith('updated')")
            widths[path] = overflow(page)
            screenshot(page, f"{path.strip('/').replace('/', '-')}-{viewport['width']}.png")
        problems = list(page.problems)
    finally:
        page.context.close()

    assert {path: 0 for path in PAGES} == {path: max(w, 0) for path, w in widths.items()}
    assert [] == problems


def test_read_only_dashboard_offers_no_actions(http_server, page):
    """In read-only mode the pages show everything and offer no button that changes anything."""
    server = http_server({"read_only": True, "refresh": 1})
    server.srv.client(default_noreply=False).set("watched", b'{"n": 1}')

    page.goto(server.url("/dashboard"))
    page.locator('#queues tr.queue-row[data-queue="watched"] td[data-field="items"][data-value="1"]').wait_for()
    overview_buttons = page.locator("#queues button, #servers button").count()
    page.goto(server.url("/dashboard/q/watched"))
    page.locator("#items li").first.wait_for()
    queue_buttons = page.locator("#queue-actions button, #items button").count()

    assert 0 == overview_buttons and 0 == queue_buttons
    assert page.locator("#enqueue-form").is_hidden()
    assert "read-only" == page.locator("header .badge").inner_text()
    assert [] == page.problems


def test_queue_page_shows_delayed_and_priority_counts(http_server, page):
    """A job scheduled for later and jobs of two priority levels, set over memcache."""
    server = http_server({"refresh": 1})
    raw = server.srv.raw()
    assert b"STORED\r\n" == raw.call(b"set levels/delay=600000 0 0 5\r\nlater\r\n")
    assert b"STORED\r\n" == raw.call(b"set levels/pri=1 0 0 6\r\nurgent\r\n")
    assert b"STORED\r\n" == raw.call(b"set levels 0 0 6\r\nnormal\r\n")
    raw.close()

    page.goto(server.url("/dashboard/q/levels"))
    page.locator('#queue-figures .card[data-field="delayed"][data-value="1"]').wait_for()
    levels = page.locator('#queue-figures .card[data-field^="items_pri_"] .label').all_inner_texts()
    counts = page.locator('#queue-figures .card[data-field^="items_pri_"]').evaluate_all("cards => cards.map(c => c.dataset.value)")
    page.goto(server.url("/dashboard"))
    page.locator('#queues.has-delayed tr.queue-row[data-queue="levels"] td[data-field="delayed"][data-value="1"]').wait_for()

    assert ["priority 1", "priority 5"] == levels
    assert ["1", "1"] == counts
    assert [] == page.problems
