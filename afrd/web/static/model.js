// Candidate model card: a shadow run (start, report, stop), promote and roll back, each the
// daemon's command of that name for the token's holder (engineers; an operator gets 403).
"use strict";
(function () {
  // The threshold view's product, when the config has [[product]] recipes.
  function product() { return $("#product-label").hidden ? "" : $("#thr-product").value; }
  function show(what, r) {
    const res = r.result || {};
    const lines = [what];
    if (res.model) lines.push("model " + res.model.name + (res.previous ? " (was " + res.previous.name + ")" : ""));
    if (res.compared !== undefined) {
      lines.push(res.compared + " parts compared, " + (res.skipped || 0) + " skipped; agreement " +
        (res.agreement === null || res.agreement === undefined ? "—" : (100 * res.agreement).toFixed(1) + "%") +
        "; " + (res.disagreements || []).length + " disagreements");
    }
    if (res.persisted) lines.push("saved to " + (res.config || "the cell config"));
    if (res.persist_error) lines.push("NOT saved: " + res.persist_error);
    $("#model-result").textContent = lines.join("\n");
  }
  async function run(what, path, body) {
    try { show(what, await api(path, body)); toast(what); }
    catch (e) { $("#model-result").textContent = what + " refused: " + e.message; toast(e.message, true); }
  }
  function withProduct(body) { const p = product(); if (p) body.product = p; return body; }
  // An operator's token may not run these (the daemon would answer 403): no card for it.
  on("info", (i) => { $("#model-card").hidden = i.role === "operator"; });
  window.addEventListener("DOMContentLoaded", () => {
    $("#shadow-start").onclick = () => {
      const bundle = $("#shadow-bundle").value.trim();
      if (!bundle) { toast("Enter the candidate bundle's directory", true); return; }
      run("shadow run started", "/api/shadow/start", withProduct({ bundle }));
    };
    $("#shadow-status").onclick = () => run("shadow run report", "/api/shadow/status");
    $("#shadow-stop").onclick = () => run("shadow run stopped", "/api/shadow/stop", {});
    $("#promote").onclick = () => run("promoted", "/api/promote", { persist: $("#model-persist").checked });
    $("#rollback").onclick = () => run("rolled back", "/api/rollback", withProduct({ persist: $("#model-persist").checked }));
  });
})();
