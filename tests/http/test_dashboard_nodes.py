"""The dashboard's Nodes panel in engine mode, in a real headless Chromium: two erqpy nodes
on one real redis-server (``tests/engine/redis_procs``, stopped by PID), each node's lease
and the open reads it holds; a journaled server shows no panel (test_dashboard_browser)."""

import pytest

from dashboard_helpers import browser, page, screenshot  # noqa: F401 (fixtures)
from tests.engine import redis_procs


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    primary = redis_procs.start_primary(tmp_path_factory.mktemp("redis"))
    yield primary
    primary.stop()


def test_nodes_panel_lists_each_node_its_lease_and_open_reads(redis_server, http_server, page):
    storage = f'[storage]\nbackend = "redis"\nurl = "{redis_server.url}"\nprefix = "dash-nodes"\n'
    first = http_server({"refresh": 1}, extra_toml=storage)
    second = http_server({"refresh": 1}, extra_toml=storage)
    holder = second.srv.raw()
    try:
        holder.call(b"set shared 0 0 3\r\none\r\n")
        assert b"VALUE shared" in holder.call(b"get shared/open\r\n", b"END\r\n")
        page.goto(first.url("/dashboard"))
        page.locator("#nodes-section").wait_for(state="visible")
        page.locator("#nodes tbody tr").nth(1).wait_for()
        rows = {row.get_attribute("data-node"): row for row in page.locator("#nodes tbody tr").all()}
        by_pid = {}
        for node_id, row in rows.items():
            text = row.inner_text()
            pid = next(p for p in (first.srv.proc.pid, second.srv.proc.pid) if f"pid {p}" in text)
            by_pid[pid] = (text, row.locator('td[data-field="open_reads"]').inner_text(),
                           row.locator('td[data-field="lease"]').inner_text())
        screenshot(page, "overview-nodes.png")
    finally:
        holder.close()

    assert 2 == len(by_pid)
    assert "this node" in by_pid[first.srv.proc.pid][0] and "this node" not in by_pid[second.srv.proc.pid][0]
    assert ("0", "1") == (by_pid[first.srv.proc.pid][1], by_pid[second.srv.proc.pid][1])
    assert all(lease.endswith((" s", " ms")) for _text, _reads, lease in by_pid.values())
    assert [] == page.problems
