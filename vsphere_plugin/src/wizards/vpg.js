// The New / Edit VPG wizard: a vpgSettings draft filled step by step (general, VMs, recovery, journal,
// networks and re-IP, boot groups), a summary, then commit with its task shown. A refusal of the commit
// names a field: the wizard goes back to that field's step and shows it there. Cancel discards the draft.
import * as api from "../api.js";
import { alert, button, clear, clearErrors, field, h, input, select, showError } from "../dom.js";
import { followTask } from "./form.js";
import { refusal } from "../roles.js";

const STEPS = ["General", "VMs", "Recovery", "Journal", "Networks", "Boot order", "Summary"];

export function vpgWizard(params) {
  const editing = params.vpg || null;
  return {
    title: editing ? "Edit VPG" : "New VPG",
    async render(body, footer, close) {
      const general = h("div", { "data-testid": "form-error" });
      const why = refusal("POST", "/vpgSettings");
      if (why) {
        clear(body, alert("info", `${editing ? "Editing" : "Creating"} a VPG ${why}.`, { testid: "role-note" }));
        clear(footer, button("Close", async () => close(null), { kind: "btn-outline", testid: "cancel" }));
        return;
      }
      clear(body, h("p", {}, "Preparing the draft…"));
      let sid;
      let doc;
      try {
        sid = await api.post("/vpgSettings", editing ? { VpgIdentifier: editing } : undefined);
        doc = await api.get(`/vpgSettings/${sid}`);
      } catch (err) { clear(body, alert("danger", err.message)); return; }
      const local = await api.get("/localsite");
      const sites = await api.get("/virtualizationsites");
      const preselected = new Set(String(params.vms || "").split(",").filter(Boolean));
      if (!editing && preselected.size) doc.Vms = [...preselected].map((id) => ({ VmIdentifier: id, BootGroupName: null }));
      if (!doc.Basic.RecoverySiteIdentifier) {
        const peer = sites.find((s) => !s.IsLocal);
        doc.Basic.RecoverySiteIdentifier = (peer || sites[0]).SiteIdentifier;
      }
      const vms = (await api.get(`/virtualizationsites/${local.SiteIdentifier}/vms`))
        .filter((vm) => !vm.VmName.startsWith("Z-VRA-") && (!vm.VpgIdentifier || vm.VpgIdentifier === editing));
      let site = {};
      async function loadSite() {
        const id = doc.Basic.RecoverySiteIdentifier;
        const [hosts, datastores, folders, networks] = await Promise.all(["hosts", "datastores", "folders", "networks"]
          .map((k) => api.get(`/virtualizationsites/${id}/${k}`)));
        site = { hosts, datastores, folders, networks };
      }
      await loadSite();

      // --- the controls, kept across steps; their data-field is the API's field name
      const c = {
        name: input({ value: doc.Basic.Name || "" }),
        priority: select(["Low", "Medium", "High"]),
        rpo: input({ type: "number", min: 10, max: 86400, value: doc.Basic.RpoInSeconds }),
        wan: h("input", { type: "checkbox", class: "clr-checkbox", checked: doc.Basic.UseWanCompression }),
        site: select(sites.map((s) => [s.SiteIdentifier, `${s.VirtualizationSiteName}${s.IsLocal ? " (this site)" : ""}`])),
        host: select([]), datastore: select([]), folder: select([]),
        history: input({ type: "number", min: 1, max: 720, value: doc.Basic.JournalHistoryInHours }),
        hard: input({ type: "number", min: 0, value: doc.Journal.HardLimitInMB }),
        warn: input({ type: "number", min: 0, value: doc.Journal.WarningThresholdInMB }),
        failoverNet: select([]), testNet: select([]),
      };
      c.priority.value = doc.Basic.Priority;
      c.site.value = doc.Basic.RecoverySiteIdentifier;
      const vmBoxes = vms.map((vm) => h("input", { type: "checkbox", class: "clr-checkbox", value: vm.VmIdentifier,
        id: `vm-${vm.VmIdentifier}`, checked: doc.Vms.some((x) => x.VmIdentifier === vm.VmIdentifier), "data-vm": vm.VmName }));
      const bootGroups = doc.BootGroups.length ? doc.BootGroups.map((g) => ({ ...g })) : [];
      const reip = {};
      for (const v of doc.Vms) reip[v.VmIdentifier] = v;

      function fillSiteSelects() {
        const opt = (items, id, name, none) => [...(none ? [["", none]] : []), ...items.map((x) => [x[id], x[name]])];
        const refill = (s, options, value) => { s.replaceChildren(...options.map(([v, t]) => h("option", { value: v }, t))); s.value = value || ""; };
        refill(c.host, opt(site.hosts, "HostIdentifier", "VirtualizationHostName", "choose a host"), doc.Recovery.DefaultHostIdentifier);
        refill(c.datastore, opt(site.datastores, "DatastoreIdentifier", "DatastoreName", "choose a datastore"), doc.Recovery.DefaultDatastoreIdentifier);
        refill(c.folder, opt(site.folders, "FolderIdentifier", "Path", "default folder"), doc.Recovery.DefaultFolderIdentifier);
        refill(c.failoverNet, opt(site.networks, "NetworkIdentifier", "VirtualizationNetworkName", "none"), doc.Networks.FailoverNetworkIdentifier);
        refill(c.testNet, opt(site.networks, "NetworkIdentifier", "VirtualizationNetworkName", "none"), doc.Networks.FailoverTestNetworkIdentifier);
      }
      fillSiteSelects();
      c.site.addEventListener("change", async () => {
        doc.Basic.RecoverySiteIdentifier = c.site.value;
        doc.Recovery = { DefaultHostIdentifier: null, DefaultHostClusterIdentifier: null, DefaultDatastoreIdentifier: null, DefaultFolderIdentifier: null };
        await loadSite();
        fillSiteSelects();
      });

      const vmFilter = input({ type: "search", "aria-label": "Filter VMs by name" });
      vmFilter.addEventListener("input", () => {
        for (const b of vmBoxes) b.parentElement.hidden = !b.dataset.vm.toLowerCase().includes(vmFilter.value.toLowerCase());
      });
      const pages = [
        () => [field("Name", c.name, { name: "Basic.Name" }), field("Priority", c.priority, { name: "Basic.Priority" }),
          field("RPO alert (seconds)", c.rpo, { name: "Basic.RpoInSeconds", help: "alert when the RPO is above this" }),
          field("WAN compression", c.wan, { name: "Basic.UseWanCompression" })],
        () => [h("fieldset", { "data-field": "Vms", tabindex: "-1", id: "vpg-vms", "aria-describedby": "vpg-vms-err" },
          h("legend", {}, "VMs to protect (the VRAs are never offered)"), field("Filter", vmFilter),
          h("div", { class: "zvr-vm-list" }, vmBoxes.map((b) => h("div", { class: "clr-checkbox-wrapper" }, b,
            h("label", { for: b.id, class: "clr-control-label" }, b.dataset.vm)))),
          h("span", { class: "zvr-field-error", id: "vpg-vms-err", role: "alert", hidden: true }))],
        () => [field("Recovery site", c.site, { name: "Basic.RecoverySiteIdentifier" }),
          field("Host", c.host, { name: "Recovery.DefaultHostIdentifier" }),
          field("Datastore", c.datastore, { name: "Recovery.DefaultDatastoreIdentifier" }),
          field("Folder", c.folder, { name: "Recovery.DefaultFolderIdentifier" })],
        () => [field("Journal history (hours)", c.history, { name: "Basic.JournalHistoryInHours" }),
          field("Hard limit (MB, 0: none)", c.hard, { name: "Journal.HardLimitInMB" }),
          field("Warning at (MB, 0: none)", c.warn, { name: "Journal.WarningThresholdInMB" })],
        () => [field("Failover network", c.failoverNet, { name: "Networks.FailoverNetworkIdentifier" }),
          field("Failover test network", c.testNet, { name: "Networks.FailoverTestNetworkIdentifier" }),
          reipTable()],
        () => bootTable(),
        () => summary(),
      ];
      const fieldStep = (name) => {
        if (!name) return null;
        if (name.startsWith("Vms")) return 1;
        if (name.startsWith("BootGroups")) return 5;
        if (/^(Recovery\.|Basic\.RecoverySite)/.test(name)) return 2;
        if (/^(Journal\.|Basic\.JournalHistory)/.test(name)) return 3;
        if (name.startsWith("Networks")) return 4;
        return 0;
      };

      function selectedVms() { return vmBoxes.filter((b) => b.checked).map((b) => b.value); }

      function reipTable() {
        const rows = selectedVms().map((id) => {
          const vm = vms.find((x) => x.VmIdentifier === id) || { VmName: id };
          const cur = (reip[id] && reip[id].Nics && reip[id].Nics[0] && reip[id].Nics[0].FailoverIp) || {};
          const ip = input({ value: cur.IpAddress || "", "aria-label": `Failover IP of ${vm.VmName}`, placeholder: "DHCP" });
          const mask = input({ value: cur.SubnetMask || "", "aria-label": `Subnet mask of ${vm.VmName}`, placeholder: "255.255.255.0" });
          const save = () => {
            reip[id] = { ...(reip[id] || { VmIdentifier: id }), Nics: ip.value.trim() ? [{ NicIdentifier: "Network adapter 1",
              FailoverIp: { IpAddress: ip.value.trim(), SubnetMask: mask.value.trim() || "255.255.255.0", Gateway: null, DnsServers: [] }, FailoverTestIp: null }] : [] };
          };
          ip.addEventListener("change", save);
          mask.addEventListener("change", save);
          return h("tr", {}, h("td", { class: "left" }, vm.VmName), h("td", {}, ip), h("td", {}, mask));
        });
        return h("table", { class: "table table-compact" }, h("caption", {}, "Re-IP on failover (first NIC; empty: DHCP)"),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "VM"), h("th", { scope: "col" }, "IP address"), h("th", { scope: "col" }, "Subnet mask"))),
          h("tbody", {}, rows));
      }

      function bootTable() {
        const wrap = h("div", { "data-field": "BootGroups", tabindex: "-1", id: "vpg-boot", "aria-describedby": "vpg-boot-err" });
        const draw = () => {
          clear(wrap, h("p", {}, "Boot groups start in this order, each after its delay; VMs without a group start first."),
            bootGroups.map((g, i) => {
              const name = input({ value: g.Name, "aria-label": `Boot group ${i + 1} name` });
              const delay = input({ type: "number", min: 0, max: 3600, value: g.BootDelayInSeconds, "aria-label": `Boot group ${i + 1} delay in seconds` });
              name.addEventListener("change", () => { g.Name = name.value; });
              delay.addEventListener("change", () => { g.BootDelayInSeconds = Number(delay.value); });
              return h("div", { class: "zvr-row" }, name, delay, button("Remove", async () => { bootGroups.splice(i, 1); draw(); }, { kind: "btn-link", small: true }));
            }),
            button("Add boot group", async () => { bootGroups.push({ Name: `Group ${bootGroups.length + 1}`, BootDelayInSeconds: 30 }); draw(); },
              { kind: "btn-outline", small: true }),
            selectedVms().map((id) => {
              const vm = vms.find((x) => x.VmIdentifier === id) || { VmName: id };
              const s = select([["", "no group"], ...bootGroups.map((g) => [g.Name, g.Name])], { "aria-label": `Boot group of ${vm.VmName}` });
              s.value = (reip[id] && reip[id].BootGroupName) || "";
              s.addEventListener("change", () => { reip[id] = { ...(reip[id] || { VmIdentifier: id }), BootGroupName: s.value || null }; });
              return h("div", { class: "zvr-row" }, h("span", {}, vm.VmName), s);
            }),
            h("span", { class: "zvr-field-error", id: "vpg-boot-err", role: "alert", hidden: true }));
        };
        draw();
        return wrap;
      }

      function collect() {
        const num = (x) => (x.value === "" ? null : Number(x.value));
        doc.Basic = { ...doc.Basic, Name: c.name.value, Priority: c.priority.value, RpoInSeconds: num(c.rpo),
          UseWanCompression: c.wan.checked, RecoverySiteIdentifier: c.site.value, JournalHistoryInHours: num(c.history) };
        doc.Journal = { ...doc.Journal, HardLimitInMB: num(c.hard), WarningThresholdInMB: num(c.warn) };
        doc.Recovery = { ...doc.Recovery, DefaultHostIdentifier: c.host.value || null,
          DefaultDatastoreIdentifier: c.datastore.value || null, DefaultFolderIdentifier: c.folder.value || null };
        doc.Networks = { FailoverNetworkIdentifier: c.failoverNet.value || null, FailoverTestNetworkIdentifier: c.testNet.value || null };
        doc.BootGroups = bootGroups.map((g) => ({ Name: g.Name, BootDelayInSeconds: g.BootDelayInSeconds }));
        const groups = new Set(doc.BootGroups.map((g) => g.Name));
        doc.Vms = selectedVms().map((id) => {
          const r = reip[id] || {};
          return { VmIdentifier: id, BootGroupName: groups.has(r.BootGroupName) ? r.BootGroupName : null, ...(r.Nics ? { Nics: r.Nics } : {}) };
        });
      }

      function summary() {
        collect();
        const name = (items, id, key, label) => (items.find((x) => x[id] === key) || {})[label] || "—";
        const rows = [["Name", doc.Basic.Name], ["Priority", doc.Basic.Priority], ["RPO alert", `${doc.Basic.RpoInSeconds} s`],
          ["VMs", doc.Vms.map((v) => (vms.find((x) => x.VmIdentifier === v.VmIdentifier) || { VmName: v.VmIdentifier }).VmName).join(", ") || "none"],
          ["Recovery site", name(sites, "SiteIdentifier", doc.Basic.RecoverySiteIdentifier, "VirtualizationSiteName")],
          ["Host", name(site.hosts, "HostIdentifier", doc.Recovery.DefaultHostIdentifier, "VirtualizationHostName")],
          ["Datastore", name(site.datastores, "DatastoreIdentifier", doc.Recovery.DefaultDatastoreIdentifier, "DatastoreName")],
          ["Journal", `${doc.Basic.JournalHistoryInHours} h history, limit ${doc.Journal.HardLimitInMB || "none"} MB`],
          ["Networks", `failover ${name(site.networks, "NetworkIdentifier", doc.Networks.FailoverNetworkIdentifier, "VirtualizationNetworkName")}, test ${name(site.networks, "NetworkIdentifier", doc.Networks.FailoverTestNetworkIdentifier, "VirtualizationNetworkName")}`],
          ["Boot groups", doc.BootGroups.map((g) => `${g.Name} (+${g.BootDelayInSeconds} s)`).join(", ") || "none"]];
        return h("table", { class: "table table-compact", "data-testid": "vpg-summary" }, h("caption", {}, "Summary"),
          h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", { scope: "row", class: "left" }, k), h("td", { class: "left" }, v)))));
      }

      // --- navigation
      let step = 0;
      const nav = h("ol", { class: "zvr-steps", "aria-label": "Wizard steps" });
      const page = h("div");
      const taskSlot = h("div");
      const form = h("form", { class: "clr-form", novalidate: true, onsubmit: (e) => e.preventDefault(), "aria-label": this.title }, nav, page, general, taskSlot);
      clear(body, form);
      const back = button("Back", async () => show(step - 1), { kind: "btn-outline", testid: "back" });
      const next = button("Next", async () => show(step + 1), { testid: "next" });
      const cancel = button("Cancel", async () => {
        if (sid && !finished) { try { await api.del(`/vpgSettings/${sid}`); } catch { /* the draft expires by itself */ } }
        close(null);
      }, { kind: "btn-outline", testid: "cancel" });
      let finished = false;
      const commit = button(editing ? "Save" : "Create VPG", async () => {
        clearErrors(form);
        clear(general);
        collect();
        try {
          await api.put(`/vpgSettings/${sid}`, { Basic: doc.Basic, Journal: doc.Journal, Recovery: doc.Recovery,
            Networks: doc.Networks, BootGroups: doc.BootGroups, Vms: doc.Vms });
          const t = await api.post(`/vpgSettings/${sid}/commit`);
          finished = true;
          commit.dataset.done = "true";
          back.disabled = true;
          cancel.textContent = "Close";
          cancel.focus();
          await followTask(t, taskSlot);
        } catch (err) {
          const target = fieldStep(err.field);
          if (target !== null) show(target, true);
          showError(form, err, general);
        }
      }, { testid: "commit" });
      clear(footer, cancel, back, next, commit);

      function show(i, keepErrors = false) {
        if (i < 0 || i >= STEPS.length) return;
        if (!keepErrors) { clearErrors(form); clear(general); }
        if (step === 1 || i > 1) collect();
        step = i;
        clear(nav, STEPS.map((s, j) => h("li", { "aria-current": j === step ? "step" : null }, `${j + 1}. ${s}`)));
        clear(page, h("h3", { tabindex: "-1", "data-testid": "step-title" }, STEPS[step]), pages[step]());
        back.disabled = step === 0;
        next.hidden = step === STEPS.length - 1;
        commit.hidden = step !== STEPS.length - 1;
        const first = page.querySelector("input, select, textarea");
        if (first && !keepErrors) {
          first.focus();
          if (first.type === "text") first.select(); // typing replaces a default such as "New VPG"
        }
      }
      show(0);
    },
  };
}
