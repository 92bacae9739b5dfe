// One VPG: its state, settings, VMs and volumes, checkpoints on a timeline (tagged ones marked), journal
// usage, its RPO, throughput and journal over the last hour (the statistics API), its tasks and events, and
// its actions.
import * as api from "../api.js";
import { badge, card, clear, fmtAge, fmtTime, h, progress, table } from "../dom.js";
import { actionMenu } from "./vpgs.js";
import { timeChart } from "../chart.js";
import { vpgReader } from "../statistics.js";
import * as roles from "../roles.js";

export function vpg(root, ctx, id) {
  // Made once: a poll gives them new data, the page keeps them (and their size) across repaints.
  const charts = {
    rpo: timeChart("RPO (seconds)", ["actual", "average"], { unit: " s", testid: "vpg-rpo-chart" }),
    throughput: timeChart("Throughput (MB/s)", ["written", "sent over the WAN"], { testid: "vpg-throughput-chart" }),
    journal: timeChart("Journal used (MB)", ["used"], { testid: "vpg-journal-chart" }),
  };
  const history = vpgReader(id);
  async function refresh() {
    const [v, vms, checkpoints, tasks, events, stats] = await Promise.all([
      api.get(`/vpgs/${id}`), api.get(`/vms?vpgIdentifier=${encodeURIComponent(id)}`),
      api.get(`/vpgs/${id}/checkpoints?limit=500`), api.get(`/tasks?vpgIdentifier=${encodeURIComponent(id)}&limit=20`),
      api.get(`/events?entityIdentifier=${encodeURIComponent(id)}&limit=20`), history(), roles.ready()]);
    const s = stats.series;
    const limit = v.JournalHardLimitInMB;
    clear(root,
      h("div", { class: "zvr-row" }, h("h1", { "data-testid": "vpg-name" }, v.VpgName), badge(v.Status),
        h("span", { "data-testid": "vpg-substatus" }, v.SubStatus), actionMenu(v, ctx)),
      h("div", { class: "zvr-grid" },
        card("Protection", table([{ head: "", cell: (r) => r[0] }, { head: "", cell: (r) => r[1] }], [
          ["Protected site", v.ProtectedSite.SiteName], ["Recovery site", v.RecoverySite.SiteName],
          ["Priority", v.Priority], ["RPO", `${fmtAge(v.ActualRPO)} (alert above ${fmtAge(v.ConfiguredRpoSeconds)})`],
          ["Journal history", `${fmtAge(v.HistoryStatusApi.ActualHistoryInMinutes * 60)} of ${fmtAge(v.HistoryStatusApi.ConfiguredHistoryInMinutes * 60)}`],
          ["Last checkpoint", fmtTime(v.LastCheckpointAt)], ["WAN compression", v.UseWanCompression ? "on" : "off"],
          ["Paused", v.IsPaused ? "yes" : "no"]], { caption: "Protection" })),
        card("Journal",
          h("p", {}, `${v.JournalUsedStorageMb.toFixed(1)} MB used`, limit ? ` of ${limit} MB (hard limit)` : " (no hard limit)",
            v.JournalWarningThresholdInMB ? `, warning at ${v.JournalWarningThresholdInMB} MB` : ""),
          limit ? progress(Math.round((100 * v.JournalUsedStorageMb) / limit), "journal usage") : null)),
      card("The last hour", h("div", { class: "zvr-grid" }, charts.rpo.el, charts.throughput.el, charts.journal.el)),
      card("Checkpoints", timeline(checkpoints), h("p", { class: "zvr-muted" },
        `${checkpoints.length} checkpoints, ${checkpoints.filter((c) => c.Tag).length} tagged`)),
      card("VMs and volumes", table([
        { head: "VM", cell: (m) => m.VmName },
        { head: "Boot group", cell: (m) => m.BootGroupName },
        { head: "Volumes", cell: (m) => m.Volumes.map((x) => `${x.FileName} (${Math.round(x.ProvisionedSizeInBytes / 1048576)} MB)`).join(", ") },
      ], vms, { caption: "VMs", testid: "vpg-vms" })),
      h("div", { class: "zvr-grid" },
        card("Tasks", table([
          { head: "Task", cell: (t) => t.Type }, { head: "State", cell: (t) => badge(t.Status.State) },
          { head: "Progress", cell: (t) => `${t.Status.Progress}%` }, { head: "Step", cell: (t) => t.Step },
        ], tasks, { caption: "Tasks", testid: "vpg-tasks" })),
        card("Events", table([
          { head: "When", cell: (e) => fmtTime(e.Started) }, { head: "Event", cell: (e) => e.EventType },
          { head: "Result", cell: (e) => e.Result },
        ], events, { caption: "Events", testid: "vpg-events" }))));
    charts.rpo.update([s.t, s.rpo, s.rpoAvg], stats.hour);
    charts.throughput.update([s.t, s.mbps, s.wan], stats.hour);
    charts.journal.update([s.t, s.journal], stats.hour);
  }
  return { refresh, repaint: () => Object.values(charts).forEach((c) => c.repaint()) };
}

/** The checkpoints on a time axis; tagged ones larger, with their tag. */
export function timeline(checkpoints) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "zvr-timeline");
  svg.setAttribute("viewBox", "0 0 1000 70");
  svg.setAttribute("role", "img");
  svg.setAttribute("data-testid", "timeline");
  svg.setAttribute("aria-label", `Timeline of ${checkpoints.length} checkpoints`);
  if (!checkpoints.length) return svg;
  const times = checkpoints.map((c) => Date.parse(c.TimeStamp));
  const lo = Math.min(...times);
  const span = Math.max(1, Math.max(...times) - lo);
  checkpoints.forEach((c, i) => {
    const x = 10 + (980 * (times[i] - lo)) / span;
    const dot = document.createElementNS(ns, "circle");
    dot.setAttribute("cx", x);
    dot.setAttribute("cy", c.Tag ? 40 : 45);
    dot.setAttribute("r", c.Tag ? 6 : 2.5);
    dot.setAttribute("class", c.Tag ? "cp tagged" : "cp");
    const title = document.createElementNS(ns, "title");
    title.textContent = `${c.Tag ? `${c.Tag} — ` : ""}${new Date(times[i]).toLocaleString()}`;
    dot.append(title);
    svg.append(dot);
    if (c.Tag) {
      const t = document.createElementNS(ns, "text");
      t.setAttribute("x", x);
      t.setAttribute("y", 25);
      t.setAttribute("text-anchor", "middle");
      t.setAttribute("data-tag", c.Tag);
      t.textContent = c.Tag;
      svg.append(t);
    }
  });
  return svg;
}
