// The fleet board's lists: the ranked work list with its filters, and the sites, each
// a grid of its pumps coloured by risk.
"use strict";

(() => {
  const B = window.PumpBoard;
  const { PAGE, $, h, api, fleetIndex, num, hours, pct, score, count, uniq } = B;
  const { risk, riskBadge, staleBadge, alertText, driversText, armText } = B;

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
      select(
        `${target}-class`,
        "Class",
        "pump_class",
        classes,
        params.get("pump_class") || "",
        "all classes",
      ),
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
        h(
          "th",
          { scope: "row" },
          h("a", { href: `#/pump/${encodeURIComponent(p.pump_id)}` }, p.pump_id),
        ),
        h("td", {}, p.pump_class),
        h("td", {}, p.site),
        h("td", { class: "num" }, hours(p.rul_hours)),
        h("td", { class: "num" }, pct(p.failure_probability), " ", riskBadge(p)),
        h(
          "td",
          { class: "num" },
          score(p.health_score),
          p.anomaly ? h("span", { class: "badge anomaly" }, "anomaly") : null,
        ),
        h("td", {}, driversText(p.drivers)),
        h("td", {}, staleBadge(p)),
        h("td", { class: "alert-cell" }, alertText(p.open_alert)),
        h("td", {}, armText(p)),
      ),
    );
    const head = [
      "#",
      "Pump",
      "Class",
      "Site",
      "RUL",
      "Failure probability",
      "Health",
      "Drivers",
      "Data",
      "Alert",
      "Model",
    ];
    const table = h(
      "table",
      { class: "work", id: "work-list" },
      h("caption", {}, `The work list: ${page.total} pumps, riskiest first`),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          head.map((c) => h("th", { scope: "col" }, c)),
        ),
      ),
      h("tbody", {}, rows),
    );
    const pager = h("nav", { class: "pager", "aria-label": "Pages" });
    const link = (off, text) => {
      const p = new URLSearchParams({ ...filters, offset: off });
      return h("a", { href: `#/?${p}` }, text);
    };
    if (offset > 0) pager.append(link(Math.max(0, offset - PAGE), "Previous page"));
    pager.append(
      h(
        "span",
        {},
        page.total
          ? `Pumps ${offset + 1}–${offset + page.pumps.length} of ${page.total}`
          : "No pumps match",
      ),
    );
    if (offset + PAGE < page.total) pager.append(link(offset + PAGE, "Next page"));
    return h(
      "div",
      {},
      h("h2", { tabindex: "-1" }, "Work list"),
      form,
      page.total
        ? h("div", { class: "scroll" }, table)
        : h("p", { class: "empty" }, "No pumps match these filters."),
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
    const top = (ps) =>
      Math.max(...ps.map((p) => (num(p.failure_probability) ? p.failure_probability : -1)));
    const sites = [...bySite.entries()].sort(
      (a, b) =>
        worst(a[1]) - worst(b[1]) ||
        top(b[1]) - top(a[1]) ||
        String(a[0]).localeCompare(String(b[0])),
    );
    const form = filterForm(
      "sites",
      params,
      uniq(all.map((p) => p.site)),
      uniq(all.map((p) => p.pump_class)),
      [],
    );
    const blocks = sites.map(([site, pumps]) => {
      const high = pumps.filter((p) => risk(p) === "high").length;
      const alerts = pumps.filter((p) => p.open_alert && p.open_alert.status !== "closed").length;
      const stale = pumps.filter((p) => p.stale).length;
      return h(
        "section",
        { class: "site", "aria-label": `Site ${site}` },
        h(
          "h3",
          {},
          `${site}`,
          h(
            "span",
            { class: "sub" },
            ` ${count(pumps.length, "pump")} · ${high} at high risk · ${count(alerts, "open alert")} · ${stale} stale`,
          ),
        ),
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

  B.workList = workList;
  B.sitesView = sitesView;
})();
