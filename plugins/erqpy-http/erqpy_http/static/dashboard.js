// erqpy dashboard, shared by every view: the page's configuration, formatting, calls to
// the JSON API (this server's, and each peer's through /peers/N), action messages, and
// the update loop.  A view script registers itself with erqpy.view({refresh, onStats}).
// No framework, no build step; uPlot (static/VENDORED.md) draws the charts.
"use strict";

window.erqpy = (function () {
  const config = JSON.parse(document.getElementById("erqpy-config").textContent);
  const servers = config.servers;            // [{name, base}], index = data-server
  const $ = (id) => document.getElementById(id);
  const state = { paused: false, timer: null, view: null, socket: null, pushed: 0 };

  // -- formatting -----------------------------------------------------------------------
  const number = (n) => (typeof n === "number" ? n.toLocaleString("en-US", { maximumFractionDigits: 1 }) : (n == null ? "-" : String(n)));
  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }
  function age(ms) {
    if (!ms) return "0 s";
    if (ms < 1000) return Math.round(ms) + " ms";
    const s = ms / 1000;
    if (s < 120) return s.toFixed(1) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }
  const date = (unixSeconds) => new Date(unixSeconds * 1000).toLocaleString("en-GB");
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "dataset") Object.assign(node.dataset, v);
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  // Pretty-printed, highlighted JSON as DOM nodes (never innerHTML): keys, strings,
  // numbers, literals; a number under a key ending in "_at" that looks like Unix seconds
  // gets its date and age beside it.
  const TOKEN = /("(?:\\u[a-fA-F0-9]{4}|\\[^u]|[^\\"])*")(\s*:)?|\b(true|false|null)\b|-?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?/g;
  function jsonView(value) {
    const text = JSON.stringify(value, null, 2);
    const pre = el("pre", { class: "json" });
    let last = 0, key = "";
    for (const m of text.matchAll(TOKEN)) {
      pre.append(text.slice(last, m.index));
      last = m.index + m[0].length;
      if (m[1] && m[2]) { key = JSON.parse(m[1]); pre.append(el("span", { class: "k", text: m[1] }), m[2]); continue; }
      const kind = m[1] ? "s" : m[3] ? "b" : "n";
      pre.append(el("span", { class: kind, text: m[0] }));
      const n = Number(m[0]);
      if (kind === "n" && /_at$/.test(key) && n > 1e9 && n < 1e11) {
        pre.append(el("span", { class: "c", text: "  // " + date(n) + ", " + age(Date.now() - n * 1000) + " ago" }));
      }
      key = "";
    }
    pre.append(text.slice(last));
    return pre;
  }
  function itemBody(item) {
    if (item.job !== undefined) return jsonView(item.job);
    if (item.text !== undefined) return el("pre", { text: item.text + (item.truncated ? " ..." : "") });
    return el("pre", { class: "binary", text: "base64: " + item.data_base64 });
  }
  function itemMeta(item) {
    const parts = ["#" + item.item_id, bytes(item.bytes), "added " + date(item.added_at) + " (" + age(item.age_ms) + " ago)"];
    if (item.priority !== undefined && item.priority !== 5) parts.push("priority " + item.priority);
    if (item.expires_at) parts.push("expires " + date(item.expires_at));
    if (item.deliveries) parts.push("delivered " + item.deliveries + (item.deliveries === 1 ? " time" : " times"));
    return el("small", { class: "meta", text: parts.join(" · ") });
  }

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
      const error = new Error(data && data.error ? data.error : reply.status + " " + reply.statusText);
      error.status = reply.status;
      throw error;
    }
    return data;
  }
  const q = (name) => encodeURIComponent(name);

  // -- actions and their messages -------------------------------------------------------
  // A message stays until the next action: an error is not left behind by a success.
  function say(text, isError) {
    const box = $("message");
    box.textContent = text;
    box.className = isError ? "error" : "ok";
    box.hidden = false;
  }
  // Run one action: ask first when `question` is given, then say what happened in words.
  async function act(question, work, done) {
    if (question && !window.confirm(question)) return false;
    try {
      const reply = await work();
      say(done(reply));
    } catch (e) {
      say(e.message.charAt(0).toUpperCase() + e.message.slice(1), true);
    }
    await refresh();
    return true;
  }
  function button(label, action, handler, kind) {
    const b = el("button", { type: "button", class: kind || null, dataset: { action: action }, text: label });
    b.addEventListener("click", handler);
    return b;
  }
  function writesAllowed() { return !config.read_only; }

  // -- the update loop: WebSocket pushes of /stats where the server has /ws, else polling --
  async function refresh() {
    if (!state.view) return;
    try {
      await state.view.refresh();
      $("last-update").textContent = "updated " + new Date().toLocaleTimeString("en-GB");
    } catch (e) {
      $("last-update").textContent = "update failed: " + e.message;
    }
  }
  function schedule() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
    if (!state.paused) state.timer = setInterval(refresh, Number($("refresh-interval").value) * 1000);
  }
  function connectLive() {
    if (!state.view || !state.view.onStats || !("WebSocket" in window)) return;
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
    let socket;
    try { socket = new WebSocket(url); } catch (e) { return; }
    socket.addEventListener("message", (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (message.type !== "stats" || state.paused) return;
      state.pushed += 1;
      $("live").textContent = "live";
      $("live").className = "on";
      state.view.onStats(0, message.body);
    });
    socket.addEventListener("close", () => {
      state.socket = null;
      $("live").textContent = "polling";
      $("live").className = "";
    });
    state.socket = socket;
  }
  function live() { return state.socket !== null && state.socket.readyState === 1 && state.pushed > 0; }

  function view(definition) {
    state.view = definition;
    if (config.read_only) document.querySelectorAll(".writes").forEach((node) => { node.hidden = true; });
    refresh();
    schedule();
    connectLive();
  }

  $("refresh-interval").addEventListener("change", schedule);
  $("refresh-toggle").addEventListener("click", () => {
    state.paused = !state.paused;
    $("refresh-toggle").textContent = state.paused ? "Resume updates" : "Pause updates";
    $("refresh-toggle").classList.toggle("active", state.paused);
    schedule();
  });
  const tokenBox = $("token");
  if (tokenBox) {
    tokenBox.value = sessionStorage.getItem("erqpy-token") || "";
    tokenBox.addEventListener("change", () => sessionStorage.setItem("erqpy-token", tokenBox.value));
  }

  return {
    config, servers, $, el, number, bytes, age, date, jsonView, itemBody, itemMeta, call, q, say, act, button,
    writesAllowed, view, refresh, live,
  };
})();
