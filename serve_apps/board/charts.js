// The board's charts: inline SVG drawn here, no library. A line chart over time (the
// RUL trend, the failure probability, the health score, a sensor) with markers for
// alerts, and a bar chart of the drivers. Each chart is an image with a text summary
// (aria-label); the numbers are also in a table on the page.
"use strict";

window.PumpCharts = (() => {
  const NS = "http://www.w3.org/2000/svg";

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) el.setAttribute(k, String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  function utc(ms) {
    return new Date(ms).toISOString().slice(0, 16).replace("T", " ");
  }

  function shortTime(ms, spanMs) {
    const iso = new Date(ms).toISOString();
    return spanMs > 2 * 86400e3 ? iso.slice(5, 10) + " " + iso.slice(11, 16) : iso.slice(11, 16);
  }

  function ticks(lo, hi, n) {
    const out = [];
    for (let i = 0; i <= n; i += 1) out.push(lo + ((hi - lo) * i) / n);
    return out;
  }

  // points: [{t: ms, v: number}]; markers: [{t: ms, label}]; fmt: value → text
  // small: a chart of a grid of several (its text stays readable at half the width)
  function line({
    label,
    points,
    markers = [],
    fmt = (v) => v.toFixed(2),
    yMin,
    yMax,
    small = false,
  }) {
    const W = small ? 380 : 640;
    const H = small ? 170 : 190;
    const L = 64;
    const R = 16;
    const T = 14;
    const B = 30;
    const pts = points.filter((p) => Number.isFinite(p.t) && Number.isFinite(p.v));
    const marks = markers.filter((m) => Number.isFinite(m.t));
    if (pts.length === 0) return null;
    const times = pts.map((p) => p.t).concat(marks.map((m) => m.t));
    let t0 = Math.min(...times);
    let t1 = Math.max(...times);
    if (t1 === t0) {
      t0 -= 3600e3;
      t1 += 3600e3;
    }
    const values = pts.map((p) => p.v);
    let lo = yMin ?? Math.min(...values);
    let hi = yMax ?? Math.max(...values);
    if (hi === lo) {
      lo -= Math.abs(lo) * 0.1 || 1;
      hi += Math.abs(hi) * 0.1 || 1;
    }
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
    const last = pts[pts.length - 1];
    const summary =
      `${label}: ${pts.length} values from ${utc(pts[0].t)} to ${utc(last.t)} UTC, ` +
      `lowest ${fmt(Math.min(...values))}, highest ${fmt(Math.max(...values))}, ` +
      `latest ${fmt(last.v)}` +
      (marks.length ? `; ${marks.map((m) => `${m.label} at ${utc(m.t)}`).join(", ")}` : "");
    const svg = s("svg", {
      viewBox: `0 0 ${W} ${H}`,
      class: "chart",
      role: "img",
      "aria-label": summary,
    });
    svg.append(s("title", {}, summary));
    for (const v of ticks(lo, hi, 4)) {
      svg.append(s("line", { class: "gridline", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      svg.append(s("text", { class: "tick", x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
    }
    for (const t of ticks(t0, t1, 3)) {
      svg.append(
        s(
          "text",
          { class: "tick", x: x(t), y: H - 10, "text-anchor": "middle" },
          shortTime(t, t1 - t0),
        ),
      );
    }
    svg.append(s("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    svg.append(s("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    for (const m of marks) {
      svg.append(s("line", { class: "marker", x1: x(m.t), x2: x(m.t), y1: T, y2: H - B }));
      svg.append(s("text", { class: "marker-label", x: x(m.t) + 4, y: T + 10 }, m.label));
    }
    svg.append(
      s("polyline", {
        class: "line",
        fill: "none",
        points: pts.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" "),
      }),
    );
    for (const p of pts) {
      svg.append(
        s(
          "circle",
          { class: "dot", cx: x(p.t), cy: y(p.v), r: 3 },
          s("title", {}, `${utc(p.t)} UTC: ${fmt(p.v)}`),
        ),
      );
    }
    return svg;
  }

  // drivers: [{sensor, weight}], largest first
  function bars(drivers) {
    const rows = drivers.filter((d) => Number.isFinite(d.weight));
    if (rows.length === 0) return null;
    const W = 520;
    const L = 150;
    const R = 70;
    const row = 26;
    const H = rows.length * row + 8;
    const top = Math.max(...rows.map((d) => Math.abs(d.weight))) || 1;
    const summary = `Drivers of the risk: ${rows.map((d) => `${d.sensor} ${d.weight.toFixed(3)}`).join(", ")}`;
    const svg = s("svg", {
      viewBox: `0 0 ${W} ${H}`,
      class: "chart bars",
      role: "img",
      "aria-label": summary,
    });
    svg.append(s("title", {}, summary));
    rows.forEach((d, i) => {
      const yy = 4 + i * row;
      const w = (Math.abs(d.weight) / top) * (W - L - R);
      svg.append(
        s("text", { class: "bar-label", x: L - 8, y: yy + 17, "text-anchor": "end" }, d.sensor),
      );
      svg.append(
        s("rect", { class: "bar", x: L, y: yy + 4, width: Math.max(w, 1), height: row - 8 }),
      );
      svg.append(s("text", { class: "tick", x: L + w + 6, y: yy + 17 }, d.weight.toFixed(3)));
    });
    return svg;
  }

  return { line, bars, utc };
})();
