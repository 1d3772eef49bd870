// Live view: the last part in large type, its heatmap and lights, the strip, shift counts.
"use strict";
(function () {
  let shown = null; // the result on screen
  const previews = new Map(); // seq -> tiles of the daemon's lights mosaic ([lights_preview])

  function showPart(r) {
    shown = r;
    const v = $("#verdict");
    v.textContent = r.verdict.toUpperCase(); v.className = "verdict " + r.verdict;
    v.dataset.seq = r.seq;
    $("#score").textContent = "score " + fmt(r.score);
    $("#thr").textContent = r.threshold === null ? "" : "threshold " + fmt(r.threshold);
    let part = "#" + r.seq + " · " + r.part_id + " · " + r.product + " · " + r.timestamp.replace("T", " ").slice(0, 19);
    if (r.verdict === "error") part += " · [" + r.error.code + "] " + r.error.message;
    $("#part").textContent = part;
    const l = r.latency_ms || {};
    $("#lat").textContent = l.total ? "acquire " + fmt(l.acquire, 1) + " ms · infer " + fmt(l.infer, 1) + " ms · total " + fmt(l.total, 1) + " ms" : "";
    $("#heatmap").removeAttribute("src"); $("#heat-note").textContent = r.verdict === "error" ? "no heatmap for an error" : "waiting for the heatmap…";
    showLights(r.capture || null, r);
  }

  function showLights(cid, r) {
    const box = $("#lights"); box.replaceChildren();
    const p = r ? previews.get(r.seq) : null;
    if (!cid && p) { // every part's lights, small, from the daemon's lights topic
      $("#lights-note").textContent = "(preview " + p.tile_width + "×" + p.tile_height + " px)";
      const src = "/api/lights/" + r.seq + ".jpg";
      p.lights.forEach((light, i) => {
        const x = (i % p.columns) * p.tile_width, y = Math.floor(i / p.columns) * p.tile_height;
        const tile = el("div", { class: "tile", role: "img", "aria-label": light, "data-light": light,
          style: "background-image:url('" + src + "');background-position:-" + x + "px -" + y + "px;width:" + p.tile_width + "px;height:" + p.tile_height + "px" });
        box.append(el("figure", {}, tile, el("figcaption", {}, light)));
      });
      return;
    }
    if (!cid) {
      $("#lights-note").textContent = !afrd.info.review ? "(the recorder is off: lights are kept only for recorded parts)"
        : r && r.verdict === "error" ? "" : "(not recorded: the recorder keeps every fail and a sample of passes)";
      return;
    }
    $("#lights-note").textContent = "(" + cid + ")";
    api("/api/capture?id=" + encodeURIComponent(cid)).then((c) => {
      if (shown !== r) return;
      for (const light of c.lights) {
        box.append(el("figure", {}, el("img", { src: "/api/capture/file?id=" + encodeURIComponent(cid) + "&name=" + encodeURIComponent(light), alt: light }), el("figcaption", {}, light)));
      }
    }).catch(() => {});
  }

  function chip(r) {
    const c = el("span", { class: "chip " + r.verdict, title: r.part_id + " · " + r.verdict + " · " + fmt(r.score), "data-seq": r.seq },
      el("b", {}, r.verdict === "error" ? "ERR" : r.verdict.toUpperCase()), el("i", {}, r.score === null ? r.error.code : fmt(r.score, 3)));
    c.onclick = () => { if (r.capture) { location.hash = "#review"; window.openCapture(r.capture); } else showPart(r); };
    return c;
  }

  function drawStrip() {
    const n = afrd.info ? afrd.info.strip : 30;
    $("#strip").replaceChildren(...afrd.results.slice(-n).reverse().map(chip));
  }

  function showShift(s) {
    if (!s) return;
    $("#yield").textContent = s.yield === null ? "—" : (100 * s.yield).toFixed(1) + "%";
    $("#n-pass").textContent = s.pass; $("#n-fail").textContent = s.fail; $("#n-error").textContent = s.error;
    $("#shift-since").textContent = "since " + s.since.replace("T", " ") + (s.since_page_start ? " (page started)" : "");
    $("#missed").textContent = s.missed ? s.missed + " results missed by the page (seq gaps)" : "";
  }

  function showStatus(st) {
    const pill = $("#daemon");
    pill.textContent = st.state; pill.className = "pill " + st.state;
    $("#model").textContent = (st.model ? st.model.name || "" : "") + (st.threshold !== undefined && st.threshold !== null ? " · threshold " + fmt(st.threshold) : "");
    const rows = [["state", st.state], ["model", st.model ? st.model.name : "—"], ["threshold", fmt(st.threshold)],
      ["parts", Object.entries(st.parts || {}).map(([k, v]) => k + " " + v).join(" · ")],
      ["queues", Object.entries(st.queues || {}).map(([k, v]) => k + " " + v).join(" · ")]];
    $("#daemon-kv").replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, String(v)))));
    showDrift(st.drift);
  }

  // the daemon's drift watch, from the heartbeat's status: one row per product
  function showDrift(drift) {
    const rows = Object.entries(drift || {}).map(([product, d]) => {
      const state = d.warning ? "WARNING: " + d.warning : d.note ? d.note : d.psi === null ? "collecting" : "ok";
      const pct = (x) => x === null ? "—" : (100 * x).toFixed(1) + "%";
      return el("tr", { "data-product": product, class: d.warning ? "warn" : "" },
        el("td", {}, product), el("td", {}, d.model.name || d.model.sha256.slice(0, 12)),
        el("td", {}, d.passed + " / " + d.window), el("td", {}, fmt(d.psi, 3)),
        el("td", {}, pct(d.frr_implied) + (d.frr_factor === null ? "" : " (" + fmt(d.frr_factor, 2) + "×)")),
        el("td", {}, pct(d.frr_calibrated)), el("td", { class: "drift-state" }, state));
    });
    $("#drift tbody").replaceChildren(...rows);
    const warned = rows.filter((r) => r.classList.contains("warn")).length;
    $("#drift-note").textContent = !rows.length ? (drift ? "no parts judged yet" : "the drift watch is off ([drift] enabled = false)")
      : warned ? warned + " product(s) drifting: check lighting and optics, or recalibrate" : "";
    $("#drift-card").classList.toggle("warn", warned > 0);
    // on every view: a drifting product is the operator's to see before the rejects pile up
    const warnings = Object.entries(drift || {}).filter(([, d]) => d.warning);
    const banner = $("#drift-banner");
    banner.textContent = warnings.map(([p, d]) => "Drift, product " + p + ": " + d.warning).join(" · ");
    banner.hidden = !warnings.length;
  }

  on("liveness", (lv) => {
    if (!lv.up) { const p = $("#daemon"); p.textContent = "no heartbeat"; p.className = "pill down"; }
    else if (afrd.status) showStatus(afrd.status);
  });
  on("snapshot", (s) => { previews.clear(); for (const [k, v] of Object.entries(s.lights || {})) previews.set(Number(k), v); drawStrip(); if (s.results.length) { const r = s.results[s.results.length - 1]; showPart(r); if (s.heatmap_seqs.includes(r.seq)) showHeat(r.seq); } });
  on("result", (r) => { previews.delete(r.seq); showPart(r); drawStrip(); }); // its lights follow it
  on("shift", showShift);
  on("status", showStatus);
  function showHeat(seq) { const img = $("#heatmap"); img.src = "/api/heatmap/" + seq + ".png"; img.dataset.seq = seq; $("#heat-note").textContent = ""; }
  on("heatmap", (h) => { if (shown && h.seq === shown.seq) showHeat(h.seq); });
  on("lights", (p) => {
    previews.set(p.seq, p); if (previews.size > 64) previews.delete(previews.keys().next().value);
    if (shown && p.seq === shown.seq && !shown.capture) showLights(null, shown);
  });
  on("capture", (d) => { if (d.result && d.result === shown) showLights(d.capture, d.result); });
  async function act(cmd) {
    try { await api("/api/" + cmd, {}); toast(cmd === "pause" ? "Paused: triggers are published as error/paused" : "Resumed"); }
    catch (e) { toast(cmd + ": " + e.message, true); }
  }
  window.addEventListener("DOMContentLoaded", () => { $("#pause").onclick = () => act("pause"); $("#resume").onclick = () => act("resume"); });
})();
