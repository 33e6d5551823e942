// Live deviation triage queue: filterable list, severity and age at a glance, updated by SSE.
"use strict";
const { el, num } = atmp;
const rows = new Map();   // deviation_id -> item
let nextCursor = null;
let role = null;          // the token's role (from /api/v1/sites): operations sees no detail, no digest
let counts = null;        // headline counts of every match, from the API (not from the rows loaded)
let countsTimer = null;
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
// The age bar fills as the deviation nears its due time; the allowance is the row's own
// due_at - raised_at from the API (the triage rules live in one place), none when unknown.
function ageBar(item) {
  const allowed = (Date.parse(item.due_at) - Date.parse(item.raised_at)) / 3600000;
  const known = Number.isFinite(allowed) && allowed > 0 && Number.isFinite(item.age_hours);
  const bar = el("span", { class: "agebar" + (item.overdue ? " overdue" : ""), "data-allowed-hours": known ? String(allowed) : null,
    title: known ? `${num(item.age_hours, 1)} h of ${num(allowed, 0)} h allowed until due` : "due time unknown" });
  bar.style.width = known ? Math.min(60, (60 * item.age_hours) / allowed).toFixed(0) + "px" : "0px";
  return bar;
}
const seesDetail = () => role !== "operations";
function batchCell(item) {
  if (!item.batch_id) return "–";
  // operations may not open a digest (403): its batch link filters this queue instead
  return seesDetail()
    ? el("a", { href: "/digest?batch=" + encodeURIComponent(item.batch_id), class: "digest-link",
      title: "batch review digest", onclick: (e) => e.stopPropagation(), text: item.batch_id })
    : el("a", { href: "/triage?batch=" + encodeURIComponent(item.batch_id), class: "batch-link",
      title: "this batch's deviations", onclick: (e) => e.stopPropagation(), text: item.batch_id });
}
function row(item, fresh) {
  const bar = ageBar(item);
  return el("tr", { "data-id": item.deviation_id, "data-severity": item.severity,
    class: [fresh ? "fresh" : "", seesDetail() ? "clickable" : ""].join(" ").trim() || null,
    onclick: seesDetail() ? () => detail(item.deviation_id) : null },
    el("td", {}, el("span", { class: "sev " + item.severity, text: item.severity })),
    el("td", { text: atmp.when(item.raised_at) }),
    el("td", {}, el("span", { class: "age" + (item.overdue ? " overdue" : ""), text: fmtAge(item.age_hours) }), bar),
    el("td", { text: item.site_id }),
    el("td", { text: item.module_id + (item.lane ? " · " + item.lane : "") }),
    el("td", {}, batchCell(item), item.step ? " · " + item.step.toLowerCase() : ""),
    el("td", { text: item.class }), el("td", { text: item.parameter || "–" }),
    el("td", { text: item.status }), el("td", { text: item.software_version || "–" }));
}
function fmtAge(h) { return h === undefined ? "–" : h < 48 ? num(h, 1) + " h" : num(h / 24, 1) + " d"; }
function sorted() {
  return [...rows.values()].sort((a, b) => (a.raised_at < b.raised_at ? 1 : a.raised_at > b.raised_at ? -1 : a.deviation_id < b.deviation_id ? 1 : -1));
}
// Counts of every deviation matching the filters, computed by the API over the whole view
// generation: the rows in the browser are only the first pages and the live backlog. "Not
// closed" is OPEN or INVESTIGATING (the status filter's OPEN alone excludes INVESTIGATING).
function renderKpis() {
  const c = counts || { total: null, not_closed: {}, overdue: null };
  document.getElementById("kpis").replaceChildren(
    atmp.kpi("matching the filters", num(c.total), "count"),
    atmp.kpi("critical, not closed", num(c.not_closed.CRITICAL), "open_critical", "critical"),
    atmp.kpi("major, not closed", num(c.not_closed.MAJOR), "open_major", "major"),
    atmp.kpi("overdue, not closed", num(c.overdue), "overdue", "critical"));
}
// after a live change: ask the API again (debounced), the counts are never guessed from rows
function refreshCounts() {
  clearTimeout(countsTimer);
  countsTimer = setTimeout(async () => {
    try { counts = (await atmp.json("/api/v1/deviations/summary?" + query())).counts; renderKpis(); }
    catch (err) { atmp.showError(err); }
  }, 250);
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
  if (!more) counts = page.counts;
  document.getElementById("more").hidden = !nextCursor;
  renderAll();
}
function upsert(item) {
  if (!matches(item)) { if (rows.delete(item.deviation_id)) renderAll(); refreshCounts(); return; }
  const known = rows.get(item.deviation_id);
  // the stream's backlog repeats rows the list already holds: nothing changed, nothing to redraw or recount
  if (known && JSON.stringify(known) === JSON.stringify(Object.assign({}, known, item))) return;
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
  refreshCounts();
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
const thead = (names) => el("thead", {}, el("tr", {}, names.map((n) => el("th", { text: n }))));
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
        kv("description", d.description), kv("raised by", d.raised_by), kv("observed", d.observed_value === null || d.observed_value === undefined ? null : d.observed_value + " " + (d.unit || "")),
        kv("limits", `${d.limit_low ?? "–"} … ${d.limit_high ?? "–"}`), kv("duration (s)", d.duration_seconds),
        kv("software", d.software_version), kv("resolution", d.resolution))),
      el("h3", { text: "Batch steps" }),
      el("table", { class: "data" }, thead(["step", "transition", "at (UTC)", "lane"]), el("tbody", {}, d.batch_steps.map((s) => el("tr", {}, el("td", { text: s.step }),
        el("td", { text: s.transition }), el("td", { text: atmp.when(s.occurred_at) }), el("td", { text: "lane " + s.lane }))))),
      el("h3", { text: `Sensor summaries around it (${d.sensor_summaries.length})` }),
      el("table", { class: "data" }, thead(["parameter", "window start (UTC)", "mean", "samples outside alert"]),
        el("tbody", {}, d.sensor_summaries.slice(0, 40).map((s) => el("tr", {},
        el("td", { text: s.parameter }), el("td", { text: atmp.when(s.window_start) }), el("td", { text: num(s.mean, 2) + " " + s.unit }),
        el("td", { class: "num", text: num(s.samples_outside_alert) }))))),
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
  role = me.role;
  document.getElementById("detail-note").hidden = seesDetail();
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
