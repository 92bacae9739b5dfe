// The vSphere Client's JS API (htmlClientSdk, loaded from /api/ui/htmlClientSdk.js when the page is a view
// inside the client) behind a few functions, with the standalone behaviour when the page runs without it:
// context objects, theme and its changes, global refresh, modals, navigation, the client's session.
const sdk = () => window.htmlClientSdk;
export const embedded = () => !!sdk();

export function init() {
  return new Promise((resolve) => {
    if (!embedded()) { resolve(); return; }
    sdk().initialize(() => resolve());
  });
}

/** The vSphere objects the view was opened for: [{id, type, moid}] (id is the client's URN). */
export function contextObjects() {
  if (embedded()) {
    return (sdk().app.getContextObjects() || []).map((o) => ({ ...o, moid: moidOf(o.id), type: typeOf(o.id) }));
  }
  const q = new URLSearchParams(location.search);
  return (q.get("objectId") || "").split(",").filter(Boolean).map((id) => ({ id, moid: moidOf(id), type: typeOf(id) }));
}

// urn:vmomi:VirtualMachine:vm-42:<server guid> -> vm-42; a bare moid stays as it is.
export function moidOf(id) { const p = String(id).split(":"); return p.length >= 4 ? p[3] : String(id); }
function typeOf(id) { const p = String(id).split(":"); return p.length >= 4 ? p[2] : ""; }

const STORE = "zvr-theme";
export function theme() {
  if (embedded()) {
    const t = sdk().app.getTheme && sdk().app.getTheme();
    return (t && t.name) === "dark" ? "dark" : "light";
  }
  const saved = localStorage.getItem(STORE);
  if (saved) return saved;
  return window.matchMedia && matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

export function applyTheme(name) {
  document.body.setAttribute("cds-theme", name);
  document.documentElement.style.colorScheme = name;
  for (const fn of themeListeners) fn(name);
}
const themeListeners = [];
export function onTheme(fn) { themeListeners.push(fn); }

export function setStandaloneTheme(name) {
  localStorage.setItem(STORE, name);
  applyTheme(name);
}

export function followClient({ refresh }) {
  if (!embedded()) return;
  const ev = sdk().event;
  if (ev && ev.onThemeChanged) ev.onThemeChanged((t) => applyTheme(t && t.name === "dark" ? "dark" : "light"));
  if (ev && ev.onGlobalRefresh) ev.onGlobalRefresh(() => refresh());
}

/** The client's session: what the ZVM verifies against vCenter (a clone ticket of the user's session). */
export function sessionInfo() {
  return new Promise((resolve) => sdk().app.getSessionInfo((info) => resolve(info || {})));
}

/** Open a plugin page as the client's modal (embedded); the caller shows it in-page otherwise. */
export function openClientModal(url, title, size = { width: 760, height: 620 }) {
  sdk().modal.open({ url, title, size });
}
export function closeClientModal(data) { sdk().modal.close(data); }
/** Ask the client to show another view (app.navigateTo); false when there is no client to ask. */
export function navigate(target) {
  if (!embedded() || !sdk().app.navigateTo) return false;
  sdk().app.navigateTo(target);
  return true;
}
/** What the view was navigated to with (app.getNavigationData), or null. */
export function navigationData() {
  return embedded() && sdk().app.getNavigationData ? sdk().app.getNavigationData() : null;
}
