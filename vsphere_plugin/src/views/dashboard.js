// The dashboard (the plugin's global view): both sites and their pairing; every VPG with status, substatus,
// RPO against its threshold, journal history, throughput and IOPS; RPO and throughput over the last hour
// (the statistics API); open alerts; running tasks with their progress; recent events. Polls the API; never
// reloads the page.
import * as api from "../api.js";
import { badge, card, clear, fmtAge, fmtTime, h, progress, table } from "../dom.js";
import { fleetReader } from "../statistics.js";
import { timeChart } from "../chart.js";

export function dashboard(root, ctx) {
  const sites = h("div", { "data-testid": "sites" });
  const vpgs = h("div", { "data-testid": "vpgs" });
  const alerts = h("div", { "data-testid": "alerts" });
  const tasks = h("div", { "data-testid": "tasks" });
  const events = h("div", { "data-testid": "events" });
  const rpoChart = timeChart("RPO over the last hour (seconds)", ["worst", "average"], { unit: " s", testid: "rpo-chart" });
  const tpChart = timeChart("Throughput (MB/s) and IOPS over the last hour", ["MB/s", "IOPS"], { testid: "throughput-chart" });
  const history = fleetReader();
  const updated = h("span", { class: "zvr-muted", "data-testid": "updated", "aria-live": "polite" });
  clear(root,
    h("div", { class: "zvr-row" }, h("h1", {}, "Disaster recovery"), updated),
    h("div", { class: "zvr-grid" }, card("Sites", sites), card("Running tasks", tasks)),
    card("VPGs", vpgs),
    h("div", { class: "zvr-grid" }, card("RPO", rpoChart.el), card("Throughput", tpChart.el)),
    h("div", { class: "zvr-grid" }, card("Open alerts", alerts), card("Recent events", events)));

  async function refresh() {
    // The hour's statistics of every VPG can be a large first read: the charts follow when it comes, and the
    // tables do not wait for it (a failed read leaves the charts as they were; the next refresh reads again).
    history().then((stats) => {
      rpoChart.update([stats.series.t, stats.series.rpoMax, stats.series.rpoAvg], stats.hour);
      tpChart.update([stats.series.t, stats.series.mbps, stats.series.iops], stats.hour);
    }, () => {});
    const [local, peers, vpgList, alertList, taskList, eventList] = await Promise.all([
      api.get("/localsite"), api.get("/peersites"), api.get("/vpgs"), api.get("/alerts?isActive=true&limit=50"),
      api.get("/tasks?limit=30"), api.get("/events?limit=12")]);
    window.zvrStats.liveAt = window.zvrStats.liveAt || performance.now();
    clear(sites, table([
      { head: "Site", cell: (s) => s.name },
      { head: "Role", cell: (s) => s.role },
      { head: "Address", cell: (s) => s.address },
      { head: "Pairing", cell: (s) => (s.status ? badge(s.status) : "this ZVM") },
    ], [{ name: local.SiteName, role: "local", address: `${local.IpAddress}:${local.Port}` },
      ...peers.map((p) => ({ name: p.PeerSiteName, role: "peer", address: `${p.HostName}:${p.Port}`, status: p.PairingStatus }))],
    { caption: "Sites", testid: "sites-table" }));
    clear(vpgs, vpgTable(vpgList, ctx));
    clear(alerts, table([
      { head: "Level", cell: (a) => badge(a.Level) },
      { head: "Alert", cell: (a) => a.Description },
      { head: "Since", cell: (a) => fmtTime(a.TurnedOn) },
    ], alertList, { caption: "Open alerts", testid: "alerts-table", empty: "No open alerts." }));
    const running = taskList.filter((t) => t.Status.State === "InProgress" || t.Status.State === "Pending");
    clear(tasks, table([
      { head: "Task", cell: (t) => t.Type },
      { head: "Progress", cell: (t) => h("span", {}, progress(t.Status.Progress, `${t.Type} progress`), ` ${t.Status.Progress}%`) },
      { head: "Step", cell: (t) => t.Step },
    ], running, { caption: "Running tasks", testid: "tasks-table", empty: "No task is running." }));
    clear(events, table([
      { head: "When", cell: (e) => fmtTime(e.Started) },
      { head: "Event", cell: (e) => e.EventType },
      { head: "User", cell: (e) => e.User },
      { head: "Result", cell: (e) => e.Result },
    ], eventList, { caption: "Recent events", testid: "events-table" }));
    updated.textContent = `updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}`;
  }
  return { refresh, repaint: () => { rpoChart.repaint(); tpChart.repaint(); } };
}

function rpoCell(v) {
  if (v.ActualRPO === null || v.ActualRPO === undefined) return "—";
  const over = v.ActualRPO > v.ConfiguredRpoSeconds;
  return h("span", { "data-rpo": v.ActualRPO, title: `threshold ${v.ConfiguredRpoSeconds} s` },
    h("progress", { class: "zvr-rpo", max: v.ConfiguredRpoSeconds, value: Math.min(v.ActualRPO, v.ConfiguredRpoSeconds),
      "aria-label": `RPO of ${v.VpgName} against its threshold` }),
    ` ${fmtAge(v.ActualRPO)} / ${fmtAge(v.ConfiguredRpoSeconds)}${over ? " (over)" : ""}`);
}

export function vpgTable(list, ctx, { testid = "vpg-table" } = {}) {
  return table([
    { head: "VPG", cell: (v) => h("a", { href: ctx.link(`vpg/${v.VpgIdentifier}`), onclick: ctx.follow(`vpg/${v.VpgIdentifier}`) }, v.VpgName) },
    { head: "Status", cell: (v) => badge(v.Status) },
    { head: "Substatus", cell: (v) => v.SubStatus },
    { head: "Recovery site", cell: (v) => v.RecoverySite.SiteName },
    { head: "VMs", cell: (v) => v.VmsCount },
    { head: "RPO / threshold", cell: rpoCell },
    { head: "History (actual / configured)", cell: (v) => `${fmtAge(v.HistoryStatusApi.ActualHistoryInMinutes * 60)} / ${fmtAge(v.HistoryStatusApi.ConfiguredHistoryInMinutes * 60)}` },
    { head: "Journal", cell: (v) => `${v.JournalUsedStorageMb.toFixed(1)} MB` },
    { head: "MB/s", cell: (v) => v.ThroughputInMB.toFixed(2) },
    { head: "IOPS", cell: (v) => v.IOPs },
  ], list.map((v) => ({ ...v, _data: { vpg: v.VpgName } })), { caption: "VPGs", testid, empty: "No VPG yet." });
}
