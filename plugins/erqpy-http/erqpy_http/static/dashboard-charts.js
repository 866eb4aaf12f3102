// Throughput and depth charts over GET /history (uPlot): time axis, value axis, legend
// with the values under the cursor, one window of 5 min, 1 h or 24 h.
"use strict";

window.erqpy.charts = (function () {
  const { $, call, q } = window.erqpy;
  const drawn = {};  // container id -> uPlot instance
  const SECONDS = { "5m": 300, "1h": 3600, "24h": 86400 };
  let span = [0, 1];  // the x range of the charts drawn last: [now - window, now]

  function size(box) { return { width: Math.max(box.clientWidth, 200), height: 180 }; }

  function draw(id, title, times, series) {
    const box = $(id);
    const data = [times, ...series.map((s) => s.values)];
    box.dataset.points = String(times.length);
    const existing = drawn[id];
    if (existing && existing.series.length === series.length + 1) {
      existing.setData(data);  // rescales x through its range function: the new span
      return;
    }
    if (existing) existing.destroy();
    const options = Object.assign(size(box), {
      title: title,
      series: [{ label: "time" }, ...series.map((s) => ({
        label: s.label, stroke: s.color, width: 1.5, fill: s.fill || undefined,
        value: (u, v) => (v == null ? "-" : v.toLocaleString("en-US", { maximumFractionDigits: 2 })),
      }))],
      axes: [{}, { size: 56 }],
      scales: {
        // The x axis spans the whole window chosen, whatever the points so far cover.
        x: { time: true, range: () => span },
        y: { range: (u, min, max) => [0, Math.max(max || 0, 1)] },
      },
    });
    drawn[id] = new window.uPlot(options, data, box);
  }

  window.addEventListener("resize", () => {
    for (const [id, chart] of Object.entries(drawn)) chart.setSize(size($(id)));
  });

  // Fetch one window of history from server `serverIndex` (all queues, or `queue`) and draw.
  async function update(serverIndex, queue) {
    const windowName = $("window").value;
    let path = "/history?window=" + windowName;
    if (queue) path += "&queue=" + q(queue);
    const h = await call(serverIndex, "GET", path);
    const end = h.t.length ? h.t[h.t.length - 1] : Date.now() / 1000;
    span = [end - SECONDS[windowName], end];
    draw("chart-rates", "Items per second", h.t, [
      { label: "in", color: "#1e88e5", values: h.in },
      { label: "out", color: "#43a047", values: h.out },
    ].concat(queue ? [] : [{ label: "to error queues", color: "#e53935", values: h.failed }]));
    draw("chart-depth", "Depth and open reads", h.t, [
      { label: "depth", color: "#6d4c41", fill: "rgba(109,76,65,.08)", values: h.depth },
      { label: "open reads", color: "#fb8c00", values: h.open },
    ]);
    return h;
  }

  return { update };
})();
