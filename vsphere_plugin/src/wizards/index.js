// Every action of the plugin as a modal, by name: the VPG wizard and the one-page actions, each with the API
// call it makes (CALLS). ``actionsFor`` says which a VPG offers in its state, enabled if the user's role may
// make its call (roles.js); the API still decides (a refusal shows in the modal).
import * as api from "../api.js";
import { h } from "../dom.js";
import { guard } from "../roles.js";
import { checkpointPicker } from "./checkpoints.js";
import { formWizard, refuse } from "./form.js";
import { verifyPath, verifyWizard } from "./verify.js";
import { vpgWizard } from "./vpg.js";

const POLICIES = ["Commit", "Rollback", "None"];
const vpgPath = (p, action) => `/vpgs/${encodeURIComponent(p.vpg)}${action ? `/${action}` : ""}`;
const compact = (o) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== null && v !== undefined && v !== ""));

/** The call each action makes: [method, path under /v1]. */
export const CALLS = {
  vpg: () => ["POST", "/vpgSettings"],
  failoverTest: (p) => ["POST", vpgPath(p, "failoverTest")],
  failoverTestStop: (p) => ["POST", vpgPath(p, "failoverTestStop")],
  failover: (p) => ["POST", vpgPath(p, "Failover")],
  move: (p) => ["POST", vpgPath(p, "move")],
  failoverCommit: (p) => ["POST", vpgPath(p, "FailoverCommit")],
  failoverRollback: (p) => ["POST", vpgPath(p, "FailoverRollback")],
  moveCommit: (p) => ["POST", vpgPath(p, "moveCommit")],
  moveRollback: (p) => ["POST", vpgPath(p, "moveRollback")],
  tag: (p) => ["POST", vpgPath(p, "checkpoints")],
  verify: (p) => ["POST", verifyPath(p.vpg, p.checkpoint || "x")],
  pause: (p) => ["POST", vpgPath(p, "pause")],
  resume: (p) => ["POST", vpgPath(p, "resume")],
  forceSync: (p) => ["POST", vpgPath(p, "forcesync")],
  delete: (p) => ["DELETE", vpgPath(p)],
  installVra: () => ["POST", "/vras"],
  uninstallVra: (p) => ["DELETE", `/vras/${encodeURIComponent(p.vra || "x")}`],
  unpair: (p) => ["DELETE", `/peersites/${encodeURIComponent(p.site || "x")}`],
  pair: () => ["POST", "/peersites"],
  generateToken: () => ["POST", "/peersites/generatetoken"],
};

/** Disable ``control`` (a button or a menu option) when the user's role may not make action ``name``'s call. */
export const guardAction = (control, name, p = {}) => guard(control, ...CALLS[name]({ vpg: "x", ...p }));

