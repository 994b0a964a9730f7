// Hand-written SVG charts: a line chart of one value over time (the device page) and a
// sparkline (the overview's live counters).  No library: a few hundred points at most.
import {fmtNumber, fmtTime, h, s} from "./lib.js";

const W = 440, H = 190, L = 50, R = 10, T = 10, B = 26;

function niceRange(lo, hi) {
  if (lo === hi) { const d = Math.abs(lo) * 0.1 || 1; return [lo - d, hi + d]; }
  const pad = (hi - lo) * 0.08;
  return [lo - pad, hi + pad];
}

const hhmm = (ms) => { const d = new Date(ms); return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}:${String(d.getSeconds()).padStart(2, "0")}`; };

/** A line chart of `points` ([[ms, value], ...], any order) titled `name`.  Returns a
 * <figure> with the SVG (role=img, labelled) and a caption giving the last value. */
export function lineChart(name, points, {unit = ""} = {}) {
  const pts = [...points].sort((a, b) => a[0] - b[0]);
  const last = pts[pts.length - 1];
  const label = `${name}: ${pts.length} values, last ${fmtNumber(last[1])}${unit} at ${fmtTime(last[0] * 1000)}`;
  const [t0, t1] = pts.length > 1 ? [pts[0][0], last[0]] : [last[0] - 1000, last[0] + 1000];
  const [v0, v1] = niceRange(Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1])));
  const x = (t) => L + ((t - t0) / (t1 - t0 || 1)) * (W - L - R);
  const y = (v) => T + (1 - (v - v0) / (v1 - v0)) * (H - T - B);
  const grid = [0, 0.5, 1].map((f) => {
    const v = v0 + f * (v1 - v0);
    return [s("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid"}),
      s("text", {x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "axis"}, fmtNumber(v))];
  });
  const d = pts.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
  const svg = s("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "chart"},
    s("title", {}, label),
    grid,
    s("line", {x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis-line"}),
    s("text", {x: L, y: H - 8, class: "axis"}, hhmm(t0)),
    s("text", {x: W - R, y: H - 8, "text-anchor": "end", class: "axis"}, hhmm(t1)),
    s("path", {d, class: "line"}),
    pts.slice(-60).map((p) => s("circle", {cx: x(p[0]), cy: y(p[1]), r: 2.5, class: "dot"},
      s("title", {}, `${fmtTime(p[0] * 1000)}: ${p[1]}${unit}`))));
  return h("figure", {class: "chart-box", dataset: {series: name}},
    h("figcaption", {}, h("strong", {}, name), " ", h("span", {class: "muted"}, `last ${fmtNumber(last[1])}${unit} · ${pts.length} values`)),
    svg);
}

/** A small sparkline of `values` (oldest first), e.g. writes/s over the last minutes. */
export function sparkline(values, {label, width = 120, height = 28} = {}) {
  const vs = values.length ? values : [0];
  const hi = Math.max(...vs, 1e-9), lo = Math.min(...vs, 0);
  const x = (i) => (vs.length === 1 ? width : (i / (vs.length - 1)) * width);
  const y = (v) => height - 2 - ((v - lo) / (hi - lo || 1)) * (height - 4);
  const d = vs.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join("");
  return s("svg", {viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label, class: "spark"},
    s("title", {}, label), s("path", {d, class: "line"}));
}

/** Numeric series from data_in/data_out events: a value that is a number gives the series
 * `alias`; one that is a JSON object gives `alias.key` for each numeric member (ExoSense
 * channels: data_in = {"001": 21.5}).  Returns Map(name -> [[ms, value], ...]). */
export function seriesFromEvents(events) {
  const out = new Map();
  const add = (name, ms, v) => {
    if (typeof v === "string" && v.trim() !== "" && Number.isFinite(Number(v))) v = Number(v);
    if (typeof v !== "number" || !Number.isFinite(v)) return;
    if (!out.has(name)) out.set(name, []);
    out.get(name).push([ms, v]);
  };
  for (const ev of events) {
    if (!Array.isArray(ev.payload)) continue;
    for (const entry of ev.payload) {
      if (!entry || typeof entry.values !== "object") continue;
      const ms = entry.timestamp / 1000;
      for (const [alias, raw] of Object.entries(entry.values)) {
        const text = String(raw);
        if (text.trim() !== "" && Number.isFinite(Number(text))) { add(alias, ms, Number(text)); continue; }
        let doc;
        try { doc = JSON.parse(text); } catch (_) { continue; }
        if (typeof doc === "number") add(alias, ms, doc);
        else if (doc && typeof doc === "object" && !Array.isArray(doc)) {
          for (const [k, v] of Object.entries(doc)) add(`${alias}.${k}`, ms, v);
        }
      }
    }
  }
  return out;
}
