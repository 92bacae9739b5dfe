// Which actions the user may start: the user's role (GET /v1/session's Role) against the role each API
// operation declares (x-zvr-role in GET /v1/openapi.json). The pages keep no copy of the API's rules: an
// action names the call it makes, and that call's declared role decides whether its control is enabled.
// A disabled control says why ("needs the operator role"); the API still refuses (403) a call made anyway.
import * as api from "./api.js";

const ORDER = ["viewer", "operator", "admin"];
let user = null;
let role = null;
let ops = null; // [{method, re, params, role}] from the OpenAPI document; null: unknown, the API decides
let opsRead = null;

/** Read the user and its role once a session is open; the operations' roles are read on first need (ready). */
export async function load() {
  const session = await api.get("/session");
  user = session.User;
  role = session.Role;
  return { user, role };
}

/** Resolves once the operations' roles are known; a view with actions awaits it before drawing them (the
 * dashboard, which has none, never reads the document). */
export function ready() {
  opsRead = opsRead || api.get("/openapi.json").then((doc) => { ops = compile(doc); }, () => { ops = null; });
  return opsRead;
}

export const current = () => ({ user, role });

function compile(doc) {
  const out = [];
  for (const [path, methods] of Object.entries(doc.paths || {})) {
    // A template's {parameter} matches one path segment; the rest is literal (paths are case-insensitive).
    const parts = path.split(/\{[^}]+\}/).map((s) => s.replace(/[.*+?^$()|[\]\\]/g, "\\$&"));
    const re = new RegExp(`^${parts.join("[^/]+")}$`, "i");
    for (const [method, op] of Object.entries(methods)) {
      if (op && op["x-zvr-role"]) out.push({ method: method.toUpperCase(), re, params: parts.length - 1, role: op["x-zvr-role"] });
    }
  }
  // A literal path wins over a template that also matches it (/peersites/generatetoken, not /peersites/{id}).
  return out.sort((a, b) => a.params - b.params);
}

/** The role the call ``method path`` (a path under /v1, e.g. "/vpgs/x/pause") needs, or null if unknown. */
export function needed(method, path) {
  if (!ops) return null;
  const full = `/v1${path.split("?")[0]}`;
  const op = ops.find((o) => o.method === method && o.re.test(full));
  return op ? op.role : null;
}

/** Why the user may not make the call, or "" if it may (or if the page cannot tell: the API decides). */
export function refusal(method, path) {
  const need = needed(method, path);
  if (!need || !role) return "";
  return ORDER.indexOf(role) >= ORDER.indexOf(need) ? "" : `needs the ${need} role`;
}

/** Disable ``control`` (a button or an option) if the user may not make the call, saying why. */
export function guard(control, method, path) {
  const why = refusal(method, path);
  if (!why) return control;
  control.disabled = true;
  control.title = `${why} (you are ${role})`;
  control.dataset.needsRole = needed(method, path);
  return control;
}
