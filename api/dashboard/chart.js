/* SVG line charts of a job's metrics over its steps, drawn by hand (no chart library). */

import { h, s } from "./dom.js";
import { int, num } from "./format.js";

/** Round tick values covering [lo, hi]. */
function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((v) => v >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/** A line chart of `series` ([{key, name}]) over `points` (objects with a `step`): an element
 * with a legend (which shows the values under the pointer) and an SVG. `log` plots log10 y. */
export function lineChart({ title, series, points, log = false, note = "", empty = "No data yet." }) {
  const W = 560, H = 210, M = { l: 52, r: 14, t: 10, b: 26 };
  const legendValues = series.map(() => h("span", { class: "legend-value" }));
  const legend = h("div", { class: "legend" }, series.map((ser, i) =>
    h("span", { class: "legend-item" }, h("i", { class: `swatch c${i}` }), ser.name, " ", legendValues[i])));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title, "data-chart": title.toLowerCase() });
  const figure = h("figure", { class: "card chart-card" },
    h("figcaption", {}, h("div", {}, h("strong", {}, title), note ? h("span", { class: "muted small" }, ` ${note}`) : null), legend), svg);

  const usable = (v) => v !== null && v !== undefined && Number.isFinite(v) && (!log || v > 0);
  const rows = points.filter((p) => series.some((ser) => usable(p[ser.key])));
  if (!rows.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, class: "chart-empty", "text-anchor": "middle" }, empty));
    return figure;
  }
  const ty = (v) => (log ? Math.log10(v) : v);
  const ys = rows.flatMap((p) => series.map((ser) => p[ser.key]).filter(usable).map(ty));
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const pad = (y1 - y0) * 0.06;
  y0 -= pad; y1 += pad;
  const x0 = rows[0].step, x1 = rows[rows.length - 1].step === x0 ? x0 + 1 : rows[rows.length - 1].step;
  const X = (step) => M.l + ((step - x0) / (x1 - x0)) * (W - M.l - M.r);
  const Y = (v) => M.t + (1 - (ty(v) - y0) / (y1 - y0)) * (H - M.t - M.b);
  const Yraw = (t) => M.t + (1 - (t - y0) / (y1 - y0)) * (H - M.t - M.b);

  const grid = s("g", { class: "grid" });
  for (const t of ticks(y0, y1, 4)) {
    const y = Yraw(t);
    grid.append(s("line", { x1: M.l, x2: W - M.r, y1: y, y2: y }));
    grid.append(s("text", { x: M.l - 6, y: y + 4, "text-anchor": "end" }, log ? num(10 ** t, 2) : num(t, 3)));
  }
  for (const t of ticks(x0, x1, 5)) {
    if (t < x0) continue;
    grid.append(s("text", { x: X(t), y: H - 8, "text-anchor": "middle" }, int(t)));
  }
  svg.append(grid);

  series.forEach((ser, i) => {
    // One path per series, lifting the pen over missing (non-finite) values.
    const commands = [];
    let pen = "M";
    for (const p of rows) {
      const v = p[ser.key];
      if (!usable(v)) { pen = "M"; continue; }
      commands.push(`${pen}${X(p.step).toFixed(1)} ${Y(v).toFixed(1)}`);
      pen = "L";
    }
    if (!commands.length) return;
    svg.append(s("path", { d: commands.join(" "), class: `series c${i}`, "data-series": ser.key }));
    const lone = rows.filter((p) => usable(p[ser.key]));
    if (lone.length === 1) svg.append(s("circle", { cx: X(lone[0].step), cy: Y(lone[0][ser.key]), r: 3, class: `dot c${i}` }));
  });

  // Hover: a cursor line and each series' value at the nearest step.
  const cursor = s("line", { class: "cursor", y1: M.t, y2: H - M.b, visibility: "hidden" });
  const stepLabel = s("text", { class: "cursor-label", y: M.t + 10, visibility: "hidden" });
  svg.append(cursor, stepLabel);
  const showLatest = () => series.forEach((ser, i) => {
    const last = [...rows].reverse().find((p) => usable(p[ser.key]));
    legendValues[i].textContent = last ? num(last[ser.key]) : "–";
  });
  showLatest();
  svg.addEventListener("pointermove", (event) => {
    const box = svg.getBoundingClientRect();
    const x = ((event.clientX - box.left) / box.width) * W;
    const step = x0 + ((x - M.l) / (W - M.l - M.r)) * (x1 - x0);
    let best = rows[0];
    for (const p of rows) if (Math.abs(p.step - step) < Math.abs(best.step - step)) best = p;
    const cx = X(best.step);
    cursor.setAttribute("x1", cx);
    cursor.setAttribute("x2", cx);
    cursor.setAttribute("visibility", "visible");
    stepLabel.textContent = `step ${int(best.step)}`;
    stepLabel.setAttribute("x", Math.min(cx + 6, W - 90));
    stepLabel.setAttribute("visibility", "visible");
    series.forEach((ser, i) => { legendValues[i].textContent = num(best[ser.key]); });
  });
  svg.addEventListener("pointerleave", () => {
    cursor.setAttribute("visibility", "hidden");
    stepLabel.setAttribute("visibility", "hidden");
    showLatest();
  });
  return figure;
}
