// Network overview: capacity per site, lane states, utilization, batches in progress, forecast.
"use strict";
const STEPS = ["APHERESIS_RECEIPT", "SELECTION", "ACTIVATION", "TRANSDUCTION", "EXPANSION", "HARVEST",
  "FORMULATION", "CRYOPRESERVATION", "QC_RELEASE"];
const { el, num, pct } = atmp;

async function render() {
  const cap = await atmp.json("/api/v1/capacity");
  atmp.asOf(cap.as_of);
  const t = cap.totals || { lanes: 0, busy: 0, idle: 0, down: 0, in_progress: 0, headroom: 0 };
  document.getElementById("kpis").replaceChildren(
    atmp.kpi("lanes", num(t.lanes), "lanes"), atmp.kpi("busy", num(t.busy), "busy"),
    atmp.kpi("idle (headroom)", num(t.idle), "idle"), atmp.kpi("down", num(t.down), "down", t.down ? "critical" : ""),
    atmp.kpi("batches in progress", num(t.in_progress), "in_progress"));
  const sites = cap.sites.map((s) => s.site_id);
  charts.bars(document.getElementById("lane-states"), {
    categories: sites, stacked: true,
    series: [{ name: "busy", color: "#2563eb", values: cap.sites.map((s) => s.busy) },
      { name: "idle", color: "#10b981", values: cap.sites.map((s) => s.idle) },
      { name: "down", color: "#dc2626", values: cap.sites.map((s) => s.down) }], empty: "No lanes reported yet" });
  const days = [...new Set(cap.forecast.map((f) => f.date))];
  charts.lines(document.getElementById("forecast"), {
    x: days.map((d) => d.slice(5)),
    series: sites.map((s, i) => ({ name: s, color: charts.color(i),
      values: days.map((d) => { const f = cap.forecast.find((r) => r.site_id === s && r.date === d); return f ? f.free_lanes : null; }) })),
    empty: "No forecast yet" });
  const udays = [...new Set(cap.daily.map((d) => d.date))];
  charts.lines(document.getElementById("utilization"), {
    x: udays.map((d) => d.slice(5)), max: 1, fmt: (v) => pct(v, 0), width: 1280, height: 240,
    series: sites.map((s, i) => ({ name: s, color: charts.color(i),
      values: udays.map((d) => { const r = cap.daily.find((x) => x.site_id === s && x.date === d); return r ? r.utilization : null; }) })),
    empty: "No utilization yet" });
  const steps = STEPS.filter((st) => cap.in_progress.some((r) => r.step === st));
  charts.bars(document.getElementById("in-progress"), {
    categories: steps.map((s) => s.replace("_", " ").toLowerCase()), stacked: true,
    series: sites.map((s, i) => ({ name: s, color: charts.color(i),
      values: steps.map((st) => { const r = cap.in_progress.find((x) => x.site_id === s && x.step === st); return r ? r.batches : 0; }) })),
    empty: "No batches in progress" });
  const sum = (key, d) => cap.daily.filter((x) => x.date === d).reduce((a, x) => a + x[key], 0);
  charts.bars(document.getElementById("throughput"), {
    categories: udays.map((d) => d.slice(5)),
    series: [{ name: "starts", color: "#2563eb", values: udays.map((d) => sum("starts", d)) },
      { name: "completions", color: "#10b981", values: udays.map((d) => sum("completions", d)) },
      { name: "failures", color: "#dc2626", values: udays.map((d) => sum("failures", d)) }], empty: "No batch activity yet" });
  const table = document.getElementById("site-table");
  table.replaceChildren(
    el("thead", {}, el("tr", {}, ["site", "lanes", "busy", "idle", "down", "utilization 7 d", "in progress", "free lanes in 7 d"]
      .map((h, i) => el("th", { class: i ? "num" : null, text: h })))),
    el("tbody", {}, cap.sites.map((s) => {
      const last = cap.forecast.filter((f) => f.site_id === s.site_id && f.day === 7)[0];
      const cell = (metric, text) => el("td", { class: "num", "data-site": s.site_id, "data-metric": metric, text });
      return el("tr", {}, el("td", { text: s.site_id }), cell("lanes", num(s.lanes)), cell("busy", num(s.busy)),
        cell("idle", num(s.idle)), cell("down", num(s.down)), cell("utilization_7d", pct(s.utilization_7d)),
        cell("in_progress", num(s.in_progress)), cell("free_lanes_day7", last ? num(last.free_lanes) : "–"));
    })));
  const comp = await atmp.json("/api/v1/completeness");
  document.getElementById("completeness-table").replaceChildren(
    el("thead", {}, el("tr", {}, ["site", "expected", "received", "received %", "on time %", "findings", "in flight"]
      .map((h, i) => el("th", { class: i ? "num" : null, text: h })))),
    el("tbody", {}, comp.sites.map((c) => {
      const n = Object.values(c.findings).reduce((a, x) => a + x, 0);
      const cell = (metric, text, cls) => el("td", { class: "num " + (cls || ""), "data-site": c.site_id, "data-metric": metric, text });
      return el("tr", {}, el("td", { text: c.site_id }), cell("expected", num(c.expected)), cell("received", num(c.received)),
        cell("received_share", pct(c.received_share, 2), c.received_share < 1 ? "warn" : ""),
        cell("on_time_share", pct(c.on_time_share, 2), c.on_time_share < 1 ? "warn" : ""),
        el("td", { class: "num", "data-site": c.site_id, "data-metric": "findings",
          title: Object.entries(c.findings).map(([k, v]) => k + ": " + v).join(", ") || "none", text: num(n) }),
        el("td", { class: "num", "data-site": c.site_id, "data-metric": "findings_in_flight",
          title: "findings that may still close while a topic catches up (not raised as deviations)",
          text: num(c.findings_in_flight || 0) }));
    })));
  const map = document.getElementById("lane-map");
  const modules = new Map();
  for (const l of cap.lanes) {
    const key = l.site_id + " / " + l.module_id;
    if (!modules.has(key)) modules.set(key, []);
    modules.get(key).push(l);
  }
  map.replaceChildren(...[...modules.entries()].map(([key, lanes]) => el("div", { class: "module" },
    el("div", { text: key + " (" + lanes[0].module_type + ")" }),
    el("div", { class: "lanes" }, lanes.map((l) => el("span", { class: "lane " + l.state, "data-state": l.state,
      title: `lane ${l.lane}: ${l.state}` + (l.batch_id ? ` · ${l.batch_id} · ${l.step}` : "") }))))));
}
atmp.start(render);
