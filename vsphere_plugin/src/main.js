// The plugin's entry point. The server marks each page with the view it shows (<body data-view=...>):
// "shell" is the standalone UI (header, navigation, login, views routed by #/...); any other view is one
// page of the vSphere Client (global dashboard, an object's view, or a modal), with htmlClientSdk present.
import "./app.css";
import "@cds/core/icon/register.js";
import { ClarityIcons, shieldCheckIcon, sunIcon, moonIcon, logoutIcon } from "@cds/core/icon";
import * as api from "./api.js";
import { alert, button, clear, field, h, input, showError } from "./dom.js";
import * as roles from "./roles.js";
import * as sdk from "./sdk.js";
import { dashboard } from "./views/dashboard.js";
import { vpgs } from "./views/vpgs.js";
import { vpg } from "./views/vpg.js";
import { sites } from "./views/sites.js";
import { clusterView, hostView, vmView } from "./views/objects.js";
import { WIZARDS } from "./wizards/index.js";
import { followTask } from "./wizards/form.js";

ClarityIcons.addIcons(shieldCheckIcon, sunIcon, moonIcon, logoutIcon);

const VIEWS = { dashboard, vpgs, vpg, sites, vm: vmView, host: hostView, cluster: clusterView };
const params = new URLSearchParams(location.search);
const POLL_MS = Math.max(1000, Number(params.get("poll") || 5000));
const pageView = document.body.dataset.view || "shell";
const standalone = pageView === "shell";

const banner = h("div", { class: "zvr-banner", "data-testid": "connection-banner", hidden: true },
  h("div", { class: "alert alert-app-level alert-danger", role: "alert" },
    h("div", { class: "alert-items" }, h("div", { class: "alert-item static" },
      h("div", { class: "alert-text" }, "The connection to the ZVM is lost. Retrying…"),
      h("div", { class: "alert-actions" }, h("button", { type: "button", class: "btn alert-action", onclick: () => api.retryNow() }, "Retry now"))))));
api.on("offline", () => { banner.hidden = false; });
api.on("online", () => { banner.hidden = true; });

// --- modals: the client's (embedded) or our own (standalone)
function openWizard(name, p = {}) {
  if (sdk.embedded()) {
    const q = new URLSearchParams({ wizard: name, ...p });
    sdk.openClientModal(`/plugin/views/modal?${q}`, WIZARDS[name](p).title);
    return;
  }
  const wiz = WIZARDS[name](p);
  const titleId = "zvr-modal-title";
  const body = h("div", { class: "modal-body" });
  const footer = h("div", { class: "modal-footer" });
  const opener = document.activeElement;
  const host = h("div", { class: "zvr-modal-host", "data-testid": "modal" },
    h("div", { class: "modal" }, h("div", { class: "modal-dialog", role: "dialog", "aria-modal": "true", "aria-labelledby": titleId },
      h("div", { class: "modal-content" }, h("div", { class: "modal-header" }, h("h3", { class: "modal-title", id: titleId }, wiz.title)),
        body, footer))),
    h("div", { class: "modal-backdrop", "aria-hidden": "true" }));
  let close = () => {
    host.remove();
    current && current.refresh && current.refresh().catch(() => {});
    if (opener && opener.isConnected) opener.focus();
  };
  // On the document, not the dialog: a button that hides itself once pressed leaves the focus on the body.
  const keys = (e) => {
    if (e.key === "Escape") close();
    if (e.key === "Tab") trapFocus(host, e);
  };
  document.addEventListener("keydown", keys);
  const closeDialog = close;
  close = () => { document.removeEventListener("keydown", keys); closeDialog(); };
  document.body.append(host);
  wiz.render(body, footer, close);
}

