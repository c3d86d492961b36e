// The fleet board's common parts: the DOM helper, the calls to the service (the key of
// this tab as X-API-Key, each refusal as a message with its HTTP status), formatting,
// risk levels and messages. The views (lists.js, pump.js) and the shell (board.js) take
// them from window.PumpBoard.
"use strict";

window.PumpBoard = (() => {
  const KEY = "pumpfleet.key";
  const NAME = "pumpfleet.name";
  const PAGE = 50; // rows of the work list per page
  const INDEX_PAGE = 500; // pumps a request when all are read (sites, filters): the API's most
  const INDEX_MAX = 20000;
  const charts = window.PumpCharts;
  const $ = (id) => document.getElementById(id);

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c !== null && c !== undefined && c !== false)
        el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  // --- the service --------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const WHAT = {
    400: "The request was refused",
    401: "The API key was refused",
    403: "Not allowed",
    404: "Not found",
    408: "The request took too long",
    409: "Conflict",
    413: "Too large",
    415: "Wrong content type",
    422: "The service refused the input",
    429: "Too many requests",
    503: "The service is unavailable",
  };

  function detailText(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail
        .map((d) => {
          if (!d || !Array.isArray(d.loc)) return JSON.stringify(d);
          const field = d.loc.filter((p) => !["body", "query", "path"].includes(p)).join(".");
          return `${field || d.loc.join(".")}: ${d.msg}`;
        })
        .join("; ");
    }
    if (detail && typeof detail === "object") return detail.msg || JSON.stringify(detail);
    return "";
  }

  async function api(path, { method = "GET", body } = {}) {
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem(KEY);
    if (key) headers["X-API-Key"] = key;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      // relative to /board: the service's own routes, under whatever prefix it has
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
      });
    } catch (e) {
      throw new ApiError(0, `Could not reach the service (${e.message}). Is it running?`);
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      const what = WHAT[res.status] || (res.status >= 500 ? "The service failed" : "Refused");
      const detail =
        data && data.detail !== undefined ? detailText(data.detail) : text.slice(0, 200);
      throw new ApiError(res.status, `${what} (HTTP ${res.status})${detail ? ": " + detail : ""}`);
    }
    return data;
  }

  async function fleetIndex(filters = {}) {
    // the whole (filtered) work list, page by page
    const pumps = [];
    for (let offset = 0; offset < INDEX_MAX; offset += INDEX_PAGE) {
      const q = new URLSearchParams({ ...filters, limit: INDEX_PAGE, offset });
      const page = await api(`v1/fleet?${q}`);
      pumps.push(...page.pumps);
      if (page.pumps.length < INDEX_PAGE || pumps.length >= page.total) break;
    }
    return pumps;
  }

  // --- formatting ---------------------------------------------------------------

  const num = (v) => typeof v === "number" && Number.isFinite(v);
  const hours = (v) => (num(v) ? `${v.toFixed(v < 10 ? 1 : 0)} h` : "—");
  const pct = (v) => (num(v) ? `${(v * 100).toFixed(v < 0.1 ? 1 : 0)} %` : "—");
  const score = (v) => (num(v) ? v.toFixed(2) : "—");
  const when = (iso) => (iso ? `${charts.utc(Date.parse(iso))} UTC` : "never");
  const count = (n, what) => `${n} ${what}${n === 1 ? "" : "s"}`;
  const uniq = (xs) => [...new Set(xs.filter((x) => x !== null && x !== undefined))].sort();

  function risk(p) {
    // the colour of a pump: its failure probability, raised by an open alert
    const fp = p.failure_probability;
    let level = !num(fp) ? "unknown" : fp >= 0.5 ? "high" : fp >= 0.2 ? "elevated" : "low";
    if (p.open_alert && p.open_alert.status !== "closed" && level !== "high") level = "high";
    return level;
  }

  function riskBadge(p) {
    const level = risk(p);
    return h("span", { class: `badge risk-${level}` }, level);
  }

  function staleBadge(p) {
    return p.stale
      ? h(
          "span",
          { class: "badge stale", title: `last reading ${when(p.last_reading_at)}` },
          "stale",
        )
      : h("span", { class: "badge fresh" }, "fresh");
  }

  function alertText(a) {
    if (!a) return "—";
    return a.assignee ? `${a.status} (${a.assignee})` : a.status;
  }

  function driversText(drivers, n = 3) {
    return (drivers || [])
      .slice(0, n)
      .map((d) => `${d.sensor} ${num(d.weight) ? d.weight.toFixed(2) : ""}`.trim())
      .join(", ");
  }

  function armText(p) {
    if (p.model_version === null || p.model_version === undefined) return "—";
    return `v${p.model_version}${p.arm ? ` (${p.arm})` : ""}`;
  }

  // --- messages -----------------------------------------------------------------

  function say(text) {
    $("status").textContent = text;
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  function fail(e) {
    if (e instanceof ApiError && e.status === 401) {
      B.logout(`${e.message}. Log in again with a scoring key.`);
      return;
    }
    $("error").textContent = e.message || String(e);
    $("error").hidden = false;
  }

  const B = {
    KEY,
    NAME,
    PAGE,
    charts,
    $,
    h,
    ApiError,
    api,
    fleetIndex,
    num,
    hours,
    pct,
    score,
    when,
    count,
    uniq,
    risk,
    riskBadge,
    staleBadge,
    alertText,
    driversText,
    armText,
    say,
    clearError,
    fail,
    logout: null, // set by board.js
    render: null, // set by board.js
  };
  return B;
})();
