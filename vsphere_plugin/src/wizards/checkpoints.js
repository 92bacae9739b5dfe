// The checkpoint picker: the latest, the latest tagged, or one chosen from the list filtered by kind
// (all, tagged, consistent) and by time.
import * as api from "../api.js";
import { clear, field, h, select } from "../dom.js";

export function checkpointPicker(vpgId) {
  const mode = select([["latest", "Latest"], ["tagged", "Latest tagged"], ["choose", "Choose from the list"]],
    { "data-testid": "cp-mode" });
  const kind = select([["all", "All"], ["tagged", "Tagged"], ["consistent", "Consistent"]], { "data-testid": "cp-kind" });
  const since = select([["3600", "Last hour"], ["86400", "Last day"], ["", "Any time"]], { "data-testid": "cp-since" });
  const list = select([], { "data-testid": "cp-list" });
  const chooser = h("div", { hidden: true }, field("Kind", kind), field("Taken in", since),
    field("Checkpoint", list, { name: "CheckpointIdentifier" }));
  let checkpoints = [];
  let asked = 0;
  async function load() {
    const mine = ++asked; // an answer to an older choice must not replace a newer one
    const q = new URLSearchParams({ limit: "500" });
    if (kind.value === "tagged") q.set("taggedOnly", "true");
    if (kind.value === "consistent") q.set("consistentOnly", "true");
    if (since.value) q.set("startDate", new Date(Date.now() - Number(since.value) * 1000).toISOString());
    const found = await api.get(`/vpgs/${vpgId}/checkpoints?${q}`); // newest first
    if (mine !== asked) return;
    checkpoints = found;
    clear(list, ...checkpoints.map((c) => h("option", { value: c.CheckpointIdentifier },
      `${new Date(c.TimeStamp).toLocaleString(undefined, { hour12: false })}${c.Tag ? ` — ${c.Tag}` : ""}${c.IsConsistent ? "" : " (not consistent)"}`)));
  }
  mode.addEventListener("change", () => { chooser.hidden = mode.value !== "choose"; if (!chooser.hidden) load(); });
  kind.addEventListener("change", load);
  since.addEventListener("change", load);
  const el = h("div", {}, field("Checkpoint", mode, { name: "CheckpointMode" }), chooser);
  return {
    el,
    /** The CheckpointIdentifier to send (undefined: the newest). */
    async value() {
      if (mode.value === "latest") return undefined;
      if (mode.value === "tagged") {
        const tagged = await api.get(`/vpgs/${vpgId}/checkpoints?taggedOnly=true&limit=1`);
        if (!tagged.length) {
          throw new api.ApiError(400, { Code: "InvalidRequest", Field: "CheckpointMode",
            Message: "this VPG has no tagged checkpoint in its journal: tag one first, or pick another" });
        }
        return tagged[0].CheckpointIdentifier; // newest first
      }
      return list.value || undefined;
    },
  };
}
