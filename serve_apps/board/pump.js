// The fleet board's pump page: now, the pump, its class (served versions, drift), the
// drivers, the trend with its alerts marked, and its alerts with the crew's buttons.
"use strict";

(() => {
  const B = window.PumpBoard;
  const { NAME, charts, h, api, num, hours, pct, score, when, uniq } = B;
  const { riskBadge, staleBadge, armText, say, clearError, fail } = B;

  // --- a pump -------------------------------------------------------------------

  function facts(pairs) {
    return h(
      "dl",
      { class: "facts" },
      pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
    );
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
    const scores = (detail.scores || [])
      .map((r) => ({ ...r, t: Date.parse(r.at) }))
      .sort((a, b) => a.t - b.t);
    const markers = (detail.alerts || []).map((a) => ({
      t: Date.parse(a.opened_at),
      label: `alert ${a.id}`,
    }));
    const out = [];
    const add = (title, c) =>
      out.push(
        h("figure", {}, h("figcaption", {}, title), c || h("p", { class: "empty" }, "no values")),
      );
    add(
      "Remaining useful life (hours)",
      charts.line({
        label: "RUL",
        points: scores.map((r) => ({ t: r.t, v: r.rul_hours })),
        markers,
        fmt: (v) => `${v.toFixed(0)} h`,
        yMin: 0,
      }),
    );
    add(
      "Failure probability",
      charts.line({
        label: "Failure probability",
        points: scores.map((r) => ({ t: r.t, v: r.failure_probability })),
        markers,
        fmt: (v) => `${(v * 100).toFixed(0)} %`,
        yMin: 0,
        yMax: 1,
      }),
    );
    if (scores.some((r) => num(r.health_score))) {
      add(
        "Health score (higher: further from normal)",
        charts.line({
          label: "Health score",
          points: scores.map((r) => ({ t: r.t, v: r.health_score })),
          markers,
        }),
      );
    }
    const table = h(
      "details",
      {},
      h("summary", {}, `Score history (${scores.length} scores)`),
      h(
        "table",
        { class: "scores" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["At (UTC)", "RUL", "Failure probability", "Health", "Anomaly", "Model"].map((c) =>
              h("th", { scope: "col" }, c),
            ),
          ),
        ),
        h(
          "tbody",
          {},
          scores
            .slice()
            .reverse()
            .map((r) =>
              h(
                "tr",
                {},
                h("td", {}, when(r.at)),
                h("td", { class: "num" }, hours(r.rul_hours)),
                h("td", { class: "num" }, pct(r.failure_probability)),
                h("td", { class: "num" }, score(r.health_score)),
                h("td", {}, r.anomaly ? "yes" : "no"),
                h("td", {}, armText(r)),
              ),
            ),
        ),
      ),
    );
    out.push(table);
    return out;
  }

  // the window of readings around a pump's latest alert (else its last three days)
  function sensorWindow(alerts) {
    const now = Date.now() / 1000;
    const opened = alerts.length ? Date.parse(alerts[0].opened_at) / 1000 : null;
    const since =
      opened === null ? now - 3 * 86400 : Math.max(opened - 2 * 86400, now - 30 * 86400);
    return { since: Math.floor(since), until: Math.ceil(now) };
  }

  function sensorCharts(sensors, markers) {
    if (sensors instanceof Error)
      return [h("p", { class: "note" }, `Sensor readings: ${sensors.message}`)];
    const readings = sensors.readings.map((r) => ({ ...r, t: Date.parse(r.at) }));
    if (!readings.length) {
      return [
        h(
          "p",
          { class: "note" },
          "No sensor readings of this pump in the prediction log for this span (an edge device's pumps are scored on the device): the trend above and the drivers say what moved its risk.",
        ),
      ];
    }
    const figures = sensors.channels.map((c) =>
      h(
        "figure",
        {},
        h("figcaption", {}, c),
        charts.line({
          label: c,
          points: readings.map((r) => ({ t: r.t, v: r[c] })),
          markers,
          small: true,
        }) || h("p", { class: "empty" }, "no values"),
      ),
    );
    return [
      h(
        "p",
        { class: "note" },
        `Each scored window's mean, ${readings.length} windows from ${when(readings[0].at)} to ${when(readings[readings.length - 1].at)}; the dashed line is where the alert opened.`,
      ),
      h("div", { class: "sensors" }, figures),
    ];
  }

  // inputs: [{name, label, required, options: [[value, text]] (a choice) or none (text)}]
  function actionForm(a, action, label, inputs = []) {
    const form = h("form", {
      class: "action",
      "aria-label": `${label} alert ${a.id}`,
      novalidate: true,
    });
    for (const input of inputs) {
      const id = `${action}-${input.name}-${a.id}`;
      const field = input.options
        ? h(
            "select",
            { id, name: input.name },
            input.options.map(([v, t]) => h("option", { value: v }, t)),
          )
        : h("input", {
            id,
            name: input.name,
            type: "text",
            maxlength: input.max || 128,
            required: input.required,
          });
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
        const done = await api(`v1/alerts/${encodeURIComponent(a.id)}/${action}`, {
          method: "POST",
          body,
        });
        say(
          `Alert ${a.id}: ${done && done.status ? done.status : "done"}${done && done.assignee ? `, assigned to ${done.assignee}` : ""}.`,
        );
        await B.render();
      } catch (e) {
        for (const b of form.querySelectorAll("button")) b.disabled = false;
        if (e.status === 409) await B.render(); // the alert moved on: show it as it stands
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
      (a.history || []).map((e) =>
        h(
          "li",
          {},
          `${when(e.at)} · ${e.event}${e.by ? ` by ${e.by}` : ""}${e.note ? `: ${e.note}` : ""}`,
        ),
      ),
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
            actionForm(a, "assign", "Assign", [
              { name: "assignee", label: "Assignee", required: true },
            ]),
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
    const alerts = (detail.alerts || [])
      .slice()
      .sort((a, b) => Date.parse(b.opened_at) - Date.parse(a.opened_at));
    const q = new URLSearchParams({ pump_class: p.pump_class, ...sensorWindow(alerts) });
    const sensors = await api(`v1/fleet/${encodeURIComponent(id)}/sensors?${q}`).catch((e) => e);
    const markers = alerts.map((a) => ({ t: Date.parse(a.opened_at), label: `alert ${a.id}` }));
    const drivers = charts.bars(p.drivers || []);
    return h(
      "div",
      { class: "pump", "data-pump": p.pump_id },
      h(
        "p",
        {},
        h("a", { href: "#/" }, "← Work list"),
        " · ",
        h("a", { href: `#/sites?site=${encodeURIComponent(p.site)}` }, `Site ${p.site}`),
      ),
      h("h2", { tabindex: "-1" }, `Pump ${p.pump_id} `, riskBadge(p), " ", staleBadge(p)),
      h(
        "div",
        { class: "cards" },
        h(
          "section",
          { class: "card", "aria-label": "Now" },
          h("h3", {}, "Now"),
          facts([
            ["Remaining useful life", hours(p.rul_hours)],
            ["Failure probability", pct(p.failure_probability)],
            [
              "Health score",
              [
                score(p.health_score),
                p.anomaly ? h("span", { class: "badge anomaly" }, "anomaly") : null,
              ],
            ],
            ["Last reading", when(p.last_reading_at)],
          ]),
        ),
        h(
          "section",
          { class: "card", "aria-label": "Pump" },
          h("h3", {}, "Pump"),
          facts([
            ["Class", p.pump_class],
            ["Site", p.site],
            ["Device", p.device_id || "cloud scoring"],
            ["Model", armText(p)],
          ]),
        ),
        h(
          "section",
          { class: "card", "aria-label": `Class ${p.pump_class}` },
          h("h3", {}, `Class ${p.pump_class}`),
          driftOf(p.pump_class, models, drift),
        ),
      ),
      h(
        "section",
        { "aria-label": "Drivers" },
        h("h3", {}, "Drivers of the risk"),
        drivers || h("p", { class: "empty" }, "No drivers recorded for the latest score."),
      ),
      h("section", { "aria-label": "Trend" }, h("h3", {}, "Trend"), trendCharts(detail)),
      h(
        "section",
        { "aria-label": "Sensors" },
        h("h3", {}, alerts.length ? "Sensors around the alert" : "Sensors"),
        sensorCharts(sensors, markers),
      ),
      h(
        "section",
        { "aria-label": "Alerts" },
        h("h3", {}, `Alerts (${alerts.length})`),
        alerts.length
          ? alerts.map(alertBlock)
          : h("p", { class: "empty" }, "No alerts for this pump."),
      ),
    );
  }

  B.pumpPage = pumpPage;
})();
