// Time-series charts (uPlot), repainted with the theme's colours when the theme changes.
import uPlot from "uplot";
import { h } from "./dom.js";

const COLOURS = { light: ["#0072a3", "#c25400", "#3c8500"], dark: ["#49afd9", "#ff9c32", "#8ee37c"] };

export function timeChart(title, labels, { theme = "light", unit = "" } = {}) {
  const el = h("div", { class: "zvr-chart", role: "img", "aria-label": title });
  let plot = null;
  let last = null;
  function build(data) {
    const dark = document.body.getAttribute("cds-theme") === "dark";
    const colours = COLOURS[dark ? "dark" : "light"];
    const axis = { stroke: dark ? "#c0c8cc" : "#454545", grid: { stroke: dark ? "#3a4a52" : "#e5e5e5" } };
    if (plot) plot.destroy();
    plot = new uPlot({
      width: Math.max(280, el.clientWidth || 420), height: 160, title,
      series: [{}, ...labels.map((label, i) => ({ label, stroke: colours[i % colours.length], width: 2, spanGaps: true,
        value: (u, v) => (v === null || v === undefined ? "—" : `${Math.round(v * 10) / 10}${unit}`) }))],
      axes: [axis, { ...axis, size: 50 }],
      // Always the last hour, so a chart that just started is not stretched over one point.
      scales: { x: { time: true, range: () => { const now = Date.now() / 1000; return [now - 3600, now]; } },
        y: { range: (u, lo, hi) => [0, Math.max(1, (hi || 0) * 1.2)] } },
    }, data, el);
    plot.root.dataset.theme = dark ? "dark" : "light";
  }
  return {
    el,
    update(data) { last = data; build(data); },
    repaint() { if (last) build(last); },
  };
}
