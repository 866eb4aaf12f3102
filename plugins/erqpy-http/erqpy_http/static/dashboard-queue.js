// One queue's page (/dashboard/q/NAME?server=N): its figures, charts, actions, the items
// from the head with paging, the per-job actions on the head, and the settings in force.
"use strict";

(function () {
  const E = window.erqpy;
  const { $, el, number, bytes, age, call, q, act, button, servers, config } = E;
  const name = config.queue;
  const params = new URLSearchParams(location.search);
  const page = { server: Math.min(Number(params.get("server") || 0), servers.length - 1), offset: 0, limit: 20, total: 0 };
  const FIGURES = [["items", "depth", number], ["rate_in", "in/s", number], ["rate_out", "out/s", number],
    ["open_transactions", "open reads", number], ["waiters", "waiting readers", number],
    ["head_age_ms", "head age", age], ["enqueued", "enqueued", number], ["dequeued", "dequeued", number],
    ["expired_items", "expired", number], ["bytes", "bytes", bytes],
    // Scheduled jobs not due yet (set q/delay=, q/at=).
    ["delayed", "delayed", number]];
  const where = () => (servers.length > 1 ? " on " + servers[page.server].name : "");

  // Items waiting per priority level, items_pri_<n>, once the queue has items of a level.
  const levels = (info) => Object.keys(info).filter((k) => /^items_pri_\d+$/.test(k)).sort()
    .map((k) => [k, "priority " + k.slice(10), number]);

  function renderFigures(info) {
    $("queue-figures").replaceChildren(...FIGURES.concat(levels(info)).filter(([f]) => info[f] !== undefined).map(([f, label, fmt]) =>
      el("div", { class: "card", dataset: { field: f, value: String(info[f]) } },
        el("span", { class: "value", text: fmt(info[f]) }), el("span", { class: "label", text: label }))),
    el("div", { class: "card" + (info.paused ? " warn" : ""), dataset: { field: "paused", value: String(Number(info.paused)) } },
      el("span", { class: "value", text: info.paused ? "paused" : "active" }), el("span", { class: "label", text: "state" })));
    if (!E.writesAllowed()) return;
    const s = page.server;
    $("queue-actions").replaceChildren(
      info.paused
        ? button("Resume", "resume", () => act(null, () => call(s, "POST", "/control/" + q(name), { paused: false }), () => "Resumed consumers of " + name + where() + "."))
        : button("Pause", "pause", () => act(null, () => call(s, "POST", "/control/" + q(name), { paused: true }), () => "Paused consumers of " + name + where() + ".")),
      button("Enqueue test job", "enqueue", () => act(null, () => call(s, "POST", "/q/" + q(name), { test: true, at: new Date().toISOString() }),
        () => "Enqueued one test job on " + name + where() + ".")),
      button("Flush", "flush", () => act("Flush every waiting item of " + name + where() + "? This cannot be undone.",
        () => call(s, "DELETE", "/q/" + q(name)), (r) => "Flushed " + number(r.flushed) + " items from " + name + where() + "."), "danger"),
      button("Delete queue", "delete", async () => {
        const done = await act("Delete queue " + name + where() + ", its items and its journal? This cannot be undone.",
          () => call(s, "DELETE", "/queues/" + q(name)), () => "Deleted queue " + name + where() + ".");
        if (done && $("message").className === "ok") location.href = "/dashboard";
      }, "danger"),
    );
  }

  function headActions(item, typed) {
    const s = page.server;
    const target = el("input", { placeholder: "to queue", size: "10", class: "move-to", "aria-label": "queue to move the job to" });
    target.value = typed;
    return el("div", { class: "item-actions writes" },
      button("Delete job", "delete-item", () => act("Delete job #" + item.item_id + " from " + name + "? This cannot be undone.",
        () => call(s, "DELETE", "/queues/" + q(name) + "/items/" + item.item_id), () => "Deleted job #" + item.item_id + " from " + name + "."), "danger"),
      target,
      button("Move", "move-item", () => {
        const to = target.value.trim();
        if (!to) { E.say("Enter the queue to move job #" + item.item_id + " to.", true); return; }
        act(null, () => call(s, "POST", "/queues/" + q(name) + "/items/" + item.item_id + "/move", { to: to }),
          () => "Moved job #" + item.item_id + " from " + name + " to " + to + ".");
      }));
  }

  // The server's "no limit" is the largest 64-bit integer; an empty name is "none".
  const setting = (v) => (typeof v === "number" && v >= 2 ** 62 ? "unlimited" : v === "" ? "none" : String(v));

  function renderItems(reply) {
    page.total = reply.total;
    const first = reply.items.length ? page.offset + 1 : 0;
    $("items-range").textContent = reply.items.length
      ? first + "–" + (page.offset + reply.items.length) + " of " + number(reply.total) : "empty";
    $("items").setAttribute("start", String(first || 1));
    // Every refresh rebuilds the list: what was typed into the head job's "to queue" box
    // (and its focus) is kept while the head is the same job, or a refresh between typing
    // and clicking Move would send an empty target.
    const box = $("items").querySelector("li .move-to");
    const typedFor = box ? box.closest("li").dataset.item : null;
    const typed = box ? box.value : "";
    const focused = box !== null && document.activeElement === box;
    $("items").replaceChildren(...reply.items.map((item, i) => {
      const li = el("li", { dataset: { item: String(item.item_id) } }, E.itemMeta(item), E.itemBody(item));
      if (page.offset === 0 && i === 0 && E.writesAllowed()) {
        li.append(headActions(item, String(item.item_id) === typedFor ? typed : ""));
      }
      return li;
    }));
    if (focused) {
      const again = $("items").querySelector("li .move-to");
      if (again) again.focus();
    }
    $("prev-page").disabled = page.offset === 0;
    $("next-page").disabled = page.offset + reply.items.length >= Math.min(reply.total, 1000);
    $("settings").replaceChildren(...Object.entries(reply.settings).flatMap(([k, v]) =>
      [el("dt", { text: k }), el("dd", { dataset: { setting: k }, text: setting(v) })]));
  }

  async function refresh() {
    const s = page.server;
    let snap;
    try {
      snap = await call(s, "GET", "/stats/" + q(name));
    } catch (e) {
      if (e.status === 404) {
        $("queue-figures").replaceChildren(el("p", { text: "No queue " + name + where() + " (deleted, or not created yet)." }));
        $("items").replaceChildren();
        return;
      }
      throw e;
    }
    renderFigures(snap.queues[snap.queue]);
    renderItems(await call(s, "GET", "/queues/" + q(name) + "/items?offset=" + page.offset + "&limit=" + page.limit));
    await E.charts.update(s, name).catch(() => null);
  }

  $("prev-page").addEventListener("click", () => { page.offset = Math.max(0, page.offset - page.limit); refresh(); });
  $("next-page").addEventListener("click", () => { page.offset += page.limit; refresh(); });
  $("window").addEventListener("change", () => E.charts.update(page.server, name));
  if (servers.length > 1) {
    $("queue-server-box").hidden = false;
    $("queue-server").replaceChildren(...servers.map((s, i) => el("option", { value: String(i), text: s.name, selected: i === page.server })));
    $("queue-server").addEventListener("change", () => {
      page.server = Number($("queue-server").value);
      page.offset = 0;
      history.replaceState(null, "", "?server=" + page.server);
      refresh();
    });
  }
  E.view({ refresh });
})();
