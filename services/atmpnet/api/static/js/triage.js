// Live deviation triage queue: filterable list, severity and age at a glance, updated by SSE.
"use strict";
const { el, num } = atmp;
const rows = new Map();   // deviation_id -> item
const SEV_RANK = { CRITICAL: 0, MAJOR: 1, MINOR: 2 };
const DUE_HOURS = { CRITICAL: 24, MAJOR: 168, MINOR: 720 };
let nextCursor = null;
let streamAbort = null;
let lastEventId = null;

function filters() {
  const form = document.getElementById("filters"), out = {};
  for (const f of form.elements) if (f.name && f.value) out[f.name] = f.value;
  return out;
}
function query(extra) {
  const p = new URLSearchParams(Object.assign({}, filters(), extra || {}));
  return p.toString();
}
function matches(item) {
  const f = filters();
  const map = { site: "site_id", severity: "severity", class: "class", status: "status", module: "module_id", batch: "batch_id" };
  return Object.entries(f).every(([k, v]) => String(item[map[k]]) === v);
}
function row(item, fresh) {
  const due = DUE_HOURS[item.severity] || 720;
  const bar = el("span", { class: "agebar" + (item.overdue ? " overdue" : "") });
  bar.style.width = Math.min(60, (60 * item.age_hours) / due).toFixed(0) + "px";
  return el("tr", { "data-id": item.deviation_id, "data-severity": item.severity, class: fresh ? "fresh" : null,
    onclick: () => detail(item.deviation_id) },
    el("td", {}, el("span", { class: "sev " + item.severity, text: item.severity })),
    el("td", { text: atmp.when(item.raised_at) }),
    el("td", {}, el("span", { class: "age" + (item.overdue ? " overdue" : ""), text: fmtAge(item.age_hours) }), bar),
    el("td", { text: item.site_id }),
    el("td", { text: item.module_id + (item.lane ? " · " + item.lane : "") }),
    el("td", {}, item.batch_id
      ? el("a", { href: "/digest?batch=" + encodeURIComponent(item.batch_id), class: "digest-link",
        title: "batch review digest", onclick: (e) => e.stopPropagation(), text: item.batch_id })
      : "–", item.step ? " · " + item.step.toLowerCase() : ""),
    el("td", { text: item.class }), el("td", { text: item.parameter || "–" }),
    el("td", { text: item.status }), el("td", { text: item.software_version || "–" }));
}
function fmtAge(h) { return h === undefined ? "–" : h < 48 ? num(h, 1) + " h" : num(h / 24, 1) + " d"; }
function sorted() {
  return [...rows.values()].sort((a, b) => (a.raised_at < b.raised_at ? 1 : a.raised_at > b.raised_at ? -1 : a.deviation_id < b.deviation_id ? 1 : -1));
}
function renderKpis() {
  const items = [...rows.values()], open = items.filter((i) => i.status !== "CLOSED");
  document.getElementById("kpis").replaceChildren(
    atmp.kpi("in view", num(items.length), "count"),
    atmp.kpi("open critical", num(open.filter((i) => i.severity === "CRITICAL").length), "open_critical", "critical"),
    atmp.kpi("open major", num(open.filter((i) => i.severity === "MAJOR").length), "open_major", "major"),
    atmp.kpi("overdue", num(open.filter((i) => i.overdue).length), "overdue", "critical"));
}
function renderAll() {
  document.querySelector("#queue tbody").replaceChildren(...sorted().map((i) => row(i, false)));
  renderKpis();
}
async function load(more) {
  const params = more && nextCursor ? { cursor: nextCursor, limit: 200 } : { limit: 200 };
  const page = await atmp.json("/api/v1/deviations?" + query(params));
  if (!more) rows.clear();
  for (const item of page.items) rows.set(item.deviation_id, item);
  nextCursor = page.next_cursor;
  document.getElementById("more").hidden = !nextCursor;
  renderAll();
}
function upsert(item) {
  if (!matches(item)) { if (rows.delete(item.deviation_id)) renderAll(); return; }
  rows.set(item.deviation_id, item);
  const tbody = document.querySelector("#queue tbody");
  const old = tbody.querySelector(`tr[data-id="${CSS.escape(item.deviation_id)}"]`);
  const fresh = row(item, true);
  if (old) old.replaceWith(fresh);
  else {
    const after = sorted(), index = after.findIndex((i) => i.deviation_id === item.deviation_id);
    const next = after[index + 1];
    const ref = next ? tbody.querySelector(`tr[data-id="${CSS.escape(next.deviation_id)}"]`) : null;
    tbody.insertBefore(fresh, ref);
  }
  renderKpis();
}
// SSE over fetch (EventSource cannot send the Authorization header); resumes with Last-Event-ID.
// The stream serves rows of the same triage view as the list (one rule set), re-sent whenever a
// deviation's class, severity, status or duplicate changes: an upsert by deviation_id is exact.
async function stream() {
  const live = document.getElementById("live");
  for (;;) {
    streamAbort = new AbortController();
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      const sp = new URLSearchParams(filters().site ? { site: filters().site } : {});
      if (!lastEventId) sp.set("backlog", "50");
      const res = await atmp.api("/api/v1/deviations/stream?" + sp,
        { headers, signal: streamAbort.signal });
      live.className = "live on"; live.textContent = "live";
      const reader = res.body.getReader(), decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, cut); buf = buf.slice(cut + 2);
          let id = null, data = "", type = "message";
          for (const line of frame.split("\n")) {
            if (line.startsWith("id: ")) id = line.slice(4);
            else if (line.startsWith("data: ")) data += line.slice(6);
            else if (line.startsWith("event: ")) type = line.slice(7);
          }
          if (id) lastEventId = id;
          if (type === "deviation" && data) upsert(JSON.parse(data));
        }
      }
    } catch (err) {
      if (err.name === "AbortError") return;
      // a resume point the server refuses (400): start over from the list, then live from now
      if (String(err.message).startsWith("400")) { lastEventId = null; await load(false).catch(() => {}); }
    }
    live.className = "live off"; live.textContent = "live: reconnecting";
    await new Promise((r) => setTimeout(r, 2000));
  }
}
async function detail(id) {
  const box = document.getElementById("detail");
  box.hidden = false;
  document.getElementById("detail-title").textContent = "Deviation " + id;
  const body = document.getElementById("detail-body");
  try {
    const d = await atmp.json("/api/v1/deviations/" + encodeURIComponent(id));
    const kv = (k, v) => el("tr", {}, el("th", { text: k }), el("td", { text: v === null || v === undefined ? "–" : String(v) }));
    body.replaceChildren(
      el("table", { class: "data" }, el("tbody", {}, kv("severity", d.severity), kv("class", d.class), kv("status", d.status),
        kv("description", d.description), kv("raised by", d.raised_by), kv("observed", d.observed_value + " " + (d.unit || "")),
        kv("limits", `${d.limit_low ?? "–"} … ${d.limit_high ?? "–"}`), kv("duration (s)", d.duration_seconds),
        kv("software", d.software_version), kv("resolution", d.resolution))),
      el("h3", { text: "Batch steps" }),
      el("table", { class: "data" }, el("tbody", {}, d.batch_steps.map((s) => el("tr", {}, el("td", { text: s.step }),
        el("td", { text: s.transition }), el("td", { text: atmp.when(s.occurred_at) }), el("td", { text: "lane " + s.lane }))))),
      el("h3", { text: `Sensor summaries around it (${d.sensor_summaries.length})` }),
      el("table", { class: "data" }, el("tbody", {}, d.sensor_summaries.slice(0, 40).map((s) => el("tr", {},
        el("td", { text: s.parameter }), el("td", { text: atmp.when(s.window_start) }), el("td", { text: num(s.mean, 2) + " " + s.unit }),
        el("td", { text: "outside alert: " + s.samples_outside_alert }))))),
      el("h3", { text: "Configuration in force" }),
      el("pre", { text: d.configuration ? d.configuration.components.map((c) => `${c.kind} ${c.name} ${c.version}`).join("\n") : "–" }));
  } catch (err) {
    body.replaceChildren(el("p", { class: "error", text: String(err.message) }));
  }
}
async function csv(ev) {
  ev.preventDefault();
  try {
    const res = await atmp.api("/api/v1/deviations.csv?" + query());
    const url = URL.createObjectURL(await res.blob());
    const a = el("a", { href: url, download: "deviations.csv" }); document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } catch (err) { atmp.showError(err); }
}
async function render(me) {
  const form = document.getElementById("filters");
  const siteSelect = form.elements.site;
  for (const s of me.sites) siteSelect.append(el("option", { value: s, text: s }));
  const initial = new URLSearchParams(location.search);
  for (const f of form.elements) if (f.name && initial.get(f.name)) f.value = initial.get(f.name);
  if (me.role === "operations") document.getElementById("csv").hidden = true;
  form.addEventListener("submit", async (ev) => { ev.preventDefault(); await load(false); if (streamAbort) streamAbort.abort(); lastEventId = null; stream(); });
  document.getElementById("more").addEventListener("click", () => load(true));
  document.getElementById("csv").addEventListener("click", csv);
  await load(false);
  stream();
}
atmp.start(render);
