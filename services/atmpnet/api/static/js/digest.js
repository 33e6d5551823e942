// Batch review digest: one batch by exception, from /api/v1/batches/{id}/digest; printable export.
"use strict";
const { el, when } = atmp;

function table(id, head, rows) {
  const node = document.getElementById(id);
  node.replaceChildren(el("thead", {}, el("tr", {}, head.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows.length ? rows : [el("tr", {}, el("td", { colspan: head.length, class: "none", text: "none" }))]));
}
const hours = (s) => (s === null || s === undefined ? "–" : (s / 3600).toFixed(1) + " h");

// The digest's boxes, titles and export stay hidden until a digest is drawn: after a 403, a
// 404 or without ?batch= the page shows the error alone.
async function render() {
  const batch = new URLSearchParams(location.search).get("batch");
  if (!batch) throw new Error("no batch given: open a digest from a batch link (/digest?batch=<id>)");
  const path = "/api/v1/batches/" + encodeURIComponent(batch) + "/digest";
  const d = await atmp.json(path);
  document.querySelector("h1").firstChild.textContent = "Batch review digest: " + d.batch_id + " ";
  const verdict = document.getElementById("verdict");
  verdict.textContent = d.verdict;
  verdict.dataset.exceptions = String(d.exceptions.length);
  verdict.className = "verdict " + (d.exceptions.length ? "review" : "clean");
  const facts = [["site", d.site_id], ["module / lane", (d.module_id || "–") + " / " + (d.lane ?? "–")],
    ["product", d.product_code], ["status", d.status], ["started (UTC)", when(d.started_at)], ["ended (UTC)", when(d.ended_at)]];
  document.getElementById("facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v || "–" })]));
  table("exceptions", ["when (UTC)", "kind", "severity", "what"], d.exceptions.map((x) => el("tr", { "data-kind": x.kind },
    el("td", { text: when(x.at) }), el("td", { text: x.kind }), el("td", {}, el("span", { class: "sev " + x.severity, text: x.severity })),
    el("td", { class: "wrap", text: x.summary }))));
  table("steps", ["step", "attempt", "module / lane", "started (UTC)", "ended (UTC)", "duration", "outcome", "performed by"],
    d.steps.map((s) => el("tr", {}, el("td", { text: s.step }), el("td", { text: String(s.attempt) }),
      el("td", { text: (s.module_id || "–") + " / " + (s.lane ?? "–") }), el("td", { text: when(s.started_at) }),
      el("td", { text: when(s.ended_at) }), el("td", { text: hours(s.duration_seconds) }),
      el("td", { text: s.outcome || "not ended" }), el("td", { text: s.performed_by.join(", ") || "–" }))));
  table("deviations", ["deviation", "severity", "class", "status", "raised (UTC)", "description"],
    d.deviations.map((v) => el("tr", {}, el("td", { text: v.deviation_id }),
      el("td", {}, el("span", { class: "sev " + v.severity, text: v.severity })), el("td", { text: v.deviation_class }),
      el("td", { text: v.status }), el("td", { text: when(v.raised_at) }), el("td", { class: "wrap", text: v.description }))));
  table("drift", ["module", "opened (UTC)", "closed (UTC)", "steps affected"], d.drift.map((r) => el("tr", {},
    el("td", { text: r.module_id }), el("td", { text: when(r.opened_at) }), el("td", { text: r.closed_at ? when(r.closed_at) : "open" }),
    el("td", { text: r.steps.map((s) => s[0] + (s[1] > 1 ? " #" + s[1] : "")).join(", ") }))));
  table("findings", ["kind", "severity", "module", "sequences", "message"], d.findings.map((f) => el("tr", {},
    el("td", { text: f.kind }), el("td", {}, el("span", { class: "sev " + f.severity, text: f.severity })),
    el("td", { text: f.module_id || "–" }), el("td", { text: f.sequences.join("–") || "–" }), el("td", { class: "wrap", text: f.message }))));
  document.getElementById("digest-body").hidden = false;
  document.getElementById("printable").addEventListener("click", async () => {
    try {
      const res = await atmp.api(path + ".html");
      const url = URL.createObjectURL(await res.blob());
      const a = el("a", { href: url, download: "digest-" + d.batch_id + ".html" });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) { atmp.showError(err); }
  });
}
atmp.start(render);
