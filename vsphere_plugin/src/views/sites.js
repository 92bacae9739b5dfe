// Sites and VRAs: this site and its peers (pair with a peer's address and pairing token, unpair, make a
// token for a peer), and the VRA of every host (install with datastore, network and DHCP or a static
// address; uninstall).
import * as api from "../api.js";
import { badge, button, card, clear, field, h, input, showError, table } from "../dom.js";

export function sites(root, ctx) {
  async function refresh() {
    const local = await api.get("/localsite");
    const [peers, hosts, vras] = await Promise.all([api.get("/peersites"),
      api.get(`/virtualizationsites/${local.SiteIdentifier}/hosts`), api.get("/vras")]);
    const vraOf = Object.fromEntries(vras.map((v) => [v.HostIdentifier, v]));
    clear(root,
      h("h1", {}, "Sites and VRAs"),
      h("div", { class: "zvr-grid" },
        card(`This site: ${local.SiteName}`, h("p", {}, `${local.IpAddress}:${local.Port}, vCenter ${local.VCenterUrl}`),
          button("Make a pairing token", async () => {
            const t = await api.post("/peersites/generatetoken");
            tokenOut.value = t.Token;
            tokenOut.hidden = false;
          }, { kind: "btn-secondary", testid: "generate-token" }), tokenOut),
        card("Pair with a site", pairForm(ctx))),
      card("Paired sites", table([
        { head: "Site", cell: (p) => p.PeerSiteName }, { head: "Address", cell: (p) => `${p.HostName}:${p.Port}` },
        { head: "Pairing", cell: (p) => badge(p.PairingStatus) },
        { head: "", cell: (p) => button("Unpair", async () => ctx.openWizard("unpair", { site: p.SiteIdentifier, name: p.PeerSiteName }),
          { kind: "btn-danger-outline", small: true }) },
      ], peers, { caption: "Paired sites", testid: "peers", empty: "Not paired." })),
      card("VRAs", table([
        { head: "Host", cell: (x) => x.VirtualizationHostName },
        { head: "VRA", cell: (x) => (vraOf[x.HostIdentifier] ? vraOf[x.HostIdentifier].VraName : "none") },
        { head: "State", cell: (x) => (vraOf[x.HostIdentifier] ? badge(vraOf[x.HostIdentifier].State) : "—") },
        { head: "Address", cell: (x) => (vraOf[x.HostIdentifier] ? vraOf[x.HostIdentifier].ControlAddress : "—") },
        { head: "", cell: (x) => vraButton(x, vraOf[x.HostIdentifier], ctx) },
      ], hosts, { caption: "VRAs per host", testid: "vras" })));
  }
  const tokenOut = input({ readonly: true, hidden: true, "aria-label": "Pairing token", "data-testid": "token" });
  return { refresh };
}

export function vraButton(host, vra, ctx) {
  if (vra) {
    return button("Uninstall", async () => ctx.openWizard("uninstallVra", { vra: vra.VraIdentifier, name: vra.VraName }),
      { kind: "btn-danger-outline", small: true });
  }
  return button("Install VRA", async () => ctx.openWizard("installVra", { host: host.HostIdentifier }),
    { kind: "btn-primary", small: true, testid: `install-${host.VirtualizationHostName}` });
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
      ctx.watchTask(t, general);
    } catch (err) { showError(form, err, general); }
  }, { testid: "pair" }));
  return form;
}
