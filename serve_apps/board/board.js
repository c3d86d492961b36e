// The fleet board: a single page over the service's JSON routes (/v1/fleet, /v1/alerts,
// /v1/models, /v1/drift), logged in with a scoring key kept in this tab's sessionStorage
// and sent as X-API-Key. Views by the URL's hash: #/ (the ranked work list, filtered),
// #/sites (a grid of pumps per site, coloured by risk), #/pump/<id> (a pump's page).
"use strict";

(() => {
  const KEY = "pumpfleet.key";
  const NAME = "pumpfleet.name";
  const PAGE = 50; // rows of the work list per page
  const INDEX_PAGE = 200; // pumps per request when the whole fleet is read (sites, filters)
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
      if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
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
      const detail = data && data.detail !== undefined ? detailText(data.detail) : text.slice(0, 200);
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
      ? h("span", { class: "badge stale", title: `last reading ${when(p.last_reading_at)}` }, "stale")
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
      logout(`${e.message}. Log in again with a scoring key.`);
      return;
    }
    $("error").textContent = e.message || String(e);
    $("error").hidden = false;
  }

  // --- log-in -------------------------------------------------------------------

  function showLogin(message) {
    $("login").hidden = false;
    $("view").replaceChildren();
    $("nav").hidden = true;
    $("who").hidden = true;
    const err = $("login-error");
    err.hidden = !message;
    err.textContent = message || "";
    $("login-key").focus();
  }

  function logout(message) {
    sessionStorage.removeItem(KEY);
    showLogin(message);
  }

  async function login(ev) {
    ev.preventDefault();
    const key = $("login-key").value.trim();
    const name = $("login-name").value.trim();
    const err = $("login-error");
    const problem = !key
      ? "Enter an API key."
      : !name
        ? "Enter your name: it is recorded in the history of the alerts you act on."
        : null;
    if (problem) {
      err.textContent = problem;
      err.hidden = false;
      (key ? $("login-name") : $("login-key")).focus();
      return;
    }
    sessionStorage.setItem(KEY, key);
    try {
      await api("v1/fleet?limit=1");
    } catch (e) {
      sessionStorage.removeItem(KEY);
      err.textContent = e.status === 401 ? `${e.message}. Check the key: a scoring key is needed.` : e.message;
      err.hidden = false;
      $("login-key").focus();
      return;
    }
    sessionStorage.setItem(NAME, name);
    $("login-key").value = "";
    say(`Logged in as ${name}.`);
    render();
  }

  // --- the work list ------------------------------------------------------------

  function select(id, label, name, values, current, anyText) {
    return h(
      "p",
      { class: "field" },
      h("label", { for: id }, label),
      h(
        "select",
        { id, name },
        h("option", { value: "" }, anyText),
        values.map((v) => h("option", { value: v, selected: v === current }, v)),
      ),
    );
  }

  function filterForm(target, params, sites, classes, extra) {
    const form = h(
      "form",
      { class: "filters", "aria-label": "Filters" },
      select(`${target}-site`, "Site", "site", sites, params.get("site") || "", "all sites"),
      select(`${target}-class`, "Class", "pump_class", classes, params.get("pump_class") || "", "all classes"),
      extra,
      h("p", { class: "field" }, h("button", { type: "submit" }, "Filter")),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const q = new URLSearchParams();
      for (const [k, v] of new FormData(form)) if (v !== "") q.set(k, String(v));
      location.hash = `#/${target === "work" ? "" : target}${q.toString() ? "?" + q : ""}`;
    });
    return form;
  }

  async function workList(params) {
    const filters = {};
    for (const k of ["site", "pump_class", "min_risk", "stale"]) {
      if (params.get(k)) filters[k] = params.get(k);
    }
    const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
    const q = new URLSearchParams({ ...filters, limit: PAGE, offset });
    const [page, all] = await Promise.all([api(`v1/fleet?${q}`), fleetIndex()]);
    const extra = [
      h(
        "p",
        { class: "field" },
        h("label", { for: "work-min-risk" }, "Failure probability at least"),
        h("input", {
          id: "work-min-risk",
          name: "min_risk",
          type: "number",
          min: 0,
          max: 1,
          step: 0.05,
          value: params.get("min_risk") || "",
        }),
      ),
      h(
        "p",
        { class: "field" },
        h("label", { for: "work-stale" }, "Data"),
        h(
          "select",
          { id: "work-stale", name: "stale" },
          h("option", { value: "" }, "any"),
          h("option", { value: "true", selected: params.get("stale") === "true" }, "stale only"),
          h("option", { value: "false", selected: params.get("stale") === "false" }, "fresh only"),
        ),
      ),
    ];
    const form = filterForm(
      "work",
      params,
      uniq(all.map((p) => p.site)),
      uniq(all.map((p) => p.pump_class)),
      extra,
    );
    const rows = page.pumps.map((p, i) =>
      h(
        "tr",
        { class: `risk-row-${risk(p)}`, "data-pump": p.pump_id },
        h("td", { class: "num" }, String(offset + i + 1)),
        h("th", { scope: "row" }, h("a", { href: `#/pump/${encodeURIComponent(p.pump_id)}` }, p.pump_id)),
        h("td", {}, p.pump_class),
        h("td", {}, p.site),
        h("td", { class: "num" }, hours(p.rul_hours)),
        h("td", { class: "num" }, pct(p.failure_probability), " ", riskBadge(p)),
        h("td", { class: "num" }, score(p.health_score), p.anomaly ? h("span", { class: "badge anomaly" }, "anomaly") : null),
        h("td", {}, driversText(p.drivers)),
        h("td", {}, staleBadge(p)),
        h("td", { class: "alert-cell" }, alertText(p.open_alert)),
        h("td", {}, armText(p)),
      ),
    );
    const head = ["#", "Pump", "Class", "Site", "RUL", "Failure probability", "Health", "Drivers", "Data", "Alert", "Model"];
    const table = h(
      "table",
      { class: "work", id: "work-list" },
      h("caption", {}, `The work list: ${page.total} pumps, riskiest first`),
      h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows),
    );
    const pager = h("nav", { class: "pager", "aria-label": "Pages" });
    const link = (off, text) => {
      const p = new URLSearchParams({ ...filters, offset: off });
      return h("a", { href: `#/?${p}` }, text);
    };
    if (offset > 0) pager.append(link(Math.max(0, offset - PAGE), "Previous page"));
    pager.append(
      h("span", {}, page.total ? `Pumps ${offset + 1}–${offset + page.pumps.length} of ${page.total}` : "No pumps match"),
    );
    if (offset + PAGE < page.total) pager.append(link(offset + PAGE, "Next page"));
    return h(
      "div",
      {},
      h("h2", { tabindex: "-1" }, "Work list"),
      form,
      page.total ? h("div", { class: "scroll" }, table) : h("p", { class: "empty" }, "No pumps match these filters."),
      pager,
    );
  }

  // --- the sites ----------------------------------------------------------------

  const ORDER = { high: 0, elevated: 1, low: 2, unknown: 3 };

  function legend() {
    return h(
      "ul",
      { class: "legend", "aria-label": "Colours" },
      ["high", "elevated", "low", "unknown"].map((l) =>
        h("li", {}, h("span", { class: `swatch risk-${l}`, "aria-hidden": "true" }), l),
      ),
      h("li", {}, "high: failure probability ≥ 50 % or an open alert; elevated: ≥ 20 %"),
    );
  }

  async function sitesView(params) {
    const filters = {};
    if (params.get("pump_class")) filters.pump_class = params.get("pump_class");
    const all = await fleetIndex();
    const shown = all.filter(
      (p) =>
        (!params.get("site") || p.site === params.get("site")) &&
        (!params.get("pump_class") || p.pump_class === params.get("pump_class")),
    );
    const bySite = new Map();
    for (const p of shown) {
      if (!bySite.has(p.site)) bySite.set(p.site, []);
      bySite.get(p.site).push(p);
    }
    // the sites with the riskiest pumps first
    const worst = (ps) => Math.min(...ps.map((p) => ORDER[risk(p)]));
    const top = (ps) => Math.max(...ps.map((p) => (num(p.failure_probability) ? p.failure_probability : -1)));
    const sites = [...bySite.entries()].sort(
      (a, b) => worst(a[1]) - worst(b[1]) || top(b[1]) - top(a[1]) || String(a[0]).localeCompare(String(b[0])),
    );
    const form = filterForm("sites", params, uniq(all.map((p) => p.site)), uniq(all.map((p) => p.pump_class)), []);
    const blocks = sites.map(([site, pumps]) => {
      const high = pumps.filter((p) => risk(p) === "high").length;
      const alerts = pumps.filter((p) => p.open_alert && p.open_alert.status !== "closed").length;
      const stale = pumps.filter((p) => p.stale).length;
      return h(
        "section",
        { class: "site", "aria-label": `Site ${site}` },
        h("h3", {}, `${site}`, h("span", { class: "sub" }, ` ${count(pumps.length, "pump")} · ${high} at high risk · ${count(alerts, "open alert")} · ${stale} stale`)),
        h(
          "ul",
          { class: "grid" },
          pumps.map((p) =>
            h(
              "li",
              {},
              h(
                "a",
                {
                  class: `tile risk-${risk(p)}${p.stale ? " is-stale" : ""}`,
                  href: `#/pump/${encodeURIComponent(p.pump_id)}`,
                  "aria-label": `${p.pump_id}, ${p.pump_class}, risk ${risk(p)}: failure probability ${pct(p.failure_probability)}, RUL ${hours(p.rul_hours)}${p.open_alert ? `, alert ${alertText(p.open_alert)}` : ""}${p.stale ? ", stale" : ""}`,
                  title: `${p.pump_id} · ${p.pump_class} · ${pct(p.failure_probability)} · RUL ${hours(p.rul_hours)}`,
                },
                h("span", { class: "tile-id" }, p.pump_id),
                h("span", { class: "tile-risk" }, pct(p.failure_probability)),
                p.stale ? h("span", { class: "tile-stale" }, "stale") : null,
              ),
            ),
          ),
        ),
      );
    });
    return h(
      "div",
      {},
      h("h2", { tabindex: "-1" }, "Sites"),
      form,
      legend(),
      blocks.length ? blocks : h("p", { class: "empty" }, "No pumps match these filters."),
    );
  }

  // --- a pump -------------------------------------------------------------------

  function facts(pairs) {
    return h("dl", { class: "facts" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  function driftOf(cls, models, drift) {
    const items = [];
    if (models instanceof Error) items.push(["Served", models.message]);
    else {
      const c = (models.classes || {})[cls];
      items.push([
        "Served",
        c
          ? `champion v${c.champion ?? "—"}${c.challenger ? `, challenger v${c.challenger} at ${pct(c.challenger_weight)}` : ""}${c.shadow ? " (shadow)" : ""}`
          : "this class is not served now",
      ]);
    }
    if (drift instanceof Error) items.push(["Drift", drift.message]);
    else if (!drift.created) items.push(["Drift", drift.message || "no monitor report yet"]);
    else {
      const d = (drift.classes || {})[cls];
      const skipped = (drift.skipped || {})[cls];
      const status = d
        ? d.alert_active
          ? `drift alert open${d.drifted_features.length ? `: ${d.drifted_features.join(", ")}` : ""}`
          : d.drifted
            ? `drifted earlier, no alert now${d.drifted_features.length ? ` (${d.drifted_features.join(", ")})` : ""}`
            : "no drift"
        : skipped
          ? `not analysed: ${skipped}`
          : "not in the report";
      items.push(["Drift", h("span", { class: d && d.alert_active ? "badge drift" : "" }, status)]);
      if (d && d.health_alert_active) items.push(["Health alarms", "alarm rate above its bound"]);
      items.push(["Monitor report", when(drift.created)]);
    }
    return facts(items);
  }

  function trendCharts(detail) {
    const scores = (detail.scores || []).map((r) => ({ ...r, t: Date.parse(r.at) })).sort((a, b) => a.t - b.t);
    const markers = (detail.alerts || []).map((a) => ({ t: Date.parse(a.opened_at), label: `alert ${a.id}` }));
    const out = [];
    const add = (title, c) => out.push(h("figure", {}, h("figcaption", {}, title), c || h("p", { class: "empty" }, "no values")));
    add("Remaining useful life (hours)", charts.line({ label: "RUL", points: scores.map((r) => ({ t: r.t, v: r.rul_hours })), markers, fmt: (v) => `${v.toFixed(0)} h`, yMin: 0 }));
    add("Failure probability", charts.line({ label: "Failure probability", points: scores.map((r) => ({ t: r.t, v: r.failure_probability })), markers, fmt: (v) => `${(v * 100).toFixed(0)} %`, yMin: 0, yMax: 1 }));
    if (scores.some((r) => num(r.health_score))) {
      add("Health score (higher: further from normal)", charts.line({ label: "Health score", points: scores.map((r) => ({ t: r.t, v: r.health_score })), markers }));
    }
    // sensor readings around the alerts, where the service keeps them
    const readings = (detail.readings || []).map((r) => ({ ...r, t: Date.parse(r.at || r.timestamp) }));
    const sensors = uniq(readings.flatMap((r) => Object.keys(r).filter((k) => num(r[k]) && k !== "t")));
    for (const sensor of sensors) {
      add(`Sensor ${sensor}`, charts.line({ label: sensor, points: readings.map((r) => ({ t: r.t, v: r[sensor] })), markers }));
    }
    if (!sensors.length) {
      out.push(h("p", { class: "note" }, "No raw sensor readings are kept for this pump here: the score history above shows its trend, and the drivers which sensors move it."));
    }
    const table = h(
      "details",
      {},
      h("summary", {}, `Score history (${scores.length} scores)`),
      h(
        "table",
        { class: "scores" },
        h("thead", {}, h("tr", {}, ["At (UTC)", "RUL", "Failure probability", "Health", "Anomaly", "Model"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, scores.slice().reverse().map((r) => h("tr", {}, h("td", {}, when(r.at)), h("td", { class: "num" }, hours(r.rul_hours)), h("td", { class: "num" }, pct(r.failure_probability)), h("td", { class: "num" }, score(r.health_score)), h("td", {}, r.anomaly ? "yes" : "no"), h("td", {}, armText(r))))),
      ),
    );
    out.push(table);
    return out;
  }

  // inputs: [{name, label, required, options: [[value, text]] (a choice) or none (text)}]
  function actionForm(a, action, label, inputs = []) {
    const form = h("form", { class: "action", "aria-label": `${label} alert ${a.id}`, novalidate: true });
    for (const input of inputs) {
      const id = `${action}-${input.name}-${a.id}`;
      const field = input.options
        ? h("select", { id, name: input.name }, input.options.map(([v, t]) => h("option", { value: v }, t)))
        : h("input", { id, name: input.name, type: "text", maxlength: input.max || 128, required: input.required });
      form.append(h("p", { class: "field" }, h("label", { for: id }, input.label), field));
    }
    form.append(h("button", { type: "submit", "data-action": action }, label));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { by: sessionStorage.getItem(NAME) || "board" };
      for (const input of inputs) {
        const el = form.elements[input.name];
        const v = el.value.trim();
        if (input.required && !v) {
          fail(new Error(`${input.label}: enter a value first.`));
          el.focus();
          return;
        }
        if (v) body[input.name] = v;
      }
      clearError();
      for (const b of form.querySelectorAll("button")) b.disabled = true;
      try {
        const done = await api(`v1/alerts/${encodeURIComponent(a.id)}/${action}`, { method: "POST", body });
        say(`Alert ${a.id}: ${done && done.status ? done.status : "done"}${done && done.assignee ? `, assigned to ${done.assignee}` : ""}.`);
        await render();
      } catch (e) {
        for (const b of form.querySelectorAll("button")) b.disabled = false;
        if (e.status === 409) await render(); // the alert moved on: show it as it stands
        fail(e);
      }
    });
    return form;
  }

  function alertBlock(a) {
    const closed = a.status === "closed";
    const history = h(
      "ol",
      { class: "history" },
      (a.history || []).map((e) => h("li", {}, `${when(e.at)} · ${e.event}${e.by ? ` by ${e.by}` : ""}${e.note ? `: ${e.note}` : ""}`)),
    );
    return h(
      "section",
      { class: `card alert status-${a.status}`, "data-alert": a.id, "aria-label": `Alert ${a.id}` },
      h("h4", {}, `Alert ${a.id} · `, h("span", { class: "alert-status" }, a.status)),
      facts([
        ["Opened", when(a.opened_at)],
        ["Horizon", hours(a.horizon_hours)],
        ["Risk", pct(a.risk)],
        ["Assignee", a.assignee || "nobody"],
        ["Outcome", a.outcome || "not known yet"],
        ["Lead time", hours(a.lead_time_hours)],
      ]),
      h("h5", {}, "History"),
      history,
      closed
        ? null
        : h(
            "div",
            { class: "actions" },
            a.status === "open" ? actionForm(a, "ack", "Acknowledge") : null,
            actionForm(a, "assign", "Assign", [{ name: "assignee", label: "Assignee", required: true }]),
            actionForm(a, "close", "Close", [
              { name: "note", label: "Closing note", required: true, max: 4000 },
              {
                name: "outcome",
                label: "What the crew found",
                options: [
                  ["", "not known yet"],
                  ["hit", "a fault (hit)"],
                  ["false_alarm", "nothing wrong (false alarm)"],
                ],
              },
            ]),
          ),
    );
  }

  async function pumpPage(id) {
    const [detail, models, drift] = await Promise.all([
      api(`v1/fleet/${encodeURIComponent(id)}`),
      api("v1/models").catch((e) => e),
      api("v1/drift").catch((e) => e),
    ]);
    const p = detail.pump;
    const alerts = (detail.alerts || []).slice().sort((a, b) => Date.parse(b.opened_at) - Date.parse(a.opened_at));
    const drivers = charts.bars(p.drivers || []);
    return h(
      "div",
      { class: "pump", "data-pump": p.pump_id },
      h("p", {}, h("a", { href: "#/" }, "← Work list"), " · ", h("a", { href: `#/sites?site=${encodeURIComponent(p.site)}` }, `Site ${p.site}`)),
      h("h2", { tabindex: "-1" }, `Pump ${p.pump_id} `, riskBadge(p), " ", staleBadge(p)),
      h(
        "div",
        { class: "cards" },
        h("section", { class: "card", "aria-label": "Now" }, h("h3", {}, "Now"), facts([
          ["Remaining useful life", hours(p.rul_hours)],
          ["Failure probability", pct(p.failure_probability)],
          ["Health score", [score(p.health_score), p.anomaly ? h("span", { class: "badge anomaly" }, "anomaly") : null]],
          ["Last reading", when(p.last_reading_at)],
        ])),
        h("section", { class: "card", "aria-label": "Pump" }, h("h3", {}, "Pump"), facts([
          ["Class", p.pump_class],
          ["Site", p.site],
          ["Device", p.device_id || "cloud scoring"],
          ["Model", armText(p)],
        ])),
        h("section", { class: "card", "aria-label": `Class ${p.pump_class}` }, h("h3", {}, `Class ${p.pump_class}`), driftOf(p.pump_class, models, drift)),
      ),
      h("section", { "aria-label": "Drivers" }, h("h3", {}, "Drivers of the risk"), drivers || h("p", { class: "empty" }, "No drivers recorded for the latest score.")),
      h("section", { "aria-label": "Trend" }, h("h3", {}, "Trend"), trendCharts(detail)),
      h("section", { "aria-label": "Alerts" }, h("h3", {}, `Alerts (${alerts.length})`), alerts.length ? alerts.map(alertBlock) : h("p", { class: "empty" }, "No alerts for this pump.")),
    );
  }

  // --- the router ---------------------------------------------------------------

  let rendering = 0;

  async function render() {
    const mine = ++rendering;
    clearError();
    if (!sessionStorage.getItem(KEY)) {
      showLogin();
      return;
    }
    $("login").hidden = true;
    $("nav").hidden = false;
    $("who").hidden = false;
    $("who-name").textContent = sessionStorage.getItem(NAME) || "";
    const raw = location.hash.replace(/^#/, "") || "/";
    const [path, query] = raw.split("?");
    const params = new URLSearchParams(query || "");
    for (const a of $("nav").querySelectorAll("a")) {
      const current = (path === "/sites" && a.id === "nav-sites") || (path === "/" && a.id === "nav-work");
      if (current) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    document.body.setAttribute("aria-busy", "true");
    try {
      let view;
      if (path === "/" || path === "") view = await workList(params);
      else if (path === "/sites") view = await sitesView(params);
      else if (path.startsWith("/pump/")) view = await pumpPage(decodeURIComponent(path.slice(6)));
      else view = h("p", {}, "No such view: ", h("a", { href: "#/" }, "back to the work list"));
      if (mine !== rendering) return;
      $("view").replaceChildren(view);
      const heading = $("view").querySelector("h2");
      if (heading && document.activeElement === document.body) heading.focus();
    } catch (e) {
      if (mine !== rendering) return;
      $("view").replaceChildren();
      fail(e);
    } finally {
      if (mine === rendering) {
        document.body.setAttribute("aria-busy", "false");
        document.body.dataset.ready = "1";
      }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(NAME);
      logout("Logged out.");
    });
    window.addEventListener("hashchange", render);
    render();
  });
})();
