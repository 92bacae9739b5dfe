// The views on vSphere objects: a VM's protection (or "not protected" with Protect...), a host's VRA with
// Install / Uninstall, and the VPGs whose VMs run in a cluster or a datacenter.
import * as api from "../api.js";
import { badge, button, card, clear, fmtAge, fmtTime, h, table } from "../dom.js";
import { contextObjects } from "../sdk.js";
import { vpgTable } from "./dashboard.js";
import { vraButton } from "./sites.js";
import { guardAction } from "../wizards/index.js";
import * as roles from "../roles.js";

function context(kind) {
  const objs = contextObjects();
  if (!objs.length) throw new Error(`this view shows a ${kind}: open it on one in the vSphere Client`);
  return objs;
}

export function vmView(root, ctx) {
  async function refresh() {
    const [obj] = context("VM");
    await roles.ready(); // the role its Protect... needs
    let pvm = null;
    try {
      pvm = await api.get(`/vms/${encodeURIComponent(obj.moid)}`);
    } catch (err) {
      if (err.status !== 404) throw err;
    }
    if (!pvm) {
      clear(root, h("h1", {}, "ZVR protection"),
        h("p", { "data-testid": "vm-status", "data-vm": obj.moid }, `This VM (${obj.moid}) is not protected.`),
        guardAction(button("Protect...", async () => ctx.openWizard("vpg", { vms: obj.moid }), { testid: "protect" }), "vpg"));
      return;
    }
    const v = await api.get(`/vpgs/${pvm.VpgIdentifier}`);
    clear(root, h("h1", {}, "ZVR protection"),
      h("p", { "data-testid": "vm-status", "data-vm": obj.moid }, `${pvm.VmName} is protected by VPG `,
        h("a", { href: ctx.link(`vpg/${v.VpgIdentifier}`), onclick: ctx.follow(`vpg/${v.VpgIdentifier}`) }, v.VpgName), " ", badge(v.Status)),
      table([{ head: "", cell: (r) => r[0] }, { head: "", cell: (r) => r[1] }], [
        ["RPO", `${fmtAge(v.ActualRPO)} (threshold ${fmtAge(v.ConfiguredRpoSeconds)})`],
        ["Sync state", v.SubStatus], ["Last checkpoint", fmtTime(v.LastCheckpointAt)],
        ["Recovery site", v.RecoverySite.SiteName]], { caption: "Protection" }),
      card("Volumes", table([
        { head: "Volume", cell: (x) => x.FileName }, { head: "Size", cell: (x) => `${Math.round(x.ProvisionedSizeInBytes / 1048576)} MB` },
      ], pvm.Volumes, { caption: "Volumes" })));
  }
  return { refresh };
}

export function hostView(root, ctx) {
  async function refresh() {
    const [obj] = context("host");
    await roles.ready(); // the roles its Install / Uninstall need
    const local = await api.get("/localsite");
    const [hosts, vras] = await Promise.all([api.get(`/virtualizationsites/${local.SiteIdentifier}/hosts`),
      api.get(`/vras?hostIdentifier=${encodeURIComponent(obj.moid)}`)]);
    const host = hosts.find((x) => x.HostIdentifier === obj.moid) || { HostIdentifier: obj.moid, VirtualizationHostName: obj.moid };
    const vra = vras[0];
    clear(root, h("h1", {}, `VRA of ${host.VirtualizationHostName}`),
      vra ? table([{ head: "", cell: (r) => r[0] }, { head: "", cell: (r) => r[1] }], [
        ["VRA", vra.VraName], ["State", badge(vra.State)], ["Address", vra.ControlAddress],
        ["Reachable", vra.Reachable ? "yes" : "no"], ["Protected VMs", vra.ProtectedVmsCount]], { caption: "VRA", testid: "host-vra" })
        : h("p", { "data-testid": "host-vra" }, "No VRA on this host."),
      vraButton(host, vra, ctx));
  }
  return { refresh };
}

export function clusterView(root, ctx) {
  async function refresh() {
    const objs = context("cluster or datacenter");
    const local = await api.get("/localsite");
    const [hosts, vms, vpgs] = await Promise.all([api.get(`/virtualizationsites/${local.SiteIdentifier}/hosts`),
      api.get(`/virtualizationsites/${local.SiteIdentifier}/vms`), api.get("/vpgs")]);
    const ids = new Set(objs.map((o) => o.moid));
    // A datacenter holds every host of this site's inventory (one datacenter per site here); a cluster its own.
    const inside = new Set(hosts.filter((x) => objs.some((o) => o.type === "Datacenter") || ids.has(x.ClusterIdentifier))
      .map((x) => x.HostIdentifier));
    const vpgIds = new Set(vms.filter((m) => inside.has(m.HostIdentifier) && m.VpgIdentifier).map((m) => m.VpgIdentifier));
    clear(root, h("h1", {}, "VPGs with VMs here"), vpgTable(vpgs.filter((v) => vpgIds.has(v.VpgIdentifier)), ctx, { testid: "cluster-vpgs" }));
  }
  return { refresh };
}
