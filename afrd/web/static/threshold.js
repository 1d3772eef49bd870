// Threshold view: histogram of recent scores by verdict, a draggable proposed threshold,
// how many recent parts it would flip, and Apply (set_threshold, optionally persisted).
"use strict";
(function () {
  let proposed = null, axis = null, dragging = false;
  const PAD = { l: 50, r: 20, t: 16, b: 34 };

  // With [[product]] recipes each product has its own threshold: the view shows one product.
  function product() { return $("#product-label").hidden ? "" : $("#thr-product").value; }
  function running() {
    const st = afrd.status, p = product();
    if (p && st && st.recipes && st.recipes[p]) return st.recipes[p].threshold;
    if (st && st.threshold !== undefined && st.threshold !== null) return st.threshold;
    const last = afrd.results.filter((r) => r.threshold !== null).pop();
    return last ? last.threshold : null;
  }
  function scored() {
    const p = product();
    return afrd.results.filter((r) => r.score !== null && r.verdict !== "error" && (!p || r.product === p));
  }

  function effect(t) {
    let toFail = 0, toPass = 0;
    const rs = scored();
    for (const r of rs) {
      const fails = r.score > t;
      if (fails && r.verdict === "pass") toFail++;
      if (!fails && r.verdict === "fail") toPass++;
    }
    const nFail = rs.filter((r) => r.score > t).length;
    return { toFail, toPass, n: rs.length, nFail };
  }

  function draw() {
    const cv = $("#hist"), ctx = cv.getContext("2d");
    const W = cv.width, H = cv.height, rs = scored(), cur = running();
    ctx.clearRect(0, 0, W, H);
    $("#hist-n").textContent = rs.length;
    const vals = rs.map((r) => r.score);
    if (cur !== null) vals.push(cur);
    if (proposed !== null) vals.push(proposed);
    if (!vals.length) { ctx.fillStyle = "#888"; ctx.font = "16px sans-serif"; ctx.fillText("no scored parts yet", W / 2 - 70, H / 2); axis = null; return; }
    let lo = Math.min(...vals), hi = Math.max(...vals);
    if (axis && dragging) { lo = axis.lo; hi = axis.hi; } else {
      const span = (hi - lo) || Math.abs(hi) || 1; lo -= 0.08 * span; hi += 0.08 * span;
    }
    axis = { lo, hi };
    const bins = 40, pw = W - PAD.l - PAD.r, ph = H - PAD.t - PAD.b;
    const pass = new Array(bins).fill(0), fail = new Array(bins).fill(0);
    for (const r of rs) {
      const i = Math.min(bins - 1, Math.max(0, Math.floor((r.score - lo) / (hi - lo) * bins)));
      (r.verdict === "fail" ? fail : pass)[i]++;
    }
    const top = Math.max(1, ...pass.map((p, i) => p + fail[i]));
    const bw = pw / bins;
    for (let i = 0; i < bins; i++) {
      const hp = pass[i] / top * ph, hf = fail[i] / top * ph, x = PAD.l + i * bw;
      ctx.fillStyle = "#2e9d57"; ctx.fillRect(x + 1, PAD.t + ph - hp, bw - 2, hp);
      ctx.fillStyle = "#d0342c"; ctx.fillRect(x + 1, PAD.t + ph - hp - hf, bw - 2, hf);
    }
    ctx.strokeStyle = "#999"; ctx.beginPath(); ctx.moveTo(PAD.l, PAD.t + ph); ctx.lineTo(PAD.l + pw, PAD.t + ph); ctx.stroke();
    ctx.fillStyle = "#bbb"; ctx.font = "13px sans-serif";
    for (let k = 0; k <= 5; k++) { const v = lo + (hi - lo) * k / 5; ctx.fillText(v.toFixed(3), PAD.l + pw * k / 5 - 18, H - 12); }
    ctx.fillText(String(top), 8, PAD.t + 10); ctx.fillText("0", 8, PAD.t + ph);
    const line = (t, colour, dash, label) => {
      const x = toX(t); ctx.save(); ctx.strokeStyle = colour; ctx.lineWidth = 3; ctx.setLineDash(dash);
      ctx.beginPath(); ctx.moveTo(x, PAD.t); ctx.lineTo(x, PAD.t + ph); ctx.stroke(); ctx.restore();
      ctx.fillStyle = colour; ctx.fillText(label + " " + t.toFixed(4), Math.min(x + 5, W - 150), PAD.t + 14 + (dash.length ? 18 : 0));
    };
    if (cur !== null) line(cur, "#e8e8e8", [], "running");
    if (proposed !== null) line(proposed, "#f5b700", [10, 6], "proposed");
  }
  function toX(t) { const pw = $("#hist").width - PAD.l - PAD.r; return PAD.l + (t - axis.lo) / (axis.hi - axis.lo) * pw; }
  function fromEvent(e) {
    const cv = $("#hist"), rect = cv.getBoundingClientRect();
    const x = (e.clientX - rect.left) * cv.width / rect.width;
    const pw = cv.width - PAD.l - PAD.r;
    const f = Math.min(1, Math.max(0, (x - PAD.l) / pw));
    return axis.lo + f * (axis.hi - axis.lo);
  }

  function setProposed(t, fromInput) {
    proposed = t;
    if (!fromInput) $("#thr-input").value = Number(t.toPrecision(6));
    const e = effect(t), cur = running();
    const now = cur === null ? null : effect(cur);
    $("#thr-effect").textContent = e.n === 0 ? "" :
      (e.toFail + e.toPass) + " of " + e.n + " recent parts would change verdict (" + e.toFail + " pass→fail, " + e.toPass +
      " fail→pass); " + (100 * e.nFail / e.n).toFixed(1) + "% would fail" + (now ? " (now " + (100 * now.nFail / now.n).toFixed(1) + "%)" : "");
    $("#thr-effect").dataset.changes = e.toFail + e.toPass;
    draw();
  }

  async function apply() {
    const t = parseFloat($("#thr-input").value);
    if (!Number.isFinite(t)) { toast("Enter a number for the threshold", true); return; }
    const body = { threshold: t, persist: $("#persist").checked };
    const prod = product(); if (prod) body.product = prod;
    try {
      const r = await api("/api/threshold", body);
      const res = r.result || {};
      const saved = res.persisted ? "; saved to " + (res.config || "the cell config") : body.persist ? "; NOT saved: " + (res.persist_error || "the daemon did not persist it") : " (not saved: a restart goes back to the config)";
      $("#apply-result").textContent = "threshold " + fmt(res.threshold) + " applied from the next part" + saved;
      $("#apply-result").dataset.applied = res.threshold;
      toast("Threshold " + fmt(res.threshold) + " applied");
    } catch (e) { $("#apply-result").textContent = "refused: " + e.message; toast(e.message, true); }
  }

  function setProducts(names, selected) {
    const sel = $("#thr-product");
    if (!names.length || [...sel.options].map((o) => o.value).join() === names.join()) return;
    sel.replaceChildren(...names.map((p) => el("option", { value: p }, p)));
    if (selected && names.includes(selected)) sel.value = selected;
    $("#product-label").hidden = false;
  }
  on("info", (i) => setProducts(i.products || [], null));
  on("status", (st) => setProducts(Object.keys(st.recipes || {}), st.default_product));
  on("view", (v) => { if (v === "threshold") { if (proposed === null && running() !== null) setProposed(running()); else draw(); } });
  const redraw = () => { if (!$("#view-threshold").hidden && !dragging) { if (proposed !== null) setProposed(proposed, true); else draw(); } };
  on("result", redraw); on("snapshot", redraw);
  window.addEventListener("DOMContentLoaded", () => {
    const cv = $("#hist");
    cv.addEventListener("pointerdown", (e) => { if (!axis) return; dragging = true; cv.setPointerCapture(e.pointerId); setProposed(fromEvent(e)); });
    cv.addEventListener("pointermove", (e) => { if (dragging) setProposed(fromEvent(e)); });
    const end = () => { dragging = false; draw(); };
    cv.addEventListener("pointerup", end); cv.addEventListener("pointercancel", end);
    $("#thr-input").addEventListener("input", () => { const t = parseFloat($("#thr-input").value); if (Number.isFinite(t)) setProposed(t, true); });
    $("#apply").onclick = apply;
    $("#thr-product").addEventListener("change", () => { proposed = null; const t = running(); if (t !== null) setProposed(t); else draw(); });
  });
})();
