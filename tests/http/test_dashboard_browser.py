"""The dashboard's overview in a real headless Chromium (Debian's, driven by Playwright):
totals and charts from a queue a memcache client filled, the queues table (sort, filter,
totals across servers and the per-server breakdown), the actions with their
confirmations and messages, and the reload button.  Screenshots go to test-artifacts/.
"""

from dashboard_helpers import (  # noqa: F401 (browser and page are fixtures)
    browser, cell, chart_points, click_action, message, page, row, screenshot, wait_for_value,
)
from http_helpers import wait_until


def test_overview_totals_charts_and_actions(http_server, page):
    """Fill with pymemcache; the totals and the charts show it; pause, flush (asked
    first, refused once), enqueue, resume, each with a message in words."""
    server = http_server({"sample_interval": 0.3, "refresh": 1})
    client = server.srv.client(default_noreply=False)
    for n in range(25):
        client.set("browserq", f'{{"n": {n}}}'.encode())
    client.set("otherq", b"x")
    client.get("otherq")

    page.goto(server.url("/dashboard"))
    wait_for_value(page, "browserq", "items", 25)
    page.locator('#totals .card[data-total="depth"][data-value="25"]').wait_for()
    enqueued = page.locator('#totals .card[data-total="enqueued"]').get_attribute("data-value")
    dequeued = page.locator('#totals .card[data-total="dequeued"]').get_attribute("data-value")
    # The history ring samples once a second: the charts get points with the burst in them.
    page.wait_for_function("() => Number(document.getElementById('chart-rates').dataset.points) >= 2")
    rates_points = chart_points(page, "chart-rates")
    depth_points = chart_points(page, "chart-depth")
    legend = page.locator("#chart-rates .u-legend").inner_text()
    axes = page.locator("#chart-rates .u-axis").count()
    page.select_option("#window", "1h")
    page.locator("#chart-rates canvas").first.wait_for()
    page.select_option("#window", "5m")
    screenshot(page, "overview-filled.png")

    page.answer = False  # the first flush is refused in the dialog: nothing happens
    click_action(page, "browserq", "flush")
    assert wait_until(lambda: len(page.asked) == 1, timeout=5)
    refused_depth = server.depth("browserq")
    page.answer = True

    click_action(page, "browserq", "pause")
    wait_for_value(page, "browserq", "paused", 1)
    paused_message = message(page, "ok")
    assert client.get("browserq") is None  # memcache consumers see an empty queue
    click_action(page, "browserq", "flush")
    wait_for_value(page, "browserq", "items", 0)
    flushed_message = message(page, "ok")

    page.fill("#enqueue-queue", "")
    page.click("#enqueue-button")
    missing_name = message(page, "error")
    page.fill("#enqueue-queue", "browserq")
    page.fill("#enqueue-job", '{"from": "the form"}')
    page.click("#enqueue-button")
    wait_for_value(page, "browserq", "items", 1)
    enqueued_message = message(page, "ok")  # the error before is gone
    click_action(page, "browserq", "resume")
    wait_for_value(page, "browserq", "paused", 0)
    screenshot(page, "overview-after-actions.png")

    assert "26" == enqueued and "1" == dequeued
    assert rates_points >= 2 and depth_points >= 2
    assert "in" in legend and "out" in legend and axes >= 2
    assert 25 == refused_depth
    assert page.asked[0].startswith("Flush every waiting item of browserq?")
    assert len(page.asked) == 2  # the flush, twice; pause and enqueue ask nothing
    assert paused_message.startswith("Paused consumers of browserq")
    assert "Flushed 25 items from browserq." == flushed_message
    assert "Enter the name of the queue" in missing_name
    assert "Enqueued one job on browserq." == enqueued_message
    assert b'{"from": "the form"}' == client.get("browserq")
    assert [] == page.problems


def test_destructive_actions_are_red_and_delete_asks_first(http_server, page):
    server = http_server({"refresh": 1})
    server.enqueue("doomed", {"n": 1})

    page.goto(server.url("/dashboard"))
    wait_for_value(page, "doomed", "items", 1)
    colours = {action: page.locator(f'tr.queue-row[data-queue="doomed"] button[data-action="{action}"]').evaluate(
        "b => getComputedStyle(b).backgroundColor") for action in ("pause", "flush", "delete")}
    page.answer = False
    click_action(page, "doomed", "delete")
    assert wait_until(lambda: page.asked, timeout=5)
    kept = server.get("/queues").json()["queues"]
    page.answer = True
    click_action(page, "doomed", "delete")
    row(page, "doomed").wait_for(state="detached")

    assert colours["flush"] == colours["delete"] == "rgb(198, 40, 40)"
    assert colours["pause"] != colours["delete"]
    assert {"doomed": 1} == kept
    assert "Delete queue doomed" in page.asked[0] and 2 == len(page.asked)
    assert "Deleted queue doomed." == message(page, "ok")
    assert {} == server.get("/queues").json()["queues"]
    assert [] == page.problems