function withPicker(title, call, p, fields, build, opts = {}) {
  const picker = checkpointPicker(p.vpg);
  return formWizard(title, {
    ...opts, call, fields, extra: () => picker.el,
    body: async (v) => build(v, await picker.value()),
  });
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

export const WIZARDS = {
  vpg: (p) => vpgWizard(p),
  failoverTest: (p) => withPicker("Failover test", CALLS.failoverTest(p), p, [
    { name: "ScratchLimitInMB", label: "Scratch limit (MB, 0: none)", kind: "number", min: 0 },
  ], (v, cp) => compact({ CheckpointIdentifier: cp, ScratchLimitInMB: v.ScratchLimitInMB }),
  { label: "Start test", intro: "Test VMs are created on the test network from the checkpoint; replication goes on." }),
  failoverTestStop: (p) => formWizard("Stop failover test", {
    label: "Stop test",
    fields: [{ name: "FailoverTestSuccess", label: "The test succeeded", kind: "checkbox", value: true },
      { name: "FailoverTestSummary", label: "Notes", kind: "textarea" }],
    call: CALLS.failoverTestStop(p), body: compact,
  }),
  failover: (p) => withPicker("Failover", CALLS.failover(p), p, [
    { name: "CommitPolicy", label: "Commit policy", kind: "select", options: POLICIES },
    { name: "CommitPolicyTimeoutInSeconds", label: "Commit after (seconds)", kind: "number", value: 600, min: 0 },
    { name: "ShutdownPolicy", label: "Source VMs", kind: "select", options: [["None", "Leave as they are"], ["Shutdown", "Shut down"], ["ForceShutdown", "Shut down, then power off"]] },
    { name: "ShutdownTimeoutInSeconds", label: "Shutdown timeout (seconds)", kind: "number", value: 300, min: 1 },
    { name: "ReverseProtection", label: "Reverse protection on commit", kind: "checkbox", value: false },
  ], (v, cp) => compact({ ...v, CheckpointIdentifier: cp }),
  { label: "Fail over", danger: true }),
  move: (p) => formWizard("Move", {
    label: "Move", danger: true, intro: "Planned migration: the source VMs shut down, a last sync, then recovery. No data is lost.",
    fields: [{ name: "CommitPolicy", label: "Commit policy", kind: "select", options: POLICIES },
      { name: "CommitPolicyTimeoutInSeconds", label: "Commit after (seconds)", kind: "number", value: 600, min: 0 },
      { name: "ForceShutdown", label: "Power off VMs that do not shut down in time", kind: "checkbox", value: true },
      { name: "ShutdownTimeoutInSeconds", label: "Shutdown timeout (seconds)", kind: "number", value: 300, min: 1 },
      { name: "ReverseProtection", label: "Reverse protection", kind: "checkbox", value: true }],
    call: CALLS.move(p), body: compact,
  }),
  failoverCommit: (p) => formWizard("Commit failover", {
    fields: [{ name: "ReverseProtection", label: "Reverse protection", kind: "checkbox", value: false }],
    call: CALLS.failoverCommit(p), body: (v) => v, label: "Commit" }),
  failoverRollback: (p) => formWizard("Roll back failover", {
    intro: "The recovered VMs are removed; the source VMs stay protected.", label: "Roll back", danger: true,
    call: CALLS.failoverRollback(p) }),
  moveCommit: (p) => formWizard("Commit move", {
    fields: [{ name: "ReverseProtection", label: "Reverse protection", kind: "checkbox", value: true }],
    call: CALLS.moveCommit(p), body: (v) => v, label: "Commit" }),
  moveRollback: (p) => formWizard("Roll back move", { label: "Roll back", danger: true,
    call: CALLS.moveRollback(p) }),
  tag: (p) => formWizard("Tag checkpoint", {
    label: "Tag", intro: "A checkpoint is taken now and tagged with this name.",
    fields: [{ name: "CheckpointName", label: "Tag", kind: "text" }],
    call: CALLS.tag(p), body: (v) => v,
  }),
  verify: (p) => verifyWizard(p, CALLS.verify(p)),
  pause: (p) => formWizard("Pause replication", { label: "Pause", intro: "Writes are tracked and sent when replication resumes.",
    call: CALLS.pause(p) }),
  resume: (p) => formWizard("Resume replication", { label: "Resume", call: CALLS.resume(p) }),
  forceSync: (p) => formWizard("Force sync", { label: "Force sync", intro: "Every volume is compared block by block and what differs is sent.",
    call: CALLS.forceSync(p) }),
  delete: (p) => formWizard("Delete VPG", {
    label: "Delete", danger: true,
    fields: [{ name: "KeepRecoveryVolumes", label: "Keep the recovery volumes", kind: "checkbox", value: false },
      { name: "Force", label: "Delete even if the VRAs cannot be reached", kind: "checkbox", value: false }],
    call: CALLS.delete(p), body: (v) => v,
  }),
  installVra: (p) => installVra(p),
  uninstallVra: (p) => formWizard(`Uninstall ${p.name || "VRA"}`, { label: "Uninstall", danger: true,
    call: CALLS.uninstallVra(p) }),
  unpair: (p) => formWizard(`Unpair ${p.name || "site"}`, { label: "Unpair", danger: true,
    intro: "VPGs between the two sites stop replicating.",
    call: CALLS.unpair(p) }),
};

function installVra(p) {
  let local = null;
  const state = { ds: [], nets: [] };
  const wiz = formWizard("Install VRA", {
    label: "Install",
    fields: [
      { name: "DatastoreIdentifier", label: "Datastore", kind: "select", options: [] },
      { name: "NetworkIdentifier", label: "Network", kind: "select", options: [] },
      { name: "Mode", label: "Address", kind: "select", options: [["Dhcp", "DHCP"], ["Static", "Static IP"]] },
      { name: "VraIPAddress", label: "IP address", kind: "text", help: "static only" },
      { name: "SubnetMask", label: "Subnet mask", kind: "text", value: "255.255.255.0" },
      { name: "DefaultGateway", label: "Gateway", kind: "text" },
    ],
    call: CALLS.installVra(p),
    body: (v) => {
      const body = { HostIdentifier: p.host, DatastoreIdentifier: v.DatastoreIdentifier, NetworkIdentifier: v.NetworkIdentifier };
      if (v.Mode === "Static") {
        if (!IPV4.test(v.VraIPAddress)) refuse("VraIPAddress", "give an IPv4 address, e.g. 10.0.0.21");
        if (!IPV4.test(v.SubnetMask)) refuse("SubnetMask", "give a subnet mask, e.g. 255.255.255.0");
        if (v.DefaultGateway && !IPV4.test(v.DefaultGateway)) refuse("DefaultGateway", "give an IPv4 address or leave it empty");
        body.VraNetworkDataApi = { VraIPConfigurationTypeApi: "Static", VraIPAddress: v.VraIPAddress, SubnetMask: v.SubnetMask, DefaultGateway: v.DefaultGateway };
      }
      return body;
    },
  });
  const render = wiz.render;
  wiz.render = async (body, footer, close) => {
    render(body, footer, close);
    local = await api.get("/localsite");
    [state.ds, state.nets] = await Promise.all([api.get(`/virtualizationsites/${local.SiteIdentifier}/datastores`),
      api.get(`/virtualizationsites/${local.SiteIdentifier}/networks`)]);
    const fill = (name, items, id, label) => {
      const s = body.querySelector(`[data-field="${name}"]`);
      s.replaceChildren(...items.map((x) => h("option", { value: x[id] }, x[label])));
    };
    fill("DatastoreIdentifier", state.ds, "DatastoreIdentifier", "DatastoreName");
    fill("NetworkIdentifier", state.nets, "NetworkIdentifier", "VirtualizationNetworkName");
  };
  return wiz;
}

export function actionsFor(v) {
  const sub = v.SubStatus;
  const out = [["vpg", "Edit VPG"]];
  if (sub === "Testing") out.push(["failoverTestStop", "Stop failover test"]);
  else out.push(["failoverTest", "Failover test"]);
  if (sub === "FailingOverBeforeCommit") out.push(["failoverCommit", "Commit failover"], ["failoverRollback", "Roll back failover"]);
  else if (sub === "MovingBeforeCommit") out.push(["moveCommit", "Commit move"], ["moveRollback", "Roll back move"]);
  else out.push(["failover", "Failover"], ["move", "Move"]);
  out.push(["tag", "Tag checkpoint"], ["verify", "Verify checkpoint"], v.IsPaused ? ["resume", "Resume"] : ["pause", "Pause"], ["forceSync", "Force sync"], ["delete", "Delete"]);
  return out.map(([name, label]) => ({ name, label }));
}
