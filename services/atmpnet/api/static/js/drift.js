// Configuration drift: site × module type × component matrix, intervals with their batches, skew.
"use strict";
const { el, num } = atmp;
const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
let seesDigest = true;   // operations may not open a digest (403): its batches link to the queue only

function showCell(cell, data) {
  const box = document.getElementById("cell-detail");
  box.hidden = false;
  document.getElementById("cell-title").textContent =
    `${cell.site_id} · ${cell.module_type} · ${cell.component}`;
  const mods = data.modules.filter((m) => m.site_id === cell.site_id && m.module_type === cell.module_type);
  const rows = mods.map((m) => { const c = m.components.find((x) => x.name === cell.component) || {};
    return el("tr", {}, el("td", { text: m.module_id }), el("td", { text: c.state || "–" }),
      el("td", { text: c.version || "–" }), el("td", { text: c.baseline_version || "–" })); });
  const links = cell.batches.map((b) => el("span", {},
    el("a", { href: "/triage?batch=" + encodeURIComponent(b), class: "batch-link", text: b }),
    seesDigest ? [" (", el("a", { href: "/digest?batch=" + encodeURIComponent(b), class: "digest-link", text: "digest" }), ")"] : null));
  document.getElementById("cell-body").replaceChildren(
    el("table", { class: "data" }, el("thead", {}, el("tr", {}, ["module", "state", "version", "baseline"].map((h) => el("th", { text: h })))),
      el("tbody", {}, rows)),
    el("p", { text: `Batches that ran while this component was drifted (${cell.batches.length}):` }),
    el("div", { class: "batches" }, links.flatMap((a) => [a, " "])));
}

async function render(me) {
  seesDigest = me.role !== "operations";
  const data = await atmp.json("/api/v1/drift");
  atmp.asOf(data.as_of);
  const drifted = data.modules.filter((m) => m.state === "DRIFTED").length;
  const affected = new Set(data.intervals.flatMap((i) => i.batches));
  document.getElementById("kpis").replaceChildren(
    atmp.kpi("modules", num(data.modules.length), "modules"),
    atmp.kpi("drifted now", num(drifted), "drifted", drifted ? "critical" : ""),
    atmp.kpi("drift intervals", num(data.intervals.length), "intervals"),
    atmp.kpi("batches run while drifted", num(affected.size), "affected_batches", affected.size ? "major" : ""));
  const sites = [...new Set(data.matrix.map((c) => c.site_id))].sort();
  const columns = [...new Set(data.matrix.map((c) => c.module_type + "|" + c.component))].sort();
  const byKey = new Map(data.matrix.map((c) => [c.site_id + "|" + c.module_type + "|" + c.component, c]));
  const types = [...new Set(columns.map((c) => c.split("|")[0]))];
  const head1 = el("tr", {}, el("th", { text: "" }), types.map((t) => el("th", { colspan: columns.filter((c) => c.startsWith(t + "|")).length, text: t })));
  const head2 = el("tr", {}, el("th", { class: "rowh", text: "site" }), columns.map((c) => el("th", { text: c.split("|")[1] })));
  const body = sites.map((s) => el("tr", {}, el("th", { class: "rowh", text: s }), columns.map((c) => {
    const cell = byKey.get(s + "|" + c);
    if (!cell) return el("td", { class: "cell none", text: "·" });
    const cls = cell.drifted ? "drifted" : cell.batches.length ? "past" : "ok";
    return el("td", { class: "cell " + cls, "data-site": s, "data-cell": c, "data-drifted": cell.drifted,
      title: `${cell.drifted}/${cell.modules} modules drifted now; ${cell.batches.length} batches ran while drifted; versions ${cell.versions.join(", ")}`,
      text: `${cell.drifted}/${cell.modules}` + (cell.batches.length ? ` · ${cell.batches.length}b` : ""),
      onclick: () => showCell(cell, data) });
  })));
  document.getElementById("matrix").replaceChildren(
    data.matrix.length ? el("table", {}, el("thead", {}, head1, head2), el("tbody", {}, body)) : el("p", { text: "No module configurations yet." }),
    el("div", { class: "legend" }, el("span", {}, el("i", { class: "sw ok" }), "in baseline"),
      el("span", {}, "red: drifted now · amber: drifted earlier (batches affected) · click a cell for its modules and batches")));
  // timeline of intervals per module
  const t0 = Math.min(...data.intervals.map((i) => Date.parse(i.opened_at)));
  const tEnd = Date.parse(data.as_of || new Date().toISOString());
  const modulesWithDrift = [...new Set(data.intervals.map((i) => i.site_id + " / " + i.module_id))];
  const tl = document.getElementById("timeline");
  if (modulesWithDrift.length && isFinite(t0)) {
    const NS = "http://www.w3.org/2000/svg", width = 1280, rowH = 18, left = 130, h = rowH * modulesWithDrift.length + 20;
    const root = document.createElementNS(NS, "svg"); root.setAttribute("viewBox", `0 0 ${width} ${h}`);
    const px = (t) => left + ((width - left - 10) * (t - t0)) / Math.max(tEnd - t0, 1);
    modulesWithDrift.forEach((m, i) => {
      const label = document.createElementNS(NS, "text"); label.setAttribute("x", 4); label.setAttribute("y", i * rowH + 13); label.textContent = m; root.append(label);
    });
    data.intervals.forEach((iv) => {
      const i = modulesWithDrift.indexOf(iv.site_id + " / " + iv.module_id);
      const r = document.createElementNS(NS, "rect");
      const x0 = px(Date.parse(iv.opened_at)), x1 = px(iv.closed_at ? Date.parse(iv.closed_at) : tEnd);
      for (const [k, v] of Object.entries({ x: x0, y: i * rowH + 3, width: Math.max(x1 - x0, 2), height: rowH - 6, fill: iv.closed_at ? "#f59e0b" : "#dc2626", rx: 3 })) r.setAttribute(k, v);
      const tt = document.createElementNS(NS, "title"); tt.textContent = `${iv.components.join(", ")}: ${atmp.when(iv.opened_at)} UTC → ${iv.closed_at ? atmp.when(iv.closed_at) + " UTC" : "open"}, ${plural(iv.batches.length, "batch", "batches")}`;
      r.append(tt); root.append(r);
    });
    tl.replaceChildren(root);
  } else tl.replaceChildren(el("p", { text: "No drift so far." }));
  document.getElementById("intervals").replaceChildren(
    el("thead", {}, el("tr", {}, ["site", "module", "type", "components", "opened (UTC)", "closed (UTC)", "batches"].map((h) => el("th", { text: h })))),
    el("tbody", {}, data.intervals.map((iv) => el("tr", {}, el("td", { text: iv.site_id }), el("td", { text: iv.module_id }),
      el("td", { text: iv.module_type }), el("td", { text: iv.components.join(", ") }), el("td", { text: atmp.when(iv.opened_at) }),
      el("td", { text: iv.closed_at ? atmp.when(iv.closed_at) : "open" }), el("td", { class: "num", text: num(iv.batches.length) })))));
  document.getElementById("skew").replaceChildren(
    el("thead", {}, el("tr", {}, ["module type", "component", "versions in use"].map((h) => el("th", { text: h })))),
    el("tbody", {}, data.version_skew.map((s) => el("tr", {}, el("td", { text: s.module_type }), el("td", { text: s.component }),
      el("td", { text: Object.entries(s.versions).map(([v, n]) => `${v} (${plural(n.sites, "site", "sites")}, ${plural(n.modules, "module", "modules")})`).join(" · ") })))));
}
atmp.start(render);