def test_queues_table_sorts_filters_and_pauses_its_refresh(http_server, page):
    server = http_server({"refresh": 1})
    client = server.srv.client(default_noreply=False)
    for name, count in (("alpha", 3), ("beta", 1), ("gamma", 2)):
        for _ in range(count):
            client.set(name, b"1")

    page.goto(server.url("/"))
    wait_for_value(page, "alpha", "items", 3)
    rows = page.locator("#queues tbody tr.queue-row")
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
    page.locator('tr.queue-row[data-queue="gamma"] td[data-field="queue"] a').click()
    page.wait_for_url("**/dashboard/q/gamma")

    assert ["beta", "gamma", "alpha"] == ascending
    assert ["alpha", "gamma", "beta"] == descending
    assert ["alpha", "gamma"] == filtered
    assert ["gamma", "beta"] == by_name  # still sorted by items, descending
    assert "3" == frozen
    assert [] == page.problems


def test_several_servers_total_per_queue_with_a_breakdown(http_server, page):
    """With a server list: one row per queue with the sum, per-server rows on demand, and
    an action on one server's row changes that server only."""
    second = http_server()
    second.srv.client(default_noreply=False).set("shared", b"1")
    second.srv.client(default_noreply=False).set("on-second", b"1")
    first = http_server({"servers": [{"url": second.base, "name": "second"}], "refresh": 1})
    for _ in range(2):
        first.srv.client(default_noreply=False).set("shared", b"1")

    page.goto(first.url("/dashboard"))
    wait_for_value(page, "shared", "items", 3)
    wait_for_value(page, "on-second", "items", 1)
    panels = page.locator("#servers .server h2").all_inner_texts()
    page.locator('tr.queue-row[data-queue="shared"] button[data-action="breakdown"]').click()
    wait_for_value(page, "shared", "items", 2, server=0)
    wait_for_value(page, "shared", "items", 1, server=1)
    screenshot(page, "overview-two-servers.png")
    click_action(page, "shared", "flush", server=1)
    wait_for_value(page, "shared", "items", 2)

    assert ["this server", "second"] == panels
    assert 0 == second.depth("shared") and 2 == first.depth("shared")
    assert "Flushed 1 items from shared on second." == message(page, "ok")
    assert [] == page.problems


def test_reload_button_reloads_code_and_the_nodes_panel_stays_hidden(http_server, page):
    """The server panel's reload button bumps the handler generation shown; outside
    engine mode there is no nodes panel."""
    server = http_server({"refresh": 1})

    page.goto(server.url("/"))
    generation = page.locator('#servers .server[data-server="0"] dd[data-field="handler generation"]')
    generation.wait_for()
    before = int(generation.inner_text())
    page.locator('#servers button[data-action="reload"]').click()

    assert wait_until(lambda: int(generation.inner_text()) == before + 1, timeout=10)
    assert before + 1 == server.get("/stats").json()["server"]["handler_generation"]
    assert page.locator("#nodes-section").is_hidden()
    assert [] == page.problems


def test_overview_takes_stats_pushed_over_the_websocket(http_server, page):
    """With /ws the page stops polling /stats: with a 60 s refresh, a set still shows
    within seconds, the charts still grow, and no GET /stats is sent once the socket is live."""
    server = http_server({"refresh": 60, "ws_push_interval": 0.5})
    client = server.srv.client(default_noreply=False)
    client.set("pushed", b"1")
    stats_requests = []
    page.on("request", lambda request: stats_requests.append(request.url) if request.url.endswith("/stats") else None)

    page.goto(server.url("/dashboard"))
    page.locator("#live.on").wait_for()
    polled_before = len(stats_requests)
    for _ in range(3):
        client.set("pushed", b"1")
    wait_for_value(page, "pushed", "items", 4)
    points = int(page.locator("#chart-rates").get_attribute("data-points") or 0)
    # The charts follow the pushes too, though the page does not poll.
    page.wait_for_function(f"() => Number(document.getElementById('chart-rates').dataset.points) > {points}")

    assert "live" == page.locator("#live").inner_text()
    assert polled_before == len(stats_requests)  # the update came over /ws
    assert [] == page.problems
