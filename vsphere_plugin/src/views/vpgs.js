// The VPG list: filter by name and status, sort by any column, and the actions of each VPG (as modals).
import * as api from "../api.js";
import { badge, button, clear, fmtAge, h, input, select } from "../dom.js";
import { actionsFor, guardAction } from "../wizards/index.js";
import * as roles from "../roles.js";

const COLUMNS = [
  ["VpgName", "VPG"], ["Status", "Status"], ["SubStatus", "Substatus"], ["Priority", "Priority"],
  ["VmsCount", "VMs"], ["ActualRPO", "RPO"], ["JournalUsedStorageMb", "Journal MB"],
];

export function vpgs(root, ctx) {
  let list = [];
  let sortKey = "VpgName";
  let dir = 1;
  const text = input({ type: "search", placeholder: "name contains", "data-testid": "vpg-filter" });
  const status = select([["", "any status"], "MeetingSLA", "Initializing", "RpoNotMeetingSLA", "HistoryNotMeetingSLA",
    "NotMeetingSLA", "Paused", "FailingOver", "Moving", "Recovered", "Error"], { "data-testid": "vpg-status-filter" });
  const body = h("div");
  const create = button("New VPG", async () => ctx.openWizard("vpg", {}), { testid: "new-vpg" });
  text.addEventListener("input", draw);
  status.addEventListener("change", draw);
  clear(root,
    h("div", { class: "zvr-row" }, h("h1", {}, "VPGs"),
      create),
    h("div", { class: "zvr-row", role: "search" },
      h("label", { for: "vpg-filter-text" }, "Filter"), Object.assign(text, { id: "vpg-filter-text" }),
      h("label", { for: "vpg-filter-status" }, "Status"), Object.assign(status, { id: "vpg-filter-status" })),
    body);

  function draw() {
    const needle = text.value.trim().toLowerCase();
    const shown = list.filter((v) => (!needle || v.VpgName.toLowerCase().includes(needle)) &&
      (!status.value || v.Status === status.value));
    shown.sort((a, b) => {
      const x = a[sortKey] ?? -1;
      const y = b[sortKey] ?? -1;
      return (x > y ? 1 : x < y ? -1 : 0) * dir;
    });
    const head = h("tr", {}, COLUMNS.map(([key, label]) => h("th", {
      scope: "col", class: "left", "aria-sort": key === sortKey ? (dir > 0 ? "ascending" : "descending") : "none",
    }, h("button", { type: "button", class: "zvr-sort", "data-sort": key, onclick: () => {
      dir = key === sortKey ? -dir : 1;
      sortKey = key;
      draw();
    } }, label, key === sortKey ? (dir > 0 ? " ▲" : " ▼") : ""))), h("th", { scope: "col", class: "left" }, "Actions"));
    const rows = shown.map((v) => h("tr", { dataset: { vpg: v.VpgName } },
      h("td", { class: "left" }, h("a", { href: ctx.link(`vpg/${v.VpgIdentifier}`), onclick: ctx.follow(`vpg/${v.VpgIdentifier}`) }, v.VpgName)),
      h("td", { class: "left" }, badge(v.Status)), h("td", { class: "left" }, v.SubStatus),
      h("td", { class: "left" }, v.Priority), h("td", { class: "left" }, v.VmsCount),
      h("td", { class: "left" }, fmtAge(v.ActualRPO)), h("td", { class: "left" }, v.JournalUsedStorageMb.toFixed(1)),
      h("td", { class: "left" }, actionMenu(v, ctx))));
    clear(body, h("table", { class: "table table-compact", "data-testid": "vpg-list" },
      h("caption", { class: "clr-sr-only" }, "VPGs"), h("thead", {}, head),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: COLUMNS.length + 1 }, "No VPG matches.")))));
  }

  async function refresh() {
    [list] = await Promise.all([api.get("/vpgs"), roles.ready()]);
    guardAction(create, "vpg");
    draw();
  }
  return { refresh };
}

/** A select of the VPG's actions; choosing one opens its modal. An action the user's role may not start is
 * a disabled option that says which role it needs. */
export function actionMenu(vpg, ctx) {
  const s = select([["", "Actions…"], ...actionsFor(vpg).map((a) => [a.name, a.label])],
    { "aria-label": `Actions of ${vpg.VpgName}`, "data-testid": `actions-${vpg.VpgName}` });
  for (const o of [...s.options].slice(1)) {
    guardAction(o, o.value, { vpg: vpg.VpgIdentifier });
    if (o.disabled) o.textContent = `${o.textContent} (${o.title.replace(/ \(you are .*\)$/, "")})`;
  }
  s.addEventListener("change", () => {
    const name = s.value;
    s.value = "";
    if (name) ctx.openWizard(name, { vpg: vpg.VpgIdentifier });
  });
  return s;
}
