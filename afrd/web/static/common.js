// Shared by the three views: the API, the event stream, tabs, the token, small helpers.
"use strict";
const afrd = {
  info: null,
  results: [],        // recent results, oldest first (the page server keeps the same ring)
  status: null,
  handlers: {},       // event name -> [fn]
  lastEvent: 0,
};

function $(sel) { return document.querySelector(sel); }
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e[k] = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}
function fmt(x, d = 4) { return x === null || x === undefined ? "—" : Number(x).toFixed(d); }
function on(event, fn) { (afrd.handlers[event] = afrd.handlers[event] || []).push(fn); }
function fire(event, data) { for (const fn of afrd.handlers[event] || []) fn(data); }

function toast(text, bad) {
  const t = $("#toast");
  t.textContent = text; t.className = "toast" + (bad ? " bad" : ""); t.hidden = false;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
}

function authHeaders() {
  const tok = sessionStorage.getItem("afrd-token");
  return tok ? { "Authorization": "Bearer " + tok } : {};
}

async function api(path, body) {
  const opts = body === undefined ? { headers: authHeaders() } : {
    method: "POST", body: JSON.stringify(body),
    headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
  };
  const r = await fetch(path, opts);
  let data;
  try { data = await r.json(); } catch (e) { data = { ok: false, error: r.status + " " + r.statusText }; }
  if (r.status === 401) { $("#lock").hidden = false; }
  if (!r.ok || data.ok === false) throw new Error(data.error || (r.status + " " + r.statusText));
  return data;
}

function showView(name) {
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + name;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on", a.dataset.view === name);
  fire("view", name);
}

function setBanner() {
  const b = $("#banner");
  const age = (Date.now() - afrd.lastEvent) / 1000;
  if (afrd.lastEvent && age > 4) {
    b.textContent = "Lost the connection to the page server (afrd web) " + Math.round(age) + " s ago — reconnecting…";
    b.hidden = false; return;
  }
  const lv = afrd.liveness;
  if (lv && !lv.up) {
    b.textContent = lv.heartbeat_age_s === null
      ? "No heartbeat from the daemon yet: is afrd running? (" + (afrd.info ? afrd.info.pub : "") + ")"
      : "NO HEARTBEAT from the daemon for " + Math.round(lv.heartbeat_age_s) + " s — inspection has stopped or the daemon is unreachable";
    b.hidden = false; return;
  }
  b.hidden = true;
}

function setLiveness(lv) { afrd.liveness = lv; setBanner(); fire("liveness", lv); }

function connect() {
  const es = new EventSource("/api/events");
  const touch = () => { afrd.lastEvent = Date.now(); };
  es.addEventListener("hello", (e) => { touch(); const s = JSON.parse(e.data); applySnapshot(s); });
  es.addEventListener("resync", async () => { touch(); applySnapshot(await api("/api/live")); });
  es.addEventListener("tick", (e) => { touch(); setLiveness(JSON.parse(e.data)); });
  es.addEventListener("liveness", (e) => { touch(); setLiveness(JSON.parse(e.data)); });
  es.addEventListener("status", (e) => {
    touch(); const d = JSON.parse(e.data); afrd.status = d.status; setLiveness(d.liveness); fire("status", d.status);
  });
  es.addEventListener("result", (e) => {
    touch(); const d = JSON.parse(e.data);
    afrd.results.push(d.result);
    if (afrd.results.length > 2000) afrd.results.shift();
    fire("result", d.result); fire("shift", d.shift);
  });
  es.addEventListener("heatmap", (e) => { touch(); fire("heatmap", JSON.parse(e.data)); });
  es.addEventListener("lights", (e) => { touch(); fire("lights", JSON.parse(e.data)); });
  es.addEventListener("capture", (e) => {
    touch(); const d = JSON.parse(e.data);
    // the newest result with that seq (seqs start again when the daemon restarts)
    const r = afrd.results.slice().reverse().find((x) => x.seq === d.seq);
    if (r) { r.capture = d.capture; d.result = r; }
    fire("capture", d);
  });
  es.onerror = () => setBanner();
}

function applySnapshot(s) {
  afrd.results = s.results;
  afrd.status = s.status;
  setLiveness(s.liveness);
  fire("snapshot", s);
  if (s.status) fire("status", s.status);
  fire("shift", s.shift);
}

async function start() {
  afrd.info = await api("/api/info");
  $("#cell").textContent = "cell " + afrd.info.cell;
  document.title = "afrd · " + afrd.info.cell;
  $("#lock").hidden = !(afrd.info.actions_need_token && !afrd.info.authorized);
  $("#unlock").onclick = async () => {
    sessionStorage.setItem("afrd-token", $("#token").value.trim());
    const i = await api("/api/info");
    if (i.authorized) { $("#lock").hidden = true; afrd.info = i; fire("info", i); toast("Actions unlocked"); }
    else toast("That token is not accepted", true);
  };
  fire("info", afrd.info);
  const go = () => showView((location.hash || "#live").slice(1));
  window.addEventListener("hashchange", go); go();
  connect();
  setInterval(setBanner, 1000);
}
window.addEventListener("DOMContentLoaded", () => start().catch((e) => toast(e.message, true)));
