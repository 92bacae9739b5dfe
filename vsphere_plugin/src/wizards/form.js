// The machinery every modal shares: a form of labelled fields, a submit button that shows at once that it
// was pressed, the API's refusal shown at the field it names, then the task it started, followed to its end.
import * as api from "../api.js";
import { alert, button, clear, clearErrors, field, h, input, progress, select, showError } from "../dom.js";
import { guard } from "../roles.js";

/** Build a control from a field spec: {name, label, kind, options, value, help, min, max}. */
export function control(spec) {
  let c;
  if (spec.kind === "select") c = select(spec.options, {});
  else if (spec.kind === "checkbox") c = h("input", { type: "checkbox", class: "clr-checkbox", checked: spec.value });
  else if (spec.kind === "textarea") c = h("textarea", { class: "clr-textarea", rows: 3 });
  else c = input({ type: spec.kind || "text", min: spec.min, max: spec.max, autocomplete: "off" });
  if (spec.kind !== "checkbox" && spec.value !== undefined && spec.value !== null) c.value = spec.value;
  return c;
}

export function valueOf(c, spec) {
  if (spec.kind === "checkbox") return c.checked;
  if (spec.kind === "number") return c.value === "" ? null : Number(c.value);
  return c.value;
}

/** Follow a task in ``slot`` until it ends; resolves with the task. */
export async function followTask(id, slot) {
  const bar = progress(0, "task progress");
  const step = h("span", { "data-testid": "task-step" });
  clear(slot, h("div", { "data-testid": "task", "data-task": id }, bar, " ", step));
  for (;;) {
    const t = await api.get(`/tasks/${id}`);
    bar.value = t.Status.Progress;
    step.textContent = `${t.Type}: ${t.Status.State} ${t.Status.Progress}% ${t.Step || ""}`;
    slot.firstChild.dataset.state = t.Status.State;
    if (t.Status.State === "Completed" || t.Status.State === "Failed") {
      slot.append(t.Status.State === "Completed" ? alert("success", `${t.Type} completed.`, { testid: "task-done" })
        : alert("danger", `${t.Type} failed: ${t.Error ? t.Error.Message : t.Step}`, { testid: "task-failed" }));
      return t;
    }
    await new Promise((r) => setTimeout(r, 700));
  }
}

/**
 * A one-page modal: ``fields`` (specs), ``call`` [method, path] of the API call it makes, ``body(values)``
 * its body (may refuse a value: refuse() below). Its button is enabled only if the user's role may make the
 * call (roles.js), else it says which role it needs. ``path(values)``, if given, is the path actually called
 * when the call's target is only known once chosen (a checkpoint); ``call`` then names the route (its role).
 * ``after(task, slot)`` shows what the ended task left (a verdict). Returns {title, render(body, footer, close)}.
 */
export function formWizard(title, { intro, fields = [], call, body: makeBody, path: makePath, after, label = "OK",
  danger = false, extra }) {
  return {
    title,
    render(body, footer, close) {
      const controls = fields.map((f) => [f, control(f)]);
      const general = h("div", { "data-testid": "form-error" });
      const taskSlot = h("div");
      const form = h("form", { class: "clr-form", novalidate: true, onsubmit: (e) => e.preventDefault() },
        intro ? h("p", {}, intro) : null, extra ? extra() : null,
        controls.map(([f, c]) => field(f.label, c, { name: f.name, help: f.help })), general, taskSlot);
      clear(body, form);
      const cancel = button("Cancel", async () => close(null), { kind: "btn-outline" });
      const ok = button(label, async () => {
        clearErrors(form);
        clear(general);
        const values = Object.fromEntries(controls.map(([f, c]) => [f.name, valueOf(c, f)]));
        let sent;
        let path = call[1];
        try {
          sent = makeBody ? await makeBody(values) : undefined;
          if (makePath) path = await makePath(values);
        } catch (err) { showError(form, err, general); return; }
        try {
          const res = await api.request(call[0], path, sent);
          ok.dataset.done = "true";
          cancel.textContent = "Close";
          cancel.focus();
          if (typeof res === "string") {
            const task = await followTask(res, taskSlot); // a task id, a bare string
            if (after) await after(task, taskSlot);
          } else taskSlot.append(alert("success", "Done.", { testid: "task-done" }));
        } catch (err) { showError(form, err, general); }
      }, { kind: danger ? "btn-danger" : "btn-primary", testid: "submit" });
      guard(ok, ...call);
      if (ok.disabled) general.append(alert("info", `This action ${ok.title}.`, { testid: "role-note" }));
      clear(footer, cancel, ok);
      const first = form.querySelector("input, select, textarea");
      if (first) first.focus();
    },
  };
}

/** A refusal made in the page, shaped like the API's, so it shows at its field the same way. */
export function refuse(field, message) {
  const err = new api.ApiError(400, { Code: "InvalidRequest", Message: message, Field: field });
  throw err;
}