function trapFocus(root, e) {
  const items = [...root.querySelectorAll("button, input, select, textarea, a[href], [tabindex='0']")]
    .filter((x) => !x.disabled && !x.hidden && x.offsetParent !== null);
  if (!items.length) return;
  const first = items[0];
  const last = items[items.length - 1];
  if (e.shiftKey && document.activeElement === first) { last.focus(); e.preventDefault(); }
  else if (!e.shiftKey && document.activeElement === last) { first.focus(); e.preventDefault(); }
}

function link(route) { return standalone ? `#/${route}` : `/plugin/#/${route}`; }
function follow(route) {
  return (e) => {
    if (standalone) return; // the hash link routes
    e.preventDefault();
    // In the client, a VPG's page is the plugin's global view told which route to show (navigation data);
    // without navigateTo the view's own frame goes there.
    if (!sdk.navigate({ targetViewId: "zvr.dashboard", customData: { route } })) {
      location.href = `/plugin/views/vpg?id=${encodeURIComponent(route.split("/")[1])}`;
    }
  };
}

const ctx = {
  openWizard, link, follow,
  watchTask: (id, slot) => followTask(id, slot),
};

// --- running a view: a first refresh, then polling; errors shown in the page
let current = null;
let timer = null;
async function run(root, make, ...args) {
  clearTimeout(timer);
  const content = h("div", { class: "zvr-page" });
  clear(root, content);
  try {
    current = make(content, ctx, ...args);
  } catch (err) { clear(content, alert("danger", err.message)); return; }
  const token = Symbol("view");
  run.token = token;
  const tick = async () => {
    try {
      await current.refresh();
      window.zvrStats.refreshes = (window.zvrStats.refreshes || 0) + 1; // for the benchmark's bytes per refresh
      document.body.dataset.rendered = "true";
    } catch (err) {
      if (err.status === 401) return;
      clear(content, alert("danger", err.message, { testid: "view-error" }));
    }
    if (run.token === token) timer = setTimeout(tick, POLL_MS);
  };
  await tick();
}

// --- authentication
async function session() {
  try { return await api.get("/session"); } catch (err) { if (err.status === 401) return null; throw err; }
}

function loginPage(root) {
  return new Promise((resolve) => {
    const user = input({ autocomplete: "username", value: "admin", name: "username" });
    const password = input({ type: "password", autocomplete: "current-password", name: "password" });
    const general = h("div", { "data-testid": "login-error" });
    const form = h("form", { class: "login", "aria-label": "Log in" },
      h("section", { class: "title" }, h("h1", { class: "welcome" }, "ZVR"), h("h2", { class: "hint" }, "Disaster recovery for vSphere: log in to this site's ZVM")),
      h("div", { class: "login-group" }, field("User name", user, { name: "user" }), field("Password", password, { name: "password" }), general));
    const submit = button("Log in", async () => {
      try {
        await api.login(user.value, password.value);
        resolve();
      } catch (err) {
        showError(form, { message: err.status === 401 ? "The user name or password is wrong." : err.message }, general);
      }
    }, { testid: "login" });
    form.querySelector(".login-group").append(submit);
    form.addEventListener("submit", (e) => { e.preventDefault(); submit.click(); });
    clear(root, h("div", { class: "login-wrapper zvr-login" }, form));
    password.focus();
  });
}

async function ensureSession(root) {
  if (await session()) return;
  if (sdk.embedded()) {
    const info = await sdk.sessionInfo();
    await api.loginWithVsphere(info.sessionToken || info.cloneTicket || "");
    return;
  }
  await loginPage(root);
}

