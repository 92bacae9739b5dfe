"""The web UI in Debian's chromium (Playwright), against the two-site lab's `zvm serve`s: log in, the
dashboard's live VPG status, the VPG wizard (mouse and keyboard only), a refused input at its field, a
tagged checkpoint from a double click that starts one task, a failover test from the checkpoint picker and
its stop (on the recovery site's ZVM), screenshots light and dark, and axe-core's accessibility check."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.plugin.conftest import AXE, login, shoot
from zvm.enums import VraStatus

TASK_TIMEOUT = 150_000


def test_login_then_live_dashboard_light_and_dark(plugin_lab, page):
    site = plugin_lab.protected
    page.goto(site.url + "/")
    expect(page).to_have_url(re.compile(r"/plugin/$"))
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_test_id("login").click()
    expect(page.get_by_test_id("login-error")).to_contain_text("wrong")
    page.goto(site.url + "/plugin/?poll=1000")
    page.get_by_label("Password").fill(site.password)
    page.get_by_test_id("login").click()
    row = page.locator("[data-testid=vpg-table] tr[data-vpg=lab-vpg]")
    expect(row.locator("[data-status]")).to_have_attribute("data-status", "MeetingSLA")
    expect(page.get_by_test_id("sites-table")).to_contain_text("Paired")
    # The session is an HttpOnly cookie: the page cannot read it.
    assert "zvr_session" not in page.evaluate("document.cookie")
    cookie = next(c for c in page.context.cookies() if c["name"] == "zvr_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # Live: the dashboard polls and repaints without a reload.
    page.evaluate("window.zvrMarker = 1")
    first = page.get_by_test_id("updated").inner_text()
    expect(page.get_by_test_id("updated")).not_to_have_text(first)
    assert page.evaluate("window.zvrMarker") == 1
    shoot(page, "dashboard-light")
    page.get_by_test_id("theme").click()
    expect(page.locator("body")).to_have_attribute("cds-theme", "dark")
    expect(page.locator(".zvr-chart .uplot").first).to_have_attribute("data-theme", "dark")
    shoot(page, "dashboard-dark")
    page.goto(site.url + "/plugin/#/vpgs")
    expect(page.locator("[data-testid=vpg-list] tr[data-vpg=lab-vpg]")).to_be_visible()
    shoot(page, "vpgs-dark")
    page.get_by_test_id("theme").click()
    expect(page.locator("body")).to_have_attribute("cds-theme", "light")
    shoot(page, "vpgs-light")


def _open_new_vpg(page, site):
    login(page, site, "/plugin/?poll=2000#/vpgs")
    page.get_by_test_id("new-vpg").click()
    modal = page.get_by_test_id("modal")
    expect(modal.get_by_test_id("step-title")).to_have_text("General")
    return modal


def _next_until(modal, title):
    for _ in range(8):
        if modal.get_by_test_id("step-title").inner_text() == title:
            return
        modal.get_by_test_id("next").click()
    raise AssertionError(f"no wizard step {title}")


def test_new_vpg_wizard_creates_the_vpg(plugin_lab, page):
    site = plugin_lab.protected
    modal = _open_new_vpg(page, site)
    modal.get_by_label("Name").fill("ui-vpg")
    modal.get_by_label("RPO alert (seconds)").fill("120")
    _next_until(modal, "VMs")
    offered = modal.locator("input[data-vm]").evaluate_all("els => els.map(e => e.dataset.vm)")
    protected = {vm["name"] for vm in plugin_lab.vpg["vms"]}
    assert offered and not any(n.startswith("Z-VRA-") for n in offered)  # never the VRAs
    assert not protected & set(offered)  # nor VMs another VPG protects
    vm = sorted(offered)[0]
    modal.get_by_label(vm, exact=True).check()
    _next_until(modal, "Recovery")
    modal.get_by_label("Host").select_option(index=1)
    modal.get_by_label("Datastore").select_option(index=1)
    _next_until(modal, "Summary")
    expect(modal.get_by_test_id("vpg-summary")).to_contain_text(vm)
    shoot(page, "wizard-summary-light")
    modal.get_by_test_id("commit").click()
    expect(modal.get_by_test_id("task-done")).to_be_visible(timeout=TASK_TIMEOUT)
    page.get_by_role("button", name="Close").click()
    expect(page.locator("[data-testid=vpg-list] tr[data-vpg=ui-vpg]")).to_be_visible()
    vpgs = site.api().get(f"{site.url}/v1/vpgs?name=ui-vpg", timeout=30).json()
    assert vpgs[0]["VmsCount"] == 1 and vpgs[0]["ConfiguredRpoSeconds"] == 120


def test_refused_input_shows_at_its_field(plugin_lab, page):
    site = plugin_lab.protected
    modal = _open_new_vpg(page, site)
    modal.get_by_label("Name").fill("bad-rpo")
    modal.get_by_label("RPO alert (seconds)").fill("5")
    _next_until(modal, "Summary")
    modal.get_by_test_id("commit").click()
    # The API refuses the draft naming Basic.RpoInSeconds: the wizard goes back to that field and shows it.
    expect(modal.get_by_test_id("step-title")).to_have_text("General")
    rpo = modal.get_by_label("RPO alert (seconds)")
    expect(rpo).to_have_attribute("aria-invalid", "true")
    error = modal.locator(f"#{rpo.get_attribute('id')}-err")
    expect(error).to_be_visible()
    expect(error).to_contain_text("at least 10")
    shoot(page, "wizard-field-error")
    modal.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("modal")).to_have_count(0)
    assert site.api().get(f"{site.url}/v1/vpgs?name=bad-rpo", timeout=30).json() == []


def test_double_click_tags_one_checkpoint(plugin_lab, page):
    site = plugin_lab.protected
    vpg = plugin_lab.vpg["identifier"]
    login(page, site, f"/plugin/?poll=2000#/vpg/{vpg}")
    expect(page.get_by_test_id("vpg-name")).to_have_text("lab-vpg")
    page.get_by_test_id("actions-lab-vpg").select_option("tag")
    modal = page.get_by_test_id("modal")
    modal.get_by_label("Tag", exact=True).fill("ui-double")
    submit = modal.get_by_test_id("submit")
    submit.dblclick()
    expect(modal.get_by_test_id("task-done")).to_be_visible(timeout=TASK_TIMEOUT)
    modal.get_by_role("button", name="Close").click()
    expect(page.locator("[data-testid=timeline] [data-tag=ui-double]")).to_have_count(1, timeout=60_000)
    shoot(page, "vpg-light")
    api = site.api()
    tagged = api.get(f"{site.url}/v1/vpgs/{vpg}/checkpoints?taggedOnly=true", timeout=30).json()
    assert [c["Tag"] for c in tagged].count("ui-double") == 1
    events = api.get(f"{site.url}/v1/events?entityIdentifier={vpg}&limit=50", timeout=30).json()
    asked = [e for e in events if e["Category"] and "heckpoint" in e["EventKind"] and e["User"] == "admin"]
    assert len(asked) == 1, asked


def test_failover_test_from_the_picker_then_stop(plugin_lab, page):
    site = plugin_lab.recovery  # recovery operations are ordered where the VPG recovers
    vpg = plugin_lab.vpg["identifier"]
    login(page, site, f"/plugin/?poll=1500#/vpg/{vpg}")
    page.get_by_test_id("actions-lab-vpg").select_option("failoverTest")
    modal = page.get_by_test_id("modal")
    modal.get_by_test_id("cp-mode").select_option("choose")
    modal.get_by_test_id("cp-kind").select_option("consistent")
    consistent = site.api().get(f"{site.url}/v1/vpgs/{vpg}/checkpoints?consistentOnly=true&limit=5", timeout=30).json()
    assert consistent, "the recovery site lists no consistent checkpoint of the VPG"
    expect(modal.get_by_test_id("cp-list").locator("option").first).to_be_attached()
    chosen = modal.get_by_test_id("cp-list").input_value()
    assert chosen
    modal.get_by_test_id("submit").click()
    expect(modal.get_by_test_id("task-done")).to_be_visible(timeout=TASK_TIMEOUT)
    modal.get_by_role("button", name="Close").click()
    expect(page.get_by_test_id("vpg-substatus")).to_have_text("Testing", timeout=30_000)
    page.get_by_test_id("actions-lab-vpg").select_option("failoverTestStop")
    modal = page.get_by_test_id("modal")
    modal.get_by_label("Notes").fill("checked from the UI")
    modal.get_by_test_id("submit").click()
    expect(modal.get_by_test_id("task-done")).to_be_visible(timeout=TASK_TIMEOUT)
    report = site.api().get(f"{site.url}/v1/reports/recovery?vpgIdentifier={vpg}&limit=1", timeout=30).json()[0]
    assert report["Type"] == "FailoverTest"
    assert chosen in str(report)


def _tab_to(page, js_test: str, limit: int = 60) -> None:
    for _ in range(limit):
        if page.evaluate(f"(() => {{ const e = document.activeElement; return !!(e && ({js_test})); }})()"):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {js_test}")


def test_wizard_by_keyboard_only(plugin_lab, page):
    site = plugin_lab.protected
    login(page, site, "/plugin/?poll=5000#/vpgs")
    _tab_to(page, "e.dataset.testid === 'new-vpg'")
    page.keyboard.press("Enter")
    modal = page.get_by_test_id("modal")
    expect(modal.get_by_test_id("step-title")).to_have_text("General")
    page.keyboard.type("kbd-vpg")  # the first field has the focus
    _tab_to(page, "e.dataset.testid === 'next'")
    page.keyboard.press("Enter")
    expect(modal.get_by_test_id("step-title")).to_have_text("VMs")
    _tab_to(page, "e.dataset.vm && !document.querySelector('[data-vm]:checked')")
    page.keyboard.press("Space")
    vm = page.evaluate("document.activeElement.dataset.vm")
    _tab_to(page, "e.dataset.testid === 'next'")
    page.keyboard.press("Enter")
    expect(modal.get_by_test_id("step-title")).to_have_text("Recovery")
    _tab_to(page, "e.dataset.field === 'Recovery.DefaultHostIdentifier'")
    page.keyboard.press("ArrowDown")
    _tab_to(page, "e.dataset.field === 'Recovery.DefaultDatastoreIdentifier'")
    page.keyboard.press("ArrowDown")
    for title in ("Journal", "Networks", "Boot order", "Summary"):
        _tab_to(page, "e.dataset.testid === 'next'")
        page.keyboard.press("Enter")
        expect(modal.get_by_test_id("step-title")).to_have_text(title)
    expect(modal.get_by_test_id("vpg-summary")).to_contain_text(vm)
    _tab_to(page, "e.dataset.testid === 'commit'")
    page.keyboard.press("Enter")
    expect(modal.get_by_test_id("task-done")).to_be_visible(timeout=TASK_TIMEOUT)
    page.keyboard.press("Escape")
    expect(page.locator("[data-testid=vpg-list] tr[data-vpg=kbd-vpg]")).to_be_visible()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_no_serious_accessibility_violations(plugin_lab, page, theme):
    site = plugin_lab.protected
    page.add_init_script(f"localStorage.setItem('zvr-theme', '{theme}')")
    page.add_init_script(path=str(AXE))  # as the browser's own script: the pages' CSP forbids inline ones
    login(page, site, "/plugin/?poll=60000")
    found = {}
    for route in ("dashboard", "vpgs", f"vpg/{plugin_lab.vpg['identifier']}", "sites", "wizard"):
        if route == "wizard":
            page.goto(site.url + "/plugin/?poll=60000#/vpgs")
            page.get_by_test_id("new-vpg").click()
            expect(page.get_by_test_id("step-title")).to_have_text("General")
        else:
            page.goto(f"{site.url}/plugin/?poll=60000#/{route}")
            page.wait_for_selector("body[data-rendered=true] .zvr-page h1")
        shoot(page, f"{route.split('/')[0]}-{theme}")  # each main view in both themes, as test artefacts
        violations = page.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']}))
            .violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => `${v.id}: ${v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')}`)""")
        if violations:
            found[route] = violations
    assert found == {}, found
    # The check can fail: an image without a text alternative is a critical violation to axe.
    page.evaluate("document.body.append(Object.assign(document.createElement('img'), {src: '/plugin/assets/sprites.svg'}))")
    assert "image-alt" in page.evaluate("async () => (await axe.run(document)).violations.map(v => v.id)")


