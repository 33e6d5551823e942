// Shared by every page: the token in sessionStorage, API calls, small DOM and number helpers.
"use strict";
const atmp = (() => {
  const KEY = "atmpnet.token";
  const token = () => sessionStorage.getItem(KEY);
  const setToken = (t) => sessionStorage.setItem(KEY, t);
  const signOut = () => { sessionStorage.removeItem(KEY); location.assign("/login"); };

  async function api(path, opts = {}) {
    const headers = Object.assign({ Authorization: "Bearer " + token() }, opts.headers || {});
    const res = await fetch(path, Object.assign({}, opts, { headers }));
    if (res.status === 401) { signOut(); throw new Error("signed out"); }
    if (!res.ok) {
      let detail = res.statusText;
      try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(res.status + ": " + detail);
    }
    return res;
  }
  const json = async (path) => (await api(path)).json();

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c.nodeType ? c : String(c));
    return node;
  }
  const num = (v, digits = 0) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
  const pct = (v, digits = 1) => (v === null || v === undefined ? "–" : (100 * v).toFixed(digits) + "%");
  // every time the API sends is UTC: the column headers and labels say "(UTC)", the cells do not repeat it
  const when = (iso) => (iso ? iso.replace("T", " ").slice(0, 16) : "–");
  function showError(err) {
    const box = document.getElementById("error");
    if (box) { box.hidden = false; box.textContent = String(err.message || err); }
  }
  function kpi(label, value, key, cls) {
    return el("div", { class: "kpi " + (cls || "") }, el("div", { class: "v", "data-kpi": key, text: value }),
      el("div", { class: "l", text: label }));
  }
  async function start(render) {
    if (!token()) { location.assign("/login"); return; }
    const out = document.getElementById("logout");
    if (out) out.addEventListener("click", signOut);
    try {
      const me = await json("/api/v1/sites");
      const who = document.getElementById("who");
      if (who) who.textContent = me.name + " (" + me.role + (me.site_id ? " · " + me.site_id : "") + ")";
      await render(me);
      document.body.dataset.ready = "1";
    } catch (err) { showError(err); }
  }
  function asOf(iso) { const n = document.getElementById("as-of"); if (n) n.textContent = iso ? "as of " + when(iso) + " UTC" : "no data yet"; }
  return { token, setToken, signOut, api, json, el, num, pct, when, showError, kpi, start, asOf };
})();