// --- the standalone shell
function shell(root) {
  const content = h("main", { class: "content-area", id: "main" });
  const themeBtn = h("button", { type: "button", class: "btn btn-link nav-link", "data-testid": "theme",
    "aria-label": "Switch between light and dark theme", onclick: () => sdk.setStandaloneTheme(sdk.theme() === "dark" ? "light" : "dark") },
  h("cds-icon", { shape: "sun", "aria-hidden": "true" }));
  const nav = [["dashboard", "Dashboard"], ["vpgs", "VPGs"], ["sites", "Sites and VRAs"]];
  const links = nav.map(([r, label]) => h("a", { href: `#/${r}`, class: "nav-link", "data-route": r }, h("span", { class: "nav-text" }, label)));
  const header = h("header", { class: "header header-6" },
    h("div", { class: "branding" }, h("a", { href: "#/dashboard", class: "nav-link" },
      h("cds-icon", { shape: "shield-check", size: "lg", "aria-hidden": "true" }), h("span", { class: "title" }, "ZVR"))),
    h("nav", { class: "header-nav", "aria-label": "Main" }, links),
    h("div", { class: "header-actions" },
      h("span", { class: "nav-text zvr-user", "data-testid": "user", "data-role": roles.current().role },
        `${roles.current().user} (${roles.current().role})`), themeBtn,
      h("button", { type: "button", class: "btn btn-link nav-link", "aria-label": "Log out", "data-testid": "logout",
        onclick: async () => { await api.logout(); location.reload(); } }, h("cds-icon", { shape: "logout", "aria-hidden": "true" }))));
  clear(root, banner, h("div", { class: "main-container" }, header, h("div", { class: "content-container" }, content)));
  function route() {
    const [name, arg] = (location.hash.replace(/^#\/?/, "") || "dashboard").split("/");
    for (const a of links) a.classList.toggle("active", a.dataset.route === name);
    const make = VIEWS[name] || dashboard;
    run(content, make, decodeURIComponent(arg || ""));
  }
  window.addEventListener("hashchange", route);
  route();
}

// --- a page inside the vSphere Client
async function embeddedPage(root) {
  const content = h("div");
  clear(root, banner, content);
  if (pageView === "modal") {
    const name = params.get("wizard");
    const p = Object.fromEntries([...params].filter(([k]) => k !== "wizard"));
    // A menu action's modal gets its targets from the client: the VMs to protect, the host for a VRA.
    const objs = sdk.contextObjects();
    const vmIds = objs.filter((o) => o.type === "VirtualMachine").map((o) => o.moid);
    if (name === "vpg" && !p.vms && vmIds.length) p.vms = vmIds.join(",");
    const hostObj = objs.find((o) => o.type === "HostSystem");
    if (name === "installVra" && !p.host && hostObj) p.host = hostObj.moid;
    await roles.ready(); // its button is enabled by the user's role
    const wiz = WIZARDS[name](p);
    const body = h("div", { class: "modal-body zvr-standalone-modal" });
    const footer = h("div", { class: "modal-footer" });
    clear(content, h("div", { class: "zvr-page", role: "dialog", "aria-label": wiz.title, "data-testid": "modal" }, body, footer));
    wiz.render(body, footer, () => sdk.closeClientModal());
    document.body.dataset.rendered = "true";
    return;
  }
  // The global view shows the route another view navigated to (app.navigateTo's customData), if any.
  const [routed, arg] = String((sdk.navigationData() || {}).route || "").split("/");
  if (pageView === "dashboard" && VIEWS[routed]) {
    run(content, VIEWS[routed], decodeURIComponent(arg || ""));
    return;
  }
  const make = VIEWS[pageView] || dashboard;
  run(content, make, params.get("id") || "");
}

async function start() {
  await sdk.init();
  sdk.applyTheme(sdk.theme());
  sdk.onTheme(() => current && current.repaint && current.repaint());
  sdk.followClient({ refresh: () => current && current.refresh() });
  const root = document.getElementById("app");
  api.on("unauthorized", async () => {
    if (sdk.embedded()) return;
    clearTimeout(timer);
    run.token = null;
    await loginPage(root);
    await roles.load();
    shell(root);
  });
  try {
    await ensureSession(root);
    await roles.load();
  } catch (err) {
    clear(root, alert("danger", `Cannot open a ZVM session: ${err.message}`, { testid: "view-error" }));
    return;
  }
  if (standalone) shell(root);
  else await embeddedPage(root);
}

start();
