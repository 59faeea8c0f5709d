// Charts drawn by hand as SVG: a line chart of one or more series over time and a bar chart of a
// histogram. Colours come from classes in style.css, so the page needs no inline style.

import { s } from "./dom.js";

const WIDTH = 640;
const PAD = { top: 10, right: 12, bottom: 24, left: 40 };

/** A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten. */
function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function label(value) {
  if (value >= 1000) return `${Math.round(value / 100) / 10}k`;
  return String(Math.round(value * 10) / 10);
}

/**
 * A line chart. `series` is `[{ name, points: [{ t, count }] }]`, every series over the same
 * buckets; `height` in SVG units. The x axis is labelled with local times.
 */
export function lineChart(series, { height = 200, area = true, title = "" } = {}) {
  const buckets = series[0]?.points ?? [];
  const max = niceMax(Math.max(0, ...series.flatMap((one) => one.points.map((p) => p.count))));
  const inner = { w: WIDTH - PAD.left - PAD.right, h: height - PAD.top - PAD.bottom };
  const x = (i) => PAD.left + (buckets.length <= 1 ? 0 : (i / (buckets.length - 1)) * inner.w);
  const y = (v) => PAD.top + inner.h - (v / max) * inner.h;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${WIDTH} ${height}`, role: "img", "aria-label": title });
  for (const fraction of [0, 0.5, 1]) {
    const value = max * fraction;
    svg.append(
      s("line", { class: fraction === 0 ? "axis" : "grid-line", x1: PAD.left, x2: WIDTH - PAD.right, y1: y(value), y2: y(value) }),
      s("text", { x: PAD.left - 6, y: y(value) + 4, "text-anchor": "end" }, label(value)),
    );
  }
  const ticks = Math.min(6, buckets.length);
  for (let k = 0; k < ticks; k++) {
    const i = Math.round((k / Math.max(1, ticks - 1)) * (buckets.length - 1));
    const time = new Date(buckets[i].t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    svg.append(s("text", { x: x(i), y: height - 6, "text-anchor": k === 0 ? "start" : k === ticks - 1 ? "end" : "middle" }, time));
  }
  series.forEach((one, index) => {
    if (one.points.length === 0) return;
    const path = one.points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.count).toFixed(1)}`).join("");
    if (area && series.length === 1) {
      const fill = `${path}L${x(one.points.length - 1).toFixed(1)},${y(0)}L${x(0)},${y(0)}Z`;
      svg.append(s("path", { class: `area series-${index % 6}`, d: fill }));
    }
    svg.append(s("path", { class: `line series-${index % 6}`, d: path }, s("title", {}, one.name)));
  });
  return svg;
}

/** A bar chart: `bars` is `[{ label, count }]`. */
export function barChart(bars, { height = 180, title = "", series = 0 } = {}) {
  const max = niceMax(Math.max(0, ...bars.map((b) => b.count)));
  const inner = { w: WIDTH - PAD.left - PAD.right, h: height - PAD.top - PAD.bottom };
  const slot = inner.w / Math.max(1, bars.length);
  const y = (v) => PAD.top + inner.h - (v / max) * inner.h;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${WIDTH} ${height}`, role: "img", "aria-label": title });
  for (const fraction of [0, 0.5, 1]) {
    const value = max * fraction;
    svg.append(
      s("line", { class: fraction === 0 ? "axis" : "grid-line", x1: PAD.left, x2: WIDTH - PAD.right, y1: y(value), y2: y(value) }),
      s("text", { x: PAD.left - 6, y: y(value) + 4, "text-anchor": "end" }, label(value)),
    );
  }
  bars.forEach((bar, i) => {
    const left = PAD.left + i * slot + slot * 0.15;
    const top = y(bar.count);
    svg.append(
      s("rect", { class: `bar series-${series}`, x: left, y: top, width: slot * 0.7, height: Math.max(0, y(0) - top), rx: 2 },
        s("title", {}, `${bar.label}: ${bar.count}`)),
      s("text", { x: left + slot * 0.35, y: height - 6, "text-anchor": "middle" }, bar.label),
    );
  });
  return svg;
}
