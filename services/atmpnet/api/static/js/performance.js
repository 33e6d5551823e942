// Comparative performance: each site against the network median.
"use strict";
const STEP_ORDER = ["APHERESIS_RECEIPT", "SELECTION", "ACTIVATION", "TRANSDUCTION", "EXPANSION", "HARVEST",
  "FORMULATION", "CRYOPRESERVATION", "QC_RELEASE"];
const { el, num, pct } = atmp;
const NO_COMPLETED = "No completed batches yet";

async function render() {
  const perf = await atmp.json("/api/v1/performance");
  atmp.asOf(perf.as_of);
  const net = perf.network || {};
  charts.intervals(document.getElementById("success"), {
    rows: perf.sites.map((s) => ({ label: s.site_id, value: s.success_rate,
      lo: s.success_interval ? s.success_interval[0] : null, hi: s.success_interval ? s.success_interval[1] : null })),
    ref: net.success_rate, empty: NO_COMPLETED });
  charts.bars(document.getElementById("dev-per-batch"), {
    categories: perf.sites.map((s) => s.site_id), fmt: (v) => num(v, 2),
    series: [{ name: "deviations per batch", color: "#f59e0b", values: perf.sites.map((s) => s.deviations_per_batch ?? null) }],
    ref: net.deviations_per_batch, refLabel: "median", empty: "No batches yet" });
  const edges = perf.histogram_edges_days || [];
  charts.bars(document.getElementById("histograms"), {
    categories: edges.map((e, i) => (i + 1 < edges.length ? `${e}–${edges[i + 1]}` : `${e}+`)),
    series: perf.sites.map((s, i) => ({ name: s.site_id, color: charts.color(i), values: s.cycle_time_histogram })),
    empty: NO_COMPLETED });
  const steps = STEP_ORDER.filter((st) => perf.steps.some((r) => r.step === st));
  const sites = perf.sites.map((s) => s.site_id);
  const series = sites.map((s, i) => ({ name: s, color: charts.color(i),
    values: steps.map((st) => { const r = perf.steps.find((x) => x.site_id === s && x.step === st); return r ? r.p50_hours : 0; }) }));
  series.push({ name: "network median", color: "#111827",
    values: steps.map((st) => { const r = perf.steps.find((x) => x.step === st); return r ? r.network_median_p50_hours : 0; }) });
  // full step names: charts.bars shortens a long label itself and keeps the whole one in its tooltip
  charts.bars(document.getElementById("steps"), { categories: steps.map((s) => s.replaceAll("_", " ").toLowerCase()), series,
    empty: NO_COMPLETED });
  const head = ["site", "started", "completed", "failed", "success", "95% interval", "dev / batch", "sensor control",
    "per lane-day", "cycle p50 (d)"];
  const cell = (s, metric, text) => el("td", { class: "num", "data-site": s.site_id, "data-metric": metric, text });
  const rows = perf.sites.map((s) => el("tr", {}, el("td", { text: s.site_id }),
    cell(s, "batches_started", num(s.batches_started)), cell(s, "batches_completed", num(s.batches_completed)),
    cell(s, "batches_failed", num(s.batches_failed)), cell(s, "success_rate", pct(s.success_rate)),
    cell(s, "success_interval", s.success_interval ? pct(s.success_interval[0]) + "–" + pct(s.success_interval[1]) : "–"),
    cell(s, "deviations_per_batch", num(s.deviations_per_batch, 2)), cell(s, "sensor_control", pct(s.sensor_control, 2)),
    cell(s, "throughput_per_lane_day", num(s.throughput_per_lane_day, 3)), cell(s, "cycle_time_days_p50", num(s.cycle_time_days_p50, 1))));
  rows.push(el("tr", { class: "median" }, el("td", { text: "network median" }), el("td"), el("td"), el("td"),
    el("td", { class: "num", text: pct(net.success_rate) }), el("td"), el("td", { class: "num", text: num(net.deviations_per_batch, 2) }),
    el("td", { class: "num", text: pct(net.sensor_control, 2) }), el("td", { class: "num", text: num(net.throughput_per_lane_day, 3) }),
    el("td", { class: "num", text: num(net.cycle_time_days_p50, 1) })));
  document.getElementById("site-table").replaceChildren(
    el("thead", {}, el("tr", {}, head.map((h, i) => el("th", { class: i ? "num" : null, text: h })))), el("tbody", {}, rows));
}
atmp.start(render);
