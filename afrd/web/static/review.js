// Review view: the recorder's captures by day, verdict, label and score; one part's lights,
// heatmap and metadata; labels good / defective (what `afrd train` reads); export a dataset.
"use strict";
(function () {
  let listed = [], openId = null;

  function query() {
    const p = new URLSearchParams();
    const add = (k, sel) => { const v = $(sel).value; if (v !== "") p.set(k, v); };
    add("day", "#f-day"); add("verdict", "#f-verdict"); add("label", "#f-label");
    add("min_score", "#f-min"); add("max_score", "#f-max"); add("product", "#f-product");
    return p.toString();
  }
  const labelName = (l) => l === 0 ? "good" : l === 1 ? "defective" : "—";

  async function load() {
    if (!afrd.info.review) { $("#review-empty").textContent = "Review is off: enable the recorder in the cell config."; return; }
    try {
      const d = await api("/api/captures?" + query());
      const day = $("#f-day"), keep = day.value;
      day.replaceChildren(...d.days.map((x) => el("option", { value: x }, x)));
      if (keep && d.days.includes(keep)) day.value = keep;
      const prod = $("#f-product"), keepP = prod.value;
      prod.replaceChildren(el("option", { value: "" }, "all"), ...d.products.map((x) => el("option", { value: x }, x)));
      prod.value = d.products.includes(keepP) ? keepP : "";
      listed = d.captures;
      $("#review-list tbody").replaceChildren(...listed.map(row));
      $("#review-empty").textContent = !listed.length ? "No captures match."
        : d.total > listed.length ? "the newest " + listed.length + " of " + d.total + " parts: narrow the filter to see the others"
        : listed.length + " parts";
    } catch (e) { $("#review-empty").textContent = e.message; }
  }

  function row(c) {
    const tr = el("tr", { "data-id": c.id, class: c.id === openId ? "sel" : "" },
      el("td", {}, (c.captured_at || "").slice(11, 19)), el("td", {}, c.part_id), el("td", {}, c.product),
      el("td", { class: c.verdict + "-t" }, c.verdict || "—"), el("td", {}, fmt(c.score)),
      el("td", { class: "label-cell" }, labelName(c.label)));
    tr.onclick = () => openCapture(c.id);
    return tr;
  }

  async function openCapture(id) {
    openId = id;
    for (const tr of document.querySelectorAll("#review-list tbody tr")) tr.classList.toggle("sel", tr.dataset.id === id);
    let c;
    try { c = await api("/api/capture?id=" + encodeURIComponent(id)); } catch (e) { toast(e.message, true); return; }
    const src = (name) => "/api/capture/file?id=" + encodeURIComponent(id) + "&name=" + encodeURIComponent(name);
    const imgs = c.lights.map((l) => el("figure", {}, el("img", { src: src(l), alt: l }), el("figcaption", {}, l)));
    if (c.heatmap) imgs.unshift(el("figure", { class: "heat" }, el("img", { src: src("heatmap"), alt: "heatmap" }), el("figcaption", {}, "heatmap")));
    const meta = c.doc;
    const kv = [["part", c.part_id], ["product", c.product], ["captured", c.captured_at], ["verdict", c.verdict],
      ["score", fmt(c.score)], ["threshold", fmt(c.threshold)], ["model", meta.model ? meta.model.name : "—"],
      ["label", labelName(c.label)], ["held out", meta.holdout ? "yes (validation, never trains)" : "no"], ["folder", id]];
    const btn = (text, lab, cls) => el("button", { class: "act " + cls, id: "label-" + lab, onclick: () => setLabel(id, lab) }, text);
    $("#detail").replaceChildren(
      el("h3", {}, c.part_id + " ", el("span", { class: "verdict-small " + c.verdict }, (c.verdict || "").toUpperCase())),
      el("div", { class: "buttons" }, btn("Good", "good", "good"), btn("Defective", "defective", "bad"), btn("Clear label", "clear", "")),
      el("div", { class: "lights small-lights" }, ...imgs),
      el("table", { class: "kv" }, ...kv.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", { id: "meta-" + k }, String(v))))));
  }
  window.openCapture = openCapture;

  async function setLabel(id, lab) {
    try {
      const r = await api("/api/label", { id, label: lab });
      toast(r.capture.part_id + " labelled " + labelName(r.capture.label));
      const i = listed.findIndex((c) => c.id === id);
      if (i >= 0) { listed[i].label = r.capture.label; $("#review-list tbody").children[i].querySelector(".label-cell").textContent = labelName(r.capture.label); }
      openCapture(id);
    } catch (e) { toast(e.message, true); }
  }

  async function exportSel() {
    const ids = listed.filter((c) => c.label === 0 || c.label === 1).map((c) => c.id);
    if (!ids.length) { toast("Nothing labelled among the parts shown", true); return; }
    try {
      const r = await api("/api/export", { ids, name: $("#export-name").value.trim() });
      const name = r.path.split("/").pop();
      $("#export-result").replaceChildren(r.exported + " sets (" + r.good + " good, " + r.defective + " defective) → " + r.path + " ",
        el("a", { href: "/api/export/download?name=" + encodeURIComponent(name), id: "export-download" }, "download .tar"));
      toast("Exported " + r.exported + " sets");
    } catch (e) { $("#export-result").textContent = e.message; toast(e.message, true); }
  }

  // Labelling many parts: j / k (or the arrows) move through the list, g good, d defective,
  // c clears; not while typing in a field.
  function keys(e) {
    if ($("#view-review").hidden || e.target.matches("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    const i = listed.findIndex((c) => c.id === openId);
    const go = (j) => { if (j >= 0 && j < listed.length) { openCapture(listed[j].id); $("#review-list tbody").children[j].scrollIntoView({ block: "nearest" }); } };
    const k = e.key;
    if (k === "j" || k === "ArrowDown") go(i + 1);
    else if (k === "k" || k === "ArrowUp") go(Math.max(0, i - 1));
    else if (openId && (k === "g" || k === "d" || k === "c")) setLabel(openId, { g: "good", d: "defective", c: "clear" }[k]);
    else return;
    e.preventDefault();
  }
  on("view", (v) => { if (v === "review") load(); });
  window.addEventListener("DOMContentLoaded", () => {
    $("#f-go").onclick = load; $("#export").onclick = exportSel;
    document.addEventListener("keydown", keys);
    for (const s of ["#f-day", "#f-product", "#f-verdict", "#f-label"]) $(s).addEventListener("change", load);
  });
})();
