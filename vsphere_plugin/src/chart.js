// Time-series charts (uPlot) over a fixed time range, repainted with the theme's colours when the theme
// changes. A null value is a gap in the line (no data in that bucket), never joined over.
import uPlot from "uplot";
import { h } from "./dom.js";

const COLOURS = { light: ["#0072a3", "#c25400", "#3c8500"], dark: ["#49afd9", "#ff9c32", "#8ee37c"] };

export function timeChart(title, labels, { unit = "", testid } = {}) {
  const el = h("div", { class: "zvr-chart", role: "img", "aria-label": title, "data-testid": testid });
  let plot = null;
  let last = null;
  function build(data, range) {
    const dark = document.body.getAttribute("cds-theme") === "dark";
    const colours = COLOURS[dark ? "dark" : "light"];
    const axis = { stroke: dark ? "#c0c8cc" : "#454545", grid: { stroke: dark ? "#3a4a52" : "#e5e5e5" } };
    if (plot) plot.destroy();
    plot = new uPlot({
      width: Math.max(280, el.clientWidth || 420), height: 160, title,
      series: [{}, ...labels.map((label, i) => ({ label, stroke: colours[i % colours.length], width: 2, spanGaps: false,
        points: { show: true, size: 3 },
        value: (u, v) => (v === null || v === undefined ? "—" : `${Math.round(v * 10) / 10}${unit}`) }))],
      axes: [axis, { ...axis, size: 50 }],
      // The whole range always, so an hour with little data is not stretched over its few points.
      scales: { x: { time: true, range: () => [range.start, range.end] },
        y: { range: (u, lo, hi) => [0, Math.max(1, (hi || 0) * 1.2)] } },
    }, data, el);
    plot.root.dataset.theme = dark ? "dark" : "light";
    // What the chart shows, for assistive technology and the tests: how many buckets have data.
    const values = data[1].filter((v) => v !== null && v !== undefined);
    const filled = values.length;
    el.dataset.start = String(range.start);
    el.dataset.buckets = String(data[0].length);
    el.dataset.filled = String(filled);
    el.dataset.last = filled ? String(values[filled - 1]) : "";
    el.setAttribute("aria-label", `${title}: ${filled} of ${data[0].length} intervals with data`);
  }
  return {
    el,
    /** ``data``: [times, series...] (uPlot's columns); ``range``: {start, end} in epoch seconds. */
    update(data, range) { last = [data, range]; build(data, range); },
    repaint() { if (last) build(...last); },
  };
}
