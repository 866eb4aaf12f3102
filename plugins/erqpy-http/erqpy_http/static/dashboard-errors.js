// Error queues (/dashboard/errors): every <queue>_errors queue of every server, its
// records with the error and traceback the consumer stored (erqpy.client.envelope's
// error_record), retry one (the head), retry all, delete.
"use strict";

(function () {
  const E = window.erqpy;
  const { $, el, number, call, q, act, button, servers } = E;
  const SHOWN = 20;

  function record(item, serverIndex, queue, isHead) {
    const job = item.job && typeof item.job === "object" ? item.job : {};
    const meta = job.meta && typeof job.meta === "object" ? job.meta : {};
    const li = el("li", { class: "error-record", dataset: { item: String(item.item_id) } },
      el("div", { class: "error-head" },
        el("b", { text: job.job ? String(job.job) : "(job without a name)" }),
        el("span", { class: "error-text", text: meta.error ? String(meta.error) : "no error recorded" })),
      el("small", { class: "meta", text: [
        "#" + item.item_id,
        meta.queue ? "from " + meta.queue : null,
        meta.attempts ? meta.attempts + " attempts" : null,
        meta.failed_at ? "failed " + E.date(meta.failed_at) + " (" + E.age(Date.now() - meta.failed_at * 1000) + " ago)" : null,
      ].filter(Boolean).join(" · ") }));
    if (meta.traceback) {
      li.append(el("details", { class: "traceback" }, el("summary", { text: "traceback" }), el("pre", { text: String(meta.traceback) })));
    }
    li.append(el("details", { class: "record" }, el("summary", { text: "record" }), E.itemBody(item)));
    if (isHead && E.writesAllowed()) {
      li.append(el("div", { class: "item-actions" },
        button("Retry", "retry", () => act(null, () => call(serverIndex, "POST", "/queues/" + q(queue) + "/retry", { item_id: item.item_id }),
          (r) => "Put job #" + item.item_id + " back on " + r.retried[0].to + ".")),
        button("Delete", "delete-item", () => act("Delete failed job #" + item.item_id + " for good?",
          () => call(serverIndex, "DELETE", "/queues/" + q(queue) + "/items/" + item.item_id), () => "Deleted failed job #" + item.item_id + "."), "danger")));
    }
    return li;
  }

  async function panel(serverIndex, queue, info) {
    const reply = await call(serverIndex, "GET", "/queues/" + q(queue) + "/items?limit=" + SHOWN);
    const where = servers.length > 1 ? " @ " + servers[serverIndex].name : "";
    const box = el("section", { class: "error-queue", dataset: { queue: queue, server: String(serverIndex) } },
      el("h3", {}, el("a", { href: "/dashboard/q/" + q(queue) + (serverIndex ? "?server=" + serverIndex : ""), text: queue + where }),
        " ", el("span", { class: "count", text: number(info.items) + (info.items === 1 ? " job" : " jobs") })));
    if (E.writesAllowed() && info.items) {
      box.append(el("div", { class: "toolbar" },
        button("Retry all", "retry-all", () => act("Put all " + number(info.items) + " jobs of " + queue + where + " back on the queues they failed on?",
          () => call(serverIndex, "POST", "/queues/" + q(queue) + "/retry", { all: true }),
          (r) => "Put " + number(r.retried.length) + " jobs back" + (r.remaining ? "; " + number(r.remaining) + " remain." : "."))),
        button("Delete all", "flush", () => act("Delete all " + number(info.items) + " failed jobs of " + queue + where + "? This cannot be undone.",
          () => call(serverIndex, "DELETE", "/q/" + q(queue)), (r) => "Deleted " + number(r.flushed) + " failed jobs from " + queue + where + "."), "danger")));
    }
    box.append(el("ol", { class: "records" }, ...reply.items.map((item, i) => record(item, serverIndex, queue, i === 0))));
    if (reply.total > reply.items.length) box.append(el("p", { class: "hint", text: "and " + number(reply.total - reply.items.length) + " more" }));
    return box;
  }

  async function refresh() {
    const panels = [];
    await Promise.all(servers.map(async (server, i) => {
      let snap;
      try { snap = await call(i, "GET", "/stats"); } catch (e) { return; }
      for (const [name, info] of Object.entries(snap.queues)) {
        if (name.endsWith("_errors")) panels.push(panel(i, name, info).catch(() => null));
      }
    }));
    const shown = (await Promise.all(panels)).filter(Boolean);
    // Open <details> stay open across a refresh.
    const open = new Set([...document.querySelectorAll("#error-queues details[open]")].map((d) =>
      d.closest("[data-item]").dataset.item + d.className));
    $("error-queues").replaceChildren(...shown);
    document.querySelectorAll("#error-queues details").forEach((d) => {
      if (open.has(d.closest("[data-item]").dataset.item + d.className)) d.open = true;
    });
    $("no-errors").hidden = shown.length > 0;
  }

  E.view({ refresh });
})();
