// Consumers (/dashboard/consumers): who holds reliable reads, on which queue, for how
// long; and the readers blocked waiting on each queue.  From GET /consumers per server.
"use strict";

(function () {
  const E = window.erqpy;
  const { $, el, number, age, call, q, servers } = E;
  const link = (queue, i) => el("a", { href: "/dashboard/q/" + q(queue) + (i ? "?server=" + i : ""), text: queue });

  async function refresh() {
    const replies = await Promise.all(servers.map((s, i) => call(i, "GET", "/consumers").catch(() => null)));
    const holders = [], blocked = [];
    replies.forEach((reply, i) => {
      if (!reply) return;
      for (const h of reply.holders) {
        for (const r of h.queues) {
          holders.push(el("tr", { dataset: { queue: r.queue, address: h.address } },
            el("td", { text: servers[i].name }), el("td", { text: h.address + (h.kind === "http" ? "" : ` (${h.kind})`) }),
            el("td", {}, link(r.queue, i)), el("td", { dataset: { field: "count" }, text: number(r.count) }),
            el("td", { dataset: { field: "held" }, text: age(r.held_ms) })));
        }
      }
      for (const b of reply.blocked) {
        for (const reader of b.readers) {
          blocked.push(el("tr", { dataset: { queue: b.queue } },
            el("td", { text: servers[i].name }),
            el("td", {}, b.exists === false ? el("span", { text: b.queue + " (not created yet)" }) : link(b.queue, i)),
            el("td", { text: reader.address }), el("td", { text: age(reader.waiting_ms) })));
        }
      }
    });
    document.querySelector("#holders tbody").replaceChildren(...holders);
    document.querySelector("#blocked tbody").replaceChildren(...blocked);
    $("no-holders").hidden = holders.length > 0;
    $("no-blocked").hidden = blocked.length > 0;
  }

  E.view({ refresh });
})();
