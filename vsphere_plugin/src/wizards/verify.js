// The recoverability check of a checkpoint (POST /vpgs/{id}/checkpoints/{cp}/verify): the checkpoint chosen
// with the picker (by default the newest consistent one), the check's task followed to its end, then the
// verdict the check tagged on the checkpoint ("Tested at ...: passed|FAILED"). The recovery site's ZVM runs
// it, with a guest runner: a ZVM without one refuses, naming the setting, and the modal shows that.
import * as api from "../api.js";
import { alert } from "../dom.js";
import { checkpointPicker } from "./checkpoints.js";
import { formWizard, refuse } from "./form.js";

export const verifyPath = (vpg, checkpoint) =>
  `/vpgs/${encodeURIComponent(vpg)}/checkpoints/${encodeURIComponent(checkpoint)}/verify`;

export function verifyWizard(p, call) {
  const picker = checkpointPicker(p.vpg);
  let chosen = null;
  return formWizard("Verify checkpoint", {
    label: "Verify", call, extra: () => picker.el,
    intro: "The checkpoint is booted in an isolated guest on a scratch copy (no network) and checked: file "
      + "system, database integrity, the transactions acknowledged before it. The result is tagged on it. "
      + "Latest: the newest consistent checkpoint.",
    path: async () => {
      chosen = await picker.value();
      if (!chosen) { // "Latest": the newest consistent checkpoint (one taken during a sync is not)
        const [newest] = await api.get(`/vpgs/${encodeURIComponent(p.vpg)}/checkpoints?consistentOnly=true&limit=1`);
        if (!newest) refuse("CheckpointMode", "this VPG has no consistent checkpoint yet: wait until it meets its SLA");
        chosen = newest.CheckpointIdentifier;
      }
      return verifyPath(p.vpg, chosen);
    },
    after: async (task, slot) => {
      const tagged = await api.get(`/vpgs/${encodeURIComponent(p.vpg)}/checkpoints?taggedOnly=true&limit=500`);
      const cp = tagged.find((c) => c.CheckpointIdentifier === chosen);
      if (!cp) return; // gone from the journal meanwhile: the task's own line says how it ended
      const passed = / passed$/.test(cp.Tag);
      slot.append(alert(passed ? "success" : "danger", `Checkpoint tagged: ${cp.Tag}`, { testid: "verify-tag" }));
    },
  });
}
