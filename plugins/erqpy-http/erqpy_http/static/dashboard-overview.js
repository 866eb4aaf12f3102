// The overview: headline totals, the throughput charts, the queues table (one row per
// queue with its totals over every server, a per-server breakdown on demand), the nodes
// panel in engine mode and a panel per server.
"use strict";

(function () {
  const E = window.erqpy;
  const { $, el, number, bytes, age, call, q, act, button, servers, config } = E;
  const latest = servers.map(() => null);    // last /stats reply per server
  const view = { sort: "queue", reverse: false, expanded: new Set() };
  const SUMMED = ["items", "rate_in", "rate_out", "open_transactions", "waiters", "bytes", "delayed",
    "enqueued", "dequeued", "expired_items"];
  const FORMAT = { bytes: bytes, head_age_ms: age, paused: (v) => (v ? "paused" : "active") };
  const FIELDS = ["items", "rate_in", "rate_out", "head_age_ms", "open_transactions", "waiters", "bytes", "delayed", "paused"];

  // -- totals ---------------------------------------------------------------------------
  function totals() {
    const t = { enqueued: 0, dequeued: 0, expired: 0, failed: 0, depth: 0, open: 0, connections: 0 };
    latest.forEach((snap) => {
      if (!snap || !snap.server) return;
      t.connections += snap.server.curr_connections;
      for (const [name, s] of Object.entries(snap.queues)) {
        t.enqueued += s.enqueued; t.dequeued += s.dequeued; t.expired += s.expired_items;
        if (name.endsWith("_errors")) t.failed += s.enqueued;
        t.depth += s.items; t.open += s.open_transactions;
      }
    });
    return t;
  }
  const CARDS = [["enqueued", "enqueued"], ["dequeued", "dequeued"], ["expired", "expired"],
    ["failed", "failed to error queues"], ["depth", "waiting now"], ["open", "open reads"],
    ["connections", "connections"]];
  function renderTotals() {
    const t = totals();
    $("totals").replaceChildren(...CARDS.map(([key, label]) => el("div", { class: "card", dataset: { total: key, value: String(t[key]) } },
      el("span", { class: "value", text: number(t[key]) }), el("span", { class: "label", text: label }))));
  }

  // -- the queues table -----------------------------------------------------------------
  function grouped() {
    const byName = new Map();
    latest.forEach((snap, i) => {
      if (!snap || !snap.queues) return;
      for (const [name, s] of Object.entries(snap.queues)) {
        if (!byName.has(name)) byName.set(name, []);
        byName.get(name).push(Object.assign({ queue: name, serverIndex: i }, s));
      }
    });
    return [...byName.entries()].map(([name, parts]) => {
      const row = { queue: name, parts: parts, head_age_ms: Math.max(...parts.map((p) => p.head_age_ms || 0)) };
      for (const f of SUMMED) if (parts.some((p) => p[f] !== undefined)) row[f] = parts.reduce((a, p) => a + (p[f] || 0), 0);
      row.paused = parts.some((p) => p.paused);
      return row;
    });
  }

  // "items>=10, queue!=.*_prod$": numbers compare, strings match as regular expressions.
  function parseFilter(text) {
    return text.split(",").map((part) => part.trim()).filter(Boolean).map((part) => {
      const m = part.match(/^(\w+)\s*(>=|<=|!=|=|<|>)\s*(.*)$/);
      if (!m) return (row) => row.queue.includes(part);
      const [, field, op, raw] = m;
      return (row) => {
        const value = row[field];
        if (value === undefined) return false;
        if (typeof value === "number" || typeof value === "boolean") {
          const a = Number(value), b = Number(raw === "true" ? 1 : raw === "false" ? 0 : raw);
          return { ">=": a >= b, "<=": a <= b, "!=": a !== b, "=": a === b, "<": a < b, ">": a > b }[op];
        }
        let re;
        try { re = new RegExp(raw); } catch (e) { return false; }
        if (op === "=") return re.test(String(value));
        if (op === "!=") return !re.test(String(value));
        return false;
      };
    });
  }

  function cell(field, value) {
    const shown = (FORMAT[field] || number)(value);
    return el("td", { dataset: { field: field, value: typeof value === "boolean" ? String(Number(value)) : String(value) }, text: shown });
  }
  function queueLink(name, serverIndex) {
    return el("a", { href: "/dashboard/q/" + q(name) + (serverIndex ? "?server=" + serverIndex : ""), text: name });
  }
  function actions(serverIndex, name, paused) {
    const td = el("td", { dataset: { field: "actions" }, class: "actions" });
    if (!E.writesAllowed()) return td;
    const where = servers.length > 1 ? " on " + servers[serverIndex].name : "";
    td.append(
      paused
        ? button("Resume", "resume", () => act(null, () => call(serverIndex, "POST", "/control/" + q(name), { paused: false }),
          () => "Resumed consumers of " + name + where + "."))
        : button("Pause", "pause", () => act(null, () => call(serverIndex, "POST", "/control/" + q(name), { paused: true }),
          () => "Paused consumers of " + name + where + ": they get nothing until resumed.")),
      button("Flush", "flush", () => act("Flush every waiting item of " + name + where + "? This cannot be undone.",
        () => call(serverIndex, "DELETE", "/q/" + q(name)), (r) => "Flushed " + number(r.flushed) + " items from " + name + where + "."), "danger"),
      button("Delete", "delete", () => act("Delete queue " + name + where + ", its items and its journal? This cannot be undone.",
        () => call(serverIndex, "DELETE", "/queues/" + q(name)), () => "Deleted queue " + name + where + "."), "danger"),
    );
    return td;
  }
  function queueRow(row) {
    const tr = el("tr", { class: "queue-row" + (row.paused ? " paused" : ""), dataset: { queue: row.queue } });
    const name = el("td", { dataset: { field: "queue", value: row.queue } }, queueLink(row.queue, row.parts[0].serverIndex));
    if (servers.length > 1) {
      const open = view.expanded.has(row.queue);
      const toggle = button((open ? "▾ " : "▸ ") + row.parts.length + (row.parts.length === 1 ? " server" : " servers"), "breakdown", () => {
        if (view.expanded.has(row.queue)) view.expanded.delete(row.queue); else view.expanded.add(row.queue);
        renderQueues();
      }, "link");
      toggle.setAttribute("aria-expanded", String(open));
      name.append(" ", toggle);
    }
    tr.append(name, ...FIELDS.map((f) => cell(f, row[f])));
    tr.append(servers.length > 1 ? el("td", { dataset: { field: "actions" } }) : actions(0, row.queue, row.paused));
    const out = [tr];
    if (servers.length > 1 && view.expanded.has(row.queue)) {
      for (const part of row.parts) {
        const sub = el("tr", { class: "server-row" + (part.paused ? " paused" : ""), dataset: { queue: row.queue, server: String(part.serverIndex) } },
          el("td", { dataset: { field: "queue" } }, "@ ", queueLink(servers[part.serverIndex].name, part.serverIndex)));
        sub.firstChild.querySelector("a").href = "/dashboard/q/" + q(row.queue) + "?server=" + part.serverIndex;
        sub.append(...FIELDS.map((f) => cell(f, part[f])), actions(part.serverIndex, row.queue, part.paused));
        out.push(sub);
      }
    }
    return out;
  }
  function renderQueues() {
    const tests = parseFilter($("filter").value);
    const rows = grouped().filter((row) => tests.every((t) => t(row)));
    const key = view.sort;
    rows.sort((a, b) => {
      const x = a[key], y = b[key];
      const order = typeof x === "string" ? String(x).localeCompare(String(y)) : Number(x) - Number(y);
      return (view.reverse ? -order : order) || a.queue.localeCompare(b.queue);
    });
    document.querySelector("#queues tbody").replaceChildren(...rows.flatMap(queueRow));
    $("queues").classList.toggle("has-delayed", rows.some((row) => row.delayed !== undefined));
    $("no-queues").hidden = rows.length > 0;
    document.querySelectorAll("#queues th[data-sort]").forEach((th) => {
      th.classList.toggle("sorted", th.dataset.sort === key);
      th.classList.toggle("reverse", th.dataset.sort === key && view.reverse);
      th.setAttribute("aria-sort", th.dataset.sort === key ? (view.reverse ? "descending" : "ascending") : "none");
    });
  }

  // -- servers and nodes ----------------------------------------------------------------
  function renderServers() {
    $("servers").replaceChildren(...servers.map((server, i) => {
      const snap = latest[i] || {};
      const s = snap.server;
      const rows = s ? [
        ["version", s.version], ["status", s.status], ["uptime", age(s.uptime * 1000)],
        ["connections", number(s.curr_connections)], ["items", number(s.curr_items)],
        ["handler generation", s.handler_generation], ["reservations", snap.http ? snap.http.reservations : 0],
      ] : [["error", snap.error || "no data yet"]];
      const list = el("dl", {}, ...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { dataset: { field: k }, text: String(v) })]));
      const box = el("div", { class: "server" + (snap.error ? " down" : ""), dataset: { server: String(i) } }, el("h2", { text: server.name }), list);
      if (s && E.writesAllowed()) {
        box.append(button("Reload code", "reload", () => act("Reload the handler and plugin code of " + server.name + "?",
          () => call(i, "POST", "/server/reload"), (r) => "Reloaded the code of " + server.name + ": generation " + r.generation + ".")));
      }
      return box;
    }));
  }
  // GET /nodes: {"engine": bool, "nodes": [{id, host, pid, started_ms, lease_ms_left,
  // open_reads, self}]}.  Not in engine mode (or an older server without the route), the
  // panel stays hidden and the page asks again once a minute at most.
  let nodesAbsentSince = -Infinity;
  async function renderNodes() {
    if (Date.now() - nodesAbsentSince < 60000) return;
    let reply = null;
    try { reply = await call(0, "GET", "/nodes"); } catch (e) { reply = null; }
    if (!reply || !reply.engine) {
      $("nodes-section").hidden = true;
      nodesAbsentSince = Date.now();
      return;
    }
    $("nodes-section").hidden = false;
    document.querySelector("#nodes tbody").replaceChildren(...reply.nodes.map((n) => {
      const where = [n.host, n.pid ? "pid " + n.pid : null].filter(Boolean).join(", ");
      return el("tr", { class: n.self ? "self" : null, dataset: { node: String(n.id) } },
        el("td", { text: n.id + (where ? " (" + where + ")" : "") + (n.self ? " · this node" : "") }),
        el("td", { dataset: { field: "lease" }, text: age(Math.max(0, n.lease_ms_left)) }),
        el("td", { dataset: { field: "open_reads" }, text: number(n.open_reads) }));
    }));
  }

  // -- updates ------------------------------------------------------------------------
  function render() { renderTotals(); renderQueues(); renderServers(); }
  function chartServer() { return Number($("chart-server").value || 0); }
  async function refresh() {
    await Promise.all(servers.map(async (server, i) => {
      if (i === 0 && E.live()) return;  // pushed over /ws
      try {
        latest[i] = await call(i, "GET", "/stats");
      } catch (e) {
        latest[i] = { error: String(e.message || e), queues: {}, server: null };
      }
    }));
    render();
    await Promise.all([E.charts.update(chartServer()).catch(() => null), renderNodes()]);
  }
  // A push renders at once; the charts follow it every few seconds (their points are 1 s apart).
  let chartsAt = 0;
  function onStats(i, body) {
    latest[i] = body;
    render();
    if (Date.now() - chartsAt > 3000) {
      chartsAt = Date.now();
      E.charts.update(chartServer()).catch(() => null);
    }
  }

  document.querySelectorAll("#queues th[data-sort]").forEach((th) => {
    th.addEventListener("click", () => {
      view.reverse = view.sort === th.dataset.sort ? !view.reverse : false;
      view.sort = th.dataset.sort;
      renderQueues();
    });
  });
  $("filter").addEventListener("input", renderQueues);
  $("window").addEventListener("change", () => E.charts.update(chartServer()));
  if (servers.length > 1) {
    $("chart-server-box").hidden = false;
    $("chart-server").replaceChildren(...servers.map((s, i) => el("option", { value: String(i), text: s.name })));
    $("chart-server").addEventListener("change", () => E.charts.update(chartServer()));
  }
  $("enqueue-button").addEventListener("click", () => {
    const name = $("enqueue-queue").value.trim();
    const job = $("enqueue-job").value.trim() || JSON.stringify({ test: true, at: new Date().toISOString() });
    if (!name) { E.say("Enter the name of the queue to enqueue on.", true); return; }
    act(null, () => call(0, "POST", "/q/" + q(name), job), () => "Enqueued one job on " + name + ".");
  });

  latest[0] = config.initial;
  render();
  E.view({ refresh, onStats });
})();
