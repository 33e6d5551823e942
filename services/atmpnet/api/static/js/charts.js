// Small SVG charts written for this dashboard (no library, no CDN): bars (grouped or stacked),
// lines, and point-with-interval rows. Each draws into a container element and adds a legend.
"use strict";
const charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2563eb", "#10b981", "#f59e0b", "#8b5cf6", "#ef4444", "#06b6d4", "#84cc16", "#ec4899"];
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, v);
    for (const c of children) if (c) node.append(c.nodeType ? c : document.createTextNode(String(c)));
    return node;
  }
  const title = (text) => svg("title", {}, text);
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }
  function legend(container, series) {
    container.append(atmp.el("div", { class: "legend" },
      series.map((s) => { const i = atmp.el("i"); i.setAttribute("data-color", s.color);
        const span = atmp.el("span", {}, i, s.name); i.style.background = s.color; return span; })));
  }
  function frame(container, width, height) {
    container.replaceChildren();
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
    container.append(root);
    return root;
  }
  // the empty state: a short message instead of axes with nothing on them
  function empty(container, text) {
    container.replaceChildren(atmp.el("p", { class: "chart-empty", "data-empty": "1", text: text || "No data yet" }));
  }
  const hasValue = (v) => v !== null && v !== undefined && Number.isFinite(Number(v)) && Number(v) !== 0;
  // x labels at the plot's edges are anchored inwards so the first and last are not clipped
  const anchorAt = (i, n) => (n > 1 && i === n - 1 ? "end" : n > 1 && i === 0 ? "start" : "middle");
  function yAxis(root, m, w, h, max, fmt) {
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4, y = m.t + h - (h * i) / 4;
      root.append(svg("line", { x1: m.l, x2: m.l + w, y1: y, y2: y, class: "axis" }));
      root.append(svg("text", { x: m.l - 6, y: y + 4, "text-anchor": "end" }, fmt(v)));
    }
  }

  // categories on x; series of values; stacked or grouped. opts.ref draws a horizontal reference.
  const smart = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(Math.abs(v) < 10 ? 1 : 0));
  // counts: a scale of whole numbers in four steps
  const countMax = (v) => Math.max(4, Math.ceil(v / 4) * 4);

  function bars(container, { categories, series, stacked = false, height = 220, fmt = smart, counts = true,
                             ref = null, refLabel = "", max = null, width = 640, empty: emptyText = null }) {
    if (!categories.length || !series.some((s) => s.values.some(hasValue))) { empty(container, emptyText); return; }
    const m = { t: 10, r: 10, b: 42, l: 44 }, w = width - m.l - m.r, h = height - m.t - m.b;
    const root = frame(container, width, height);
    const totals = categories.map((_, i) => stacked
      ? series.reduce((a, s) => a + (s.values[i] || 0), 0)
      : Math.max(0, ...series.map((s) => s.values[i] || 0)));
    const peak = Math.max(...totals, ref || 0);
    const top = max !== null ? max : counts && fmt === smart ? countMax(peak) : niceMax(peak);
    yAxis(root, m, w, h, top, fmt);
    const band = w / Math.max(categories.length, 1), gap = band * 0.2;
    categories.forEach((cat, i) => {
      const x0 = m.l + i * band + gap / 2, bw = band - gap;
      let acc = 0;
      series.forEach((s, j) => {
        const v = s.values[i] || 0, bh = (h * v) / top;
        const x = stacked ? x0 : x0 + (bw / series.length) * j, width1 = stacked ? bw : bw / series.length;
        const y = stacked ? m.t + h - (h * (acc + v)) / top : m.t + h - bh;
        acc += v;
        root.append(svg("rect", { x, y, width: Math.max(width1 - 1, 1), height: Math.max(bh, 0), fill: s.color,
          "data-series": s.name, "data-category": cat, "data-value": v }, title(`${s.name} · ${cat}: ${fmt(v)}`)));
      });
      const label = String(cat).length > 12 ? String(cat).slice(0, 11) + "…" : cat;
      root.append(svg("text", { x: x0 + bw / 2, y: m.t + h + 14, "text-anchor": "middle" }, label));
    });
    if (ref !== null && ref !== undefined) {
      const y = m.t + h - (h * ref) / top;
      root.append(svg("line", { x1: m.l, x2: m.l + w, y1: y, y2: y, stroke: "#111827", "stroke-dasharray": "4 3" }));
      root.append(svg("text", { x: m.l + w, y: y - 4, "text-anchor": "end" }, refLabel + " " + fmt(ref)));
    }
    legend(container, series);
  }

  // x labels, series of y values (null = gap)
  function lines(container, { x, series, height = 220, fmt = smart, max = null, width = 640, empty: emptyText = null }) {
    if (!x.length || !series.some((s) => s.values.some((v) => v !== null && v !== undefined))) { empty(container, emptyText); return; }
    const m = { t: 10, r: 16, b: 30, l: 44 }, w = width - m.l - m.r, h = height - m.t - m.b;
    const root = frame(container, width, height);
    const all = series.flatMap((s) => s.values.filter((v) => v !== null));
    const peak = Math.max(0, ...all);
    const top = max !== null ? max : fmt === smart ? countMax(peak) : niceMax(peak);
    yAxis(root, m, w, h, top, fmt);
    const px = (i) => m.l + (x.length <= 1 ? w / 2 : (w * i) / (x.length - 1));
    const py = (v) => m.t + h - (h * v) / top;
    const every = Math.max(1, Math.ceil(x.length / 8));
    x.forEach((lab, i) => {
      // every `every`-th label and always the last one, leaving out a regular one too close to it
      const last = x.length - 1;
      if (i === last || (i % every === 0 && last - i >= every))
        root.append(svg("text", { x: px(i), y: m.t + h + 16, "text-anchor": anchorAt(i, x.length) }, lab));
    });
    series.forEach((s) => {
      let d = "";
      s.values.forEach((v, i) => { if (v === null) return; d += (d ? "L" : "M") + px(i).toFixed(1) + "," + py(v).toFixed(1); });
      root.append(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": 2, "data-series": s.name }));
      s.values.forEach((v, i) => { if (v !== null) root.append(svg("circle", { cx: px(i), cy: py(v), r: 2.5, fill: s.color },
        title(`${s.name} · ${x[i]}: ${fmt(v)}`))); });
    });
    legend(container, series);
  }

  // rows of {label, value, lo, hi}: a dot with its interval, on a 0..max scale; ref = median line
  function intervals(container, { rows, max = 1, fmt = (v) => atmp.pct(v), ref = null, refLabel = "network median", empty: emptyText = null }) {
    if (!rows.some((r) => r.value !== null && r.value !== undefined)) { empty(container, emptyText); return; }
    const rowH = 28, width = 640, m = { t: 10, r: 20, b: 24, l: 90 };
    const height = m.t + m.b + rowH * Math.max(rows.length, 1), w = width - m.l - m.r;
    const root = frame(container, width, height);
    const px = (v) => m.l + (w * v) / max;
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      root.append(svg("line", { x1: px(v), x2: px(v), y1: m.t, y2: height - m.b, class: "axis" }));
      root.append(svg("text", { x: px(v), y: height - 6, "text-anchor": anchorAt(i, 5) }, fmt(v)));
    }
    rows.forEach((r, i) => {
      const y = m.t + rowH * i + rowH / 2;
      root.append(svg("text", { x: m.l - 8, y: y + 4, "text-anchor": "end" }, r.label));
      if (r.lo !== null && r.lo !== undefined)
        root.append(svg("line", { x1: px(r.lo), x2: px(r.hi), y1: y, y2: y, stroke: PALETTE[0], "stroke-width": 3, "stroke-linecap": "round" }));
      if (r.value !== null && r.value !== undefined)
        root.append(svg("circle", { cx: px(r.value), cy: y, r: 5, fill: "#111827", "data-site": r.label, "data-value": r.value },
          title(`${r.label}: ${fmt(r.value)}` + (r.lo !== null && r.lo !== undefined ? ` (${fmt(r.lo)}–${fmt(r.hi)})` : ""))));
    });
    if (ref !== null && ref !== undefined) {
      root.append(svg("line", { x1: px(ref), x2: px(ref), y1: m.t, y2: height - m.b, stroke: "#dc2626", "stroke-dasharray": "4 3" }));
      root.append(svg("text", { x: px(ref) + 4, y: m.t + 10, fill: "#dc2626" }, refLabel));
    }
  }
  const color = (i) => PALETTE[i % PALETTE.length];
  return { bars, lines, intervals, empty, color, PALETTE };
})();
