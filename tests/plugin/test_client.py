"""The views inside a stand-in of the vSphere Client: a host page that loads them in iframes as the client
does, with a stand-in for the client's JS API at /api/ui/htmlClientSdk.js (context objects, theme and its
changes, global refresh, modal open/close, session info). The user is the vSphere user: the stand-in hands
out real clone tickets of a vcsim session, which the ZVM verifies by cloning the session."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.plugin.conftest import HOST_PAGE, SDK_STANDIN, shoot
from tests.plugin.test_auth import clone_tickets


def _host(page, site):
    page.context.route("**/api/ui/htmlClientSdk.js",
                       lambda route: route.fulfill(path=str(SDK_STANDIN), content_type="application/javascript"))
    page.context.route("**/client-host.html",
                       lambda route: route.fulfill(path=str(HOST_PAGE), content_type="text/html"))
    page.goto(site.url + "/client-host.html")
    page.evaluate("tickets => zvrHost.tickets.push(...tickets)", clone_tickets(site.vcenter, 8))


def test_views_in_the_client_follow_context_theme_refresh_and_modals(plugin_lab, page):
    site = plugin_lab.protected
    api = site.api()
    local = api.get(f"{site.url}/v1/localsite", timeout=30).json()["SiteIdentifier"]
    vms = api.get(f"{site.url}/v1/virtualizationsites/{local}/vms", timeout=30).json()
    protected = plugin_lab.vpg["vms"][0]
    unprotected = next(v for v in vms if not v["VpgIdentifier"] and not v["VmName"].startswith("Z-VRA-"))
    host_id = protected["host"]
    _host(page, site)
    urn = "urn:vmomi:{}:{}:11111111-2222-3333-4444-555555555555"
    page.evaluate("""([a, b, h]) => {
        zvrHost.load('vm', '/plugin/views/vm', [{id: a}]);
        zvrHost.load('vm2', '/plugin/views/vm', [{id: b}]);
        zvrHost.load('host', '/plugin/views/host', [{id: h}]);
        zvrHost.load('dashboard', '/plugin/views/dashboard?poll=600000', []);
    }""", [urn.format("VirtualMachine", protected["identifier"]), urn.format("VirtualMachine", unprotected["VmIdentifier"]),
           urn.format("HostSystem", host_id)])
    vm = page.frame_locator("iframe[name=vm]")
    expect(vm.get_by_test_id("vm-status")).to_contain_text(f"{protected['name']} is protected by VPG lab-vpg")
    vm2 = page.frame_locator("iframe[name=vm2]")
    expect(vm2.get_by_test_id("vm-status")).to_contain_text(f"({unprotected['VmIdentifier']}) is not protected")
    expect(page.frame_locator("iframe[name=host]").get_by_test_id("host-vra")).to_contain_text("Z-VRA-")
    dash = page.frame_locator("iframe[name=dashboard]")
    expect(dash.locator("[data-testid=vpg-table] tr[data-vpg=lab-vpg]")).to_be_visible()
    # The views act as the vSphere user, whose session vCenter vouched for.
    user = page.frame(name="vm").evaluate("fetch('/v1/session').then(r => r.json()).then(s => s.User)")
    assert user == f"vsphere:{site.vcenter['username']}"

    # A link to the VPG asks the client to navigate (app.navigateTo) to the global view, which shows the VPG.
    vm.get_by_role("link", name="lab-vpg").click()
    page.wait_for_function("zvrHost.navigations.length === 1")
    nav = page.evaluate("zvrHost.navigations[0]")
    assert nav == {"targetViewId": "zvr.dashboard", "customData": {"route": f"vpg/{plugin_lab.vpg['identifier']}"}}
    expect(page.frame_locator("iframe[name=navigated]").get_by_test_id("vpg-name")).to_have_text("lab-vpg")

    # The client's theme: every view repaints.
    for name in ("vm", "dashboard"):
        expect(page.frame_locator(f"iframe[name={name}]").locator("body")).to_have_attribute("cds-theme", "light")
    page.click("#theme")
    for name in ("vm", "vm2", "host", "dashboard", "navigated"):
        expect(page.frame_locator(f"iframe[name={name}]").locator("body")).to_have_attribute("cds-theme", "dark")
    expect(dash.locator(".zvr-chart .uplot").first).to_have_attribute("data-theme", "dark")
    shoot(page, "client-host-dark")

    # The client's global refresh: the dashboard (which would not poll for ten minutes) asks the API again.
    frame = page.frame(name="dashboard")
    before = frame.evaluate("window.zvrStats.calls")
    page.click("#refresh")
    page.wait_for_function("n => window.frames['dashboard'].zvrStats.calls >= n + 6", arg=before)

    # A modal: Protect... opens the VPG wizard in the client's modal, with the VM chosen; Cancel closes it.
    vm2.get_by_test_id("protect").click()
    page.wait_for_function("zvrHost.opened.length === 1")
    opened = page.evaluate("zvrHost.opened[0]")
    assert "wizard=vpg" in opened["url"] and unprotected["VmIdentifier"] in opened["url"]
    modal = page.frame_locator("#modal iframe")
    expect(modal.get_by_test_id("step-title")).to_have_text("General")
    modal.get_by_test_id("next").click()
    expect(modal.locator(f"input[value='{unprotected['VmIdentifier']}']")).to_be_checked()
    modal.get_by_test_id("cancel").click()
    page.wait_for_function("zvrHost.closed.length === 1")
    expect(page.locator("#modal iframe")).to_have_count(0)


def test_menu_action_modal_takes_the_selected_vms(plugin_lab, page):
    site = plugin_lab.protected
    api = site.api()
    local = api.get(f"{site.url}/v1/localsite", timeout=30).json()["SiteIdentifier"]
    free = [v for v in api.get(f"{site.url}/v1/virtualizationsites/{local}/vms", timeout=30).json()
            if not v["VpgIdentifier"] and not v["VmName"].startswith("Z-VRA-")][:2]
    assert len(free) == 2
    _host(page, site)
    # "Protect..." on two VMs: the client opens the action's modal URL (plugin.json) with them as context.
    page.evaluate("""ids => zvrHost.load('action', '/plugin/views/modal?wizard=vpg',
        ids.map(id => ({id: `urn:vmomi:VirtualMachine:${id}:guid`})))""", [v["VmIdentifier"] for v in free])
    modal = page.frame_locator("iframe[name=action]")
    expect(modal.get_by_test_id("step-title")).to_have_text("General")
    modal.get_by_test_id("next").click()
    for v in free:
        expect(modal.locator(f"input[value='{v['VmIdentifier']}']")).to_be_checked()
    modal.get_by_test_id("cancel").click()
    page.wait_for_function("zvrHost.closed.length === 1")
