// One VPG: its state, settings, VMs and volumes, checkpoints on a timeline (tagged ones marked), journal
// usage, its tasks and events, and its actions.
import * as api from "../api.js";
import { badge, card, clear, fmtAge, fmtTime, h, progress, table } from "../dom.js";
import { actionMenu } from "./vpgs.js";

export function vpg(root, ctx, id) {
  async function refresh() {
    const [v, vms, checkpoints, tasks, events] = await Promise.all([
      api.get(`/vpgs/${id}`), api.get(`/vms?vpgIdentifier=${encodeURIComponent(id)}`),
      api.get(`/vpgs/${id}/checkpoints?limit=500`), api.get(`/tasks?vpgIdentifier=${encodeURIComponent(id)}&limit=20`),
      api.get(`/events?entityIdentifier=${encodeURIComponent(id)}&limit=20`)]);
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
  }
  return { refresh };
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
