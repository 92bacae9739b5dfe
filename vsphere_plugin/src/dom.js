// Small DOM helpers: element building without innerHTML (text is always text), the pressed-button rule
// (a button shows at once that it was pressed and cannot be pressed again until its work ends), field errors.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
export const newId = (prefix = "zvr") => `${prefix}-${++uid}`;

/** Run ``work`` for a button press: disabled and marked busy at once, restored when the work ends. */
export function pressed(button, work) {
  return async (event) => {
    if (event) event.preventDefault();
    if (button.disabled || button.getAttribute("aria-busy") === "true") return;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    const label = button.textContent;
    button.dataset.label = label;
    button.textContent = `${label}…`;
    try {
      await work();
    } finally {
      // A button whose work is done for good (data-done) stays disabled where it is: hiding it would move
      // the next button under the pointer, and a double click's second click would land on it.
      if (button.isConnected && button.dataset.done) {
        button.removeAttribute("aria-busy");
        button.textContent = label;
      } else if (button.isConnected) {
        button.disabled = false;
        button.removeAttribute("aria-busy");
        button.textContent = label;
      }
    }
  };
}

export function button(label, work, { kind = "btn-primary", small = false, testid } = {}) {
  const b = h("button", { type: "button", class: `btn ${kind}${small ? " btn-sm" : ""}`, "data-testid": testid }, label);
  if (work) b.addEventListener("click", pressed(b, work));
  return b;
}

/** A labelled form control (Clarity's clr-form-control) with a place for its error. */
export function field(label, control, { name, help } = {}) {
  const id = control.id || newId("f");
  control.id = id;
  if (name) control.dataset.field = name;
  const err = h("span", { class: "zvr-field-error", id: `${id}-err`, role: "alert", hidden: true });
  control.setAttribute("aria-describedby", `${id}-err`);
  const wrap = h("div", { class: "clr-form-control", dataset: { fieldWrap: name || "" } },
    h("label", { for: id, class: "clr-control-label" }, label),
    h("div", { class: "clr-control-container" },
      control.tagName === "SELECT" ? h("div", { class: "clr-select-wrapper" }, control) : control, help ? h("span", { class: "clr-subtext" }, help) : null, err));
  return wrap;
}

export function input(attrs = {}) { return h("input", { class: "clr-input", type: "text", ...attrs }); }
export function select(options, attrs = {}) {
  const s = h("select", { class: "clr-select", ...attrs });
  for (const o of options) {
    const [value, text] = Array.isArray(o) ? o : [o, o];
    s.append(h("option", { value }, text));
  }
  return s;
}

/** Show an API error at the field it names (data-field), or in the form's general alert. */
export function showError(form, err, general) {
  clearErrors(form);
  const name = err && err.field;
  const control = name && (form.querySelector(`[data-field="${CSS.escape(name)}"]`) ||
    form.querySelector(`[data-field="${CSS.escape(name.split(".").pop())}"]`));
  if (control) {
    const slot = document.getElementById(`${control.id}-err`);
    slot.textContent = err.message;
    slot.hidden = false;
    control.classList.add("zvr-invalid");
    control.setAttribute("aria-invalid", "true");
    control.focus();
    return;
  }
  if (general) {
    clear(general, alert("danger", err ? err.message : "failed"));
  }
}

export function clearErrors(form) {
  for (const e of form.querySelectorAll(".zvr-field-error")) { e.hidden = true; e.textContent = ""; }
  for (const c of form.querySelectorAll(".zvr-invalid")) { c.classList.remove("zvr-invalid"); c.removeAttribute("aria-invalid"); }
}

export function alert(kind, text, { testid } = {}) {
  return h("div", { class: `alert alert-${kind} alert-sm`, role: "alert", "data-testid": testid },
    h("div", { class: "alert-items" }, h("div", { class: "alert-item static" }, h("span", { class: "alert-text" }, text))));
}

const STATUS_KIND = {
  MeetingSLA: "success", Initializing: "info", Paused: "warning", RpoNotMeetingSLA: "danger",
  HistoryNotMeetingSLA: "warning", NotMeetingSLA: "danger", Error: "danger", FailingOver: "info",
  Moving: "info", Deleting: "warning", Recovered: "info",
  Completed: "success", InProgress: "info", Pending: "info", Failed: "danger",
  Installed: "success", Installing: "info", Uninstalling: "warning",
  Paired: "success", Unreachable: "danger", Unpairing: "warning",
  Error_: "danger", Warning: "warning", Info: "info",
};
export function badge(text) {
  return h("span", { class: `label label-${STATUS_KIND[text] || "info"}`, "data-status": text }, text);
}

export function table(columns, rows, { caption, testid, empty = "None." } = {}) {
  const t = h("table", { class: "table table-compact", "data-testid": testid },
    caption ? h("caption", { class: "clr-sr-only" }, caption) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: "left" }, c.head)))),
    h("tbody", {}, rows.length ? rows.map((r) => h("tr", { dataset: r._data || {} },
      columns.map((c) => h("td", { class: "left" }, c.cell(r))))) :
      h("tr", {}, h("td", { colspan: columns.length, class: "left" }, empty))));
  return t;
}

export function card(title, ...body) {
  return h("section", { class: "card", "aria-label": title },
    h("div", { class: "card-header" }, h("h2", { class: "card-title", style: "margin:0;font-size:0.8rem" }, title)),
    h("div", { class: "card-block" }, ...body));
}

export function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}
export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { hour12: false });
}
export function progress(value, label) {
  return h("progress", { max: 100, value: value || 0, "aria-label": label, class: "zvr-progress" });
}
