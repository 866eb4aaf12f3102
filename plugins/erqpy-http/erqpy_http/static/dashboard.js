// erqpy dashboard: polls the JSON API of this server (and of each configured peer through
// /peers/N) and redraws the server panels and the queue table.  No framework, no build.
"use strict";

(function () {
  const config = JSON.parse(document.getElementById("erqpy-config").textContent);
  const servers = config.servers;            // [{name, base}], index = data-server
  const latest = servers.map(() => null);    // last /stats reply per server
  const view = { sort: "queue", reverse: false, paused: false, timer: null, errors: 0 };
  const $ = (id) => document.getElementById(id);

  // -- formatting -----------------------------------------------------------------------
  const number = (n) => (typeof n === "number" ? n.toLocaleString("en-US", { maximumFractionDigits: 1 }) : String(n));
  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }
  function age(ms) {
    if (!ms) return "";
    if (ms < 1000) return ms + " ms";
    const s = ms / 1000;
    if (s < 120) return s.toFixed(1) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  const FORMAT = {
    bytes: bytes, logsize: bytes, head_age_ms: age,
    paused: (v) => (v ? "paused" : ""),
  };

  // -- talking to the API ---------------------------------------------------------------
  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    const box = $("token");
    if (box && box.value) h.Authorization = "Bearer " + box.value;
    return h;
  }
  async function call(serverIndex, method, path, body) {
    const init = { method: method, headers: headers(body !== undefined ? { "Content-Type": "application/json" } : {}) };
    if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
    const reply = await fetch(servers[serverIndex].base + path, init);
    const text = await reply.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
    if (!reply.ok) {
      const reason = data && data.error ? data.error : reply.status + " " + reply.statusText;
      throw new Error(reason);
    }
    return data;
  }
  function say(text, isError) {
    const box = $("message");
    box.textContent = text;
    box.className = isError ? "error" : "ok";
    if (isError) noteError(text);
  }
  function noteError(text) {
    view.errors += 1;
    $("errors").hidden = false;
    $("error-count").textContent = String(view.errors);
    $("last-error").textContent = text;
  }

  // -- polling ------------------------------------------------------------------------------
  async function poll() {
    await Promise.all(servers.map(async (server, i) => {
      try {
        latest[i] = await call(i, "GET", "/stats?history=1");
        latest[i].error = null;
      } catch (e) {
        latest[i] = { error: String(e.message || e), queues: {}, server: null };
        noteError(server.name + ": " + latest[i].error);
      }
    }));
    render();
    $("last-update").textContent = "updated " + new Date().toLocaleTimeString();
  }
  function schedule() {
    if (view.timer) clearInterval(view.timer);
    view.timer = null;
    if (!view.paused) view.timer = setInterval(poll, Number($("refresh-interval").value) * 1000);
  }

  // -- rendering ----------------------------------------------------------------------------
  function render() {
    renderServers();
    renderQueues();
  }

  function renderServers() {
    const section = $("servers");
    section.replaceChildren();
    servers.forEach((server, i) => {
      const snap = latest[i] || {};
      const box = document.createElement("div");
      box.className = "server" + (snap.error ? " down" : "");
      box.dataset.server = String(i);
      const title = document.createElement("h2");
      title.textContent = server.name;
      box.append(title);
      const list = document.createElement("dl");
      const s = snap.server;
      const rows = s ? [
        ["version", s.version], ["status", s.status], ["uptime", s.uptime + " s"],
        ["connections", number(s.curr_connections)], ["items", number(s.curr_items)],
        ["handler generation", s.handler_generation], ["reservations", snap.http ? snap.http.reservations : 0],
        ["fsync", s.fsync_count ? (1000 * s.fsync_seconds / s.fsync_count).toFixed(2) + " ms avg" : "-"],
      ] : [["error", snap.error || "no data yet"]];
      rows.forEach(([k, v]) => {
        const dt = document.createElement("dt");
        dt.textContent = k;
        const dd = document.createElement("dd");
        dd.dataset.field = k;
        dd.textContent = String(v);
        list.append(dt, dd);
      });
      box.append(list);
      if (s && !config.read_only) box.append(button("Reload code", "reload", () => reloadCode(i)));
      section.append(box);
    });
  }

  function rowsOf() {
    const rows = [];
    latest.forEach((snap, i) => {
      if (!snap || !snap.queues) return;
      for (const [name, q] of Object.entries(snap.queues)) {
        rows.push(Object.assign({ queue: name, server: servers[i].name, serverIndex: i }, q));
      }
    });
    return rows;
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

  function renderQueues() {
    const tests = parseFilter($("filter").value);
    const rows = rowsOf().filter((row) => tests.every((t) => t(row)));
    const key = view.sort;
    rows.sort((a, b) => {
      const x = a[key], y = b[key];
      const order = typeof x === "string" ? String(x).localeCompare(String(y)) : Number(x) - Number(y);
      return (view.reverse ? -order : order) || a.queue.localeCompare(b.queue);
    });
    const body = document.querySelector("#queues tbody");
    body.replaceChildren(...rows.map(queueRow));
    $("no-queues").hidden = rows.length > 0;
    document.querySelectorAll("#queues th[data-sort]").forEach((th) => {
      th.classList.toggle("sorted", th.dataset.sort === key);
      th.classList.toggle("reverse", th.dataset.sort === key && view.reverse);
    });
  }

  function cell(field, value, shown) {
    const td = document.createElement("td");
    td.dataset.field = field;
    td.dataset.value = typeof value === "boolean" ? String(Number(value)) : String(value);
    td.textContent = shown;
    return td;
  }

  function sparkline(history) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", "120");
    svg.setAttribute("height", "24");
    svg.setAttribute("class", "spark");
    const series = [history ? history.in : [], history ? history.out : []];
    const max = Math.max(1, ...series[0], ...series[1]);
    ["in", "out"].forEach((kind, k) => {
      const values = series[k];
      if (!values.length) return;
      const step = values.length > 1 ? 120 / (values.length - 1) : 0;
      const points = values.map((v, i) => (i * step).toFixed(1) + "," + (23 - (22 * v) / max).toFixed(1));
      const line = document.createElementNS(ns, "polyline");
      line.setAttribute("points", points.join(" "));
      line.setAttribute("class", kind);
      line.setAttribute("fill", "none");
      svg.append(line);
    });
    return svg;
  }

  function button(label, action, handler) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.dataset.action = action;
    b.addEventListener("click", handler);
    return b;
  }

  function queueRow(row) {
    const tr = document.createElement("tr");
    tr.dataset.server = String(row.serverIndex);
    tr.dataset.queue = row.queue;
    if (row.paused) tr.className = "paused";
    const name = cell("queue", row.queue, row.queue);
    if (servers.length > 1) {
      const where = document.createElement("small");
      where.textContent = " @ " + row.server;
      name.append(where);
    }
    tr.append(name);
    for (const field of ["items", "bytes", "rate_in", "rate_out"]) {
      tr.append(cell(field, row[field], (FORMAT[field] || number)(row[field])));
    }
    const spark = document.createElement("td");
    spark.dataset.field = "spark";
    spark.append(sparkline(row.history));
    tr.append(spark);
    for (const field of ["head_age_ms", "waiters", "open_transactions", "logsize", "paused"]) {
      tr.append(cell(field, row[field], (FORMAT[field] || number)(row[field])));
    }
    const actions = document.createElement("td");
    actions.dataset.field = "actions";
    const i = row.serverIndex, q = row.queue;
    actions.append(button("Peek", "peek", () => peek(i, q)));
    if (!config.read_only) {
      actions.append(
        button("Enqueue test", "enqueue", () => enqueue(i, q, JSON.stringify({ test: true, at: new Date().toISOString() }))),
        row.paused ? button("Resume", "resume", () => control(i, q, false)) : button("Pause", "pause", () => control(i, q, true)),
        button("Flush", "flush", () => act(i, "DELETE", "/q/" + encodeURIComponent(q), "Flush every waiting item of " + q + "?")),
        button("Delete", "delete", () => act(i, "DELETE", "/queues/" + encodeURIComponent(q), "Delete queue " + q + " and its journal?")),
      );
    }
    tr.append(actions);
    return tr;
  }

  // -- actions ------------------------------------------------------------------------------
  async function act(i, method, path, question, body) {
    if (question && !window.confirm(question)) return;
    try {
      const reply = await call(i, method, path, body);
      say(method + " " + path + ": " + JSON.stringify(reply));
    } catch (e) {
      say(method + " " + path + " failed: " + e.message, true);
    }
    await poll();
  }
  function control(i, q, paused) {
    const verb = paused ? "Pause" : "Resume";
    return act(i, "POST", "/control/" + encodeURIComponent(q), verb + " consumers of " + q + "?", { paused: paused });
  }
  function enqueue(i, q, job) {
    return act(i, "POST", "/q/" + encodeURIComponent(q), null, job);
  }
  async function reloadCode(i) {
    await act(i, "POST", "/server/reload", "Reload the handler and plugin code of " + servers[i].name + "?");
  }
  async function peek(i, q) {
    try {
      const info = await call(i, "GET", "/j/" + encodeURIComponent(q) + "?peek=10");
      $("detail-title").textContent = q + " @ " + servers[i].name + ": " + info.job_count + " items";
      const list = $("detail-items");
      list.replaceChildren(...(info.head || []).map((item) => {
        const li = document.createElement("li");
        const pre = document.createElement("pre");
        pre.textContent = item.preview + (item.truncated ? " ..." : "");
        const meta = document.createElement("small");
        meta.textContent = "id " + item.item_id + ", " + bytes(item.bytes) + ", " + age(item.age_ms) + " old";
        li.append(meta, pre);
        return li;
      }));
      $("detail").hidden = false;
    } catch (e) {
      say("peek " + q + " failed: " + e.message, true);
    }
  }

  // -- wiring ---------------------------------------------------------------------------------
  document.querySelectorAll("#queues th[data-sort]").forEach((th) => {
    th.addEventListener("click", () => {
      view.reverse = view.sort === th.dataset.sort ? !view.reverse : false;
      view.sort = th.dataset.sort;
      renderQueues();
    });
  });
  $("filter").addEventListener("input", renderQueues);
  $("refresh-interval").addEventListener("change", schedule);
  $("refresh-toggle").addEventListener("click", () => {
    view.paused = !view.paused;
    $("refresh-toggle").textContent = view.paused ? "Resume updates" : "Pause updates";
    $("refresh-toggle").classList.toggle("active", view.paused);
    schedule();
  });
  $("detail-close").addEventListener("click", () => { $("detail").hidden = true; });
  $("enqueue-button").addEventListener("click", () => {
    const q = $("enqueue-queue").value.trim();
    const job = $("enqueue-job").value.trim() || JSON.stringify({ test: true, at: new Date().toISOString() });
    if (!q) { say("enter a queue name", true); return; }
    enqueue(0, q, job);
  });
  const box = $("token");
  if (box) {
    box.value = sessionStorage.getItem("erqpy-token") || "";
    box.addEventListener("change", () => sessionStorage.setItem("erqpy-token", box.value));
  }
  if (config.read_only) document.querySelectorAll(".writes").forEach((el) => { el.hidden = true; });

  latest[0] = config.initial;
  render();
  poll();
  schedule();
})();
