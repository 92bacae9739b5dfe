// Sites and VRAs: this site and its peers (pair with a peer's address and pairing token, unpair, make a
// token for a peer), and the VRA of every host (install with datastore, network and DHCP or a static
// address; uninstall).
import * as api from "../api.js";
import { badge, button, card, clear, field, h, input, showError, table } from "../dom.js";
import { guardAction } from "../wizards/index.js";
import * as roles from "../roles.js";

export function sites(root, ctx) {
  // Built once: a poll repaints the tables, never the pairing form being filled in or the token shown.
  const tokenOut = input({ readonly: true, hidden: true, "aria-label": "The pairing token to give the peer site", "data-testid": "token" });
  const here = h("p", { "data-testid": "local-site" });
  const peersSlot = h("div");
  const vrasSlot = h("div");
  const title = h("h2", { class: "card-title", style: "margin:0;font-size:0.8rem" }, "This site");
  const makeToken = button("Make a pairing token", async () => {
    const t = await api.post("/peersites/generatetoken");
    tokenOut.value = t.Token;
    tokenOut.hidden = false;
  }, { kind: "btn-secondary", testid: "generate-token" });
  const pairing = pairForm(ctx);
  clear(root,
    h("h1", {}, "Sites and VRAs"),
    h("div", { class: "zvr-grid" },
      h("section", { class: "card", "aria-label": "This site" }, h("div", { class: "card-header" }, title),
        h("div", { class: "card-block" }, here,
          makeToken, tokenOut)),
      card("Pair with a site", pairing)),
    card("Paired sites", peersSlot),
    card("VRAs", vrasSlot));

  async function refresh() {
    const [local] = await Promise.all([api.get("/localsite"), roles.ready()]);
    guardAction(makeToken, "generateToken"); // once the roles are known (the form is built before)
    guardAction(pairing.querySelector("[data-testid=pair]"), "pair");
    const [peers, hosts, vras] = await Promise.all([api.get("/peersites"),
      api.get(`/virtualizationsites/${local.SiteIdentifier}/hosts`), api.get("/vras")]);
    const vraOf = Object.fromEntries(vras.map((v) => [v.HostIdentifier, v]));
    title.textContent = `This site: ${local.SiteName}`;
    here.textContent = `${local.IpAddress}:${local.Port}, vCenter ${local.VCenterUrl}`;
    clear(peersSlot, table([
      { head: "Site", cell: (p) => p.PeerSiteName }, { head: "Address", cell: (p) => `${p.HostName}:${p.Port}` },
      { head: "Pairing", cell: (p) => badge(p.PairingStatus) },
      { head: "", cell: (p) => guardAction(button("Unpair", async () => ctx.openWizard("unpair", { site: p.SiteIdentifier, name: p.PeerSiteName }),
        { kind: "btn-danger-outline", small: true, testid: `unpair-${p.PeerSiteName}` }), "unpair", { site: p.SiteIdentifier }) },
    ], peers.map((p) => ({ ...p, _data: { peer: p.PeerSiteName } })), { caption: "Paired sites", testid: "peers", empty: "Not paired." }));
    clear(vrasSlot, table([
      { head: "Host", cell: (x) => x.VirtualizationHostName },
      { head: "VRA", cell: (x) => (vraOf[x.HostIdentifier] ? vraOf[x.HostIdentifier].VraName : "none") },
      { head: "State", cell: (x) => (vraOf[x.HostIdentifier] ? badge(vraOf[x.HostIdentifier].State) : "—") },
      { head: "Address", cell: (x) => (vraOf[x.HostIdentifier] ? vraOf[x.HostIdentifier].ControlAddress : "—") },
      { head: "", cell: (x) => vraButton(x, vraOf[x.HostIdentifier], ctx) },
    ], hosts.map((x) => ({ ...x, _data: { host: x.VirtualizationHostName } })), { caption: "VRAs per host", testid: "vras" }));
  }
  return { refresh };
}

export function vraButton(host, vra, ctx) {
  if (vra) {
    return guardAction(button("Uninstall", async () => ctx.openWizard("uninstallVra", { vra: vra.VraIdentifier, name: vra.VraName }),
      { kind: "btn-danger-outline", small: true, testid: `uninstall-${host.VirtualizationHostName}` }), "uninstallVra", { vra: vra.VraIdentifier });
  }
  return guardAction(button("Install VRA", async () => ctx.openWizard("installVra", { host: host.HostIdentifier }),
    { kind: "btn-primary", small: true, testid: `install-${host.VirtualizationHostName}` }), "installVra");
}

function pairForm(ctx) {
  const host = input({ placeholder: "zvm-b.example" });
  const port = input({ type: "number", value: "9081", min: 1, max: 65535 });
  const token = input({ autocomplete: "off" });
  const general = h("div");
  const form = h("form", { class: "clr-form clr-form-horizontal" },
    field("Peer ZVM address", host, { name: "HostName" }), field("Peer service port", port, { name: "Port" }),
    field("Pairing token", token, { name: "Token", help: "made on the peer site: Sites and VRAs › Make a pairing token" }),
    general);
  form.append(button("Pair", async () => {
    try {
      const t = await api.post("/peersites", { HostName: host.value.trim(), Port: Number(port.value), Token: token.value.trim() });
      await ctx.watchTask(t, general);
    } catch (err) { showError(form, err, general); }
  }, { testid: "pair" }));
  return form;
}