def test_lost_connection_shows_a_banner_and_retries(plugin_lab, page):
    site = plugin_lab.protected
    login(page, site, "/plugin/?poll=1000")
    # The ZVM becomes unreachable to this browser: its API calls fail at the network level.
    page.route("**/v1/**", lambda route: route.abort("connectionrefused"))
    expect(page.get_by_test_id("connection-banner")).to_be_visible()
    shoot(page, "connection-lost")
    page.unroute("**/v1/**")
    page.get_by_role("button", name="Retry now").click()
    expect(page.get_by_test_id("connection-banner")).to_be_hidden()
    first = page.get_by_test_id("updated").inner_text()
    expect(page.get_by_test_id("updated")).not_to_have_text(first)



def test_vra_actions_show_checks_and_refusals(plugin_lab, page):
    """Every host of the lab has a VRA and protected VMs, so the API refuses both an uninstall and a second
    install: the modals show its refusal, and the install form checks the static address before sending."""
    site = plugin_lab.protected
    api = site.api()
    vra = api.get(f"{site.url}/v1/vras", timeout=30).json()[0]
    login(page, site, "/plugin/?poll=1500#/sites")
    row = page.locator("[data-testid=vras] tr", has_text=vra["HostName"])
    expect(row).to_contain_text("Installed")
    row.get_by_role("button", name="Uninstall").click()
    modal = page.get_by_test_id("modal")
    modal.get_by_test_id("submit").click()
    expect(modal.get_by_test_id("form-error")).to_contain_text("protected VM(s) run on host")
    modal.get_by_role("button", name="Cancel").click()
    # The install modal as the host's menu action opens it.
    page.goto(f"{site.url}/plugin/views/modal?wizard=installVra&host={vra['HostIdentifier']}")
    modal = page.get_by_test_id("modal")
    expect(modal.get_by_label("Datastore").locator("option").first).to_be_attached()
    modal.get_by_label("Address", exact=True).select_option("Static")
    modal.get_by_label("IP address").fill("300.1.2.3")
    modal.get_by_test_id("submit").click()
    ip = modal.get_by_label("IP address")
    expect(ip).to_have_attribute("aria-invalid", "true")
    expect(modal.locator(f"#{ip.get_attribute('id')}-err")).to_contain_text("IPv4 address")
    ip.fill("10.0.0.77")
    modal.get_by_test_id("submit").click()
    expect(modal.get_by_test_id("form-error")).to_contain_text("has a VRA already")
    assert api.get(f"{site.url}/v1/vras/{vra['VraIdentifier']}", timeout=30).json()["State"] == VraStatus.Installed
