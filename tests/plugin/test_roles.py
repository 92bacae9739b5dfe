"""Roles in the web UI (Debian's chromium, Playwright, the two-site lab): a viewer and an operator see enabled
only the actions their role may start, each disabled one saying which role it needs, and the API still
refuses (403) a call the page is made to send anyway. An operator's enabled action works."""

from __future__ import annotations

import secrets

from playwright.sync_api import expect

from tests.plugin.conftest import Site, login, shoot

OPERATOR_ACTIONS = {"failoverTest", "failover", "move", "tag", "verify", "pause"}  # offered to lab-vpg in its state
ADMIN_ACTIONS = {"vpg", "forceSync", "delete"}


def _user(site: Site, role: str) -> tuple[str, str]:
    """A user of ``role`` on the site's ZVM (made through the REST API as its admin); its name and password."""
    name, password = f"ui-{role}-{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    r = site.api().post(f"{site.url}/v1/users", json={"UserName": name, "Password": password, "Role": role}, timeout=30)
    assert r.status_code == 200, r.text
    return name, password


def _menu(page, vpg_name: str) -> dict[str, dict]:
    """The VPG's action menu: option value -> {disabled, text, title}."""
    return {o["value"]: o for o in page.get_by_test_id(f"actions-{vpg_name}").locator("option").evaluate_all(
        "os => os.filter(o => o.value).map(o => ({value: o.value, disabled: o.disabled, text: o.textContent, title: o.title}))")}


def _forced(page, method: str, path: str) -> dict:
    """The page sends a call its controls do not offer (with the session cookie and the CSRF token)."""
    return page.evaluate("""async ([method, path]) => {
        const csrf = decodeURIComponent((document.cookie.match(/(?:^|; )zvr_csrf=([^;]*)/) || [])[1] || "");
        const r = await fetch('/v1' + path, {method, headers: {'X-CSRF-Token': csrf, Accept: 'application/json'}});
        return {status: r.status, body: await r.json().catch(() => null)};
    }""", [method, path])


def test_a_viewer_sees_every_action_disabled_and_the_api_refuses(plugin_lab, page):
    site = plugin_lab.protected
    vpg = plugin_lab.vpg["identifier"]
    name, password = _user(site, "viewer")
    login(page, site, "/plugin/?poll=60000#/vpgs", user=name, password=password)
    expect(page.get_by_test_id("user")).to_have_attribute("data-role", "viewer")
    new = page.get_by_test_id("new-vpg")
    expect(new).to_be_disabled()
    expect(new).to_have_attribute("title", "needs the admin role (you are viewer)")
    expect(page.get_by_test_id("actions-lab-vpg")).to_be_visible()
    menu = _menu(page, "lab-vpg")
    assert menu and all(o["disabled"] for o in menu.values()), menu
    assert "needs the operator role" in menu["pause"]["text"] and "needs the operator role" in menu["pause"]["title"]
    assert "needs the admin role" in menu["delete"]["text"]
    page.goto(f"{site.url}/plugin/?poll=60000#/sites")
    for testid in ("pair", "generate-token"):
        expect(page.get_by_test_id(testid)).to_have_attribute("title", "needs the admin role (you are viewer)")
    expect(page.locator("[data-testid=vras] button").first).to_be_disabled()
    shoot(page, "sites-as-viewer")
    # A modal opened by its address all the same: its button is disabled and says why.
    page.goto(f"{site.url}/plugin/views/modal?wizard=pause&vpg={vpg}")
    expect(page.get_by_test_id("submit")).to_be_disabled()
    expect(page.get_by_test_id("role-note")).to_contain_text("needs the operator role")
    # The page made to send it anyway: the API refuses, and nothing changed.
    forced = _forced(page, "POST", f"/vpgs/{vpg}/pause")
    assert forced["status"] == 403, forced
    assert "operator" in forced["body"]["Message"]
    assert site.api().get(f"{site.url}/v1/vpgs/{vpg}", timeout=30).json()["IsPaused"] is False


def test_an_operator_runs_operations_but_not_admin_actions(plugin_lab, page):
    site = plugin_lab.protected
    vpg = plugin_lab.vpg["identifier"]
    name, password = _user(site, "operator")
    login(page, site, f"/plugin/?poll=2000#/vpg/{vpg}", user=name, password=password)
    expect(page.get_by_test_id("user")).to_have_attribute("data-role", "operator")
    expect(page.get_by_test_id("vpg-name")).to_have_text("lab-vpg")
    menu = _menu(page, "lab-vpg")
    assert {k for k, o in menu.items() if not o["disabled"]} == OPERATOR_ACTIONS, menu
    assert {k for k, o in menu.items() if o["disabled"]} == ADMIN_ACTIONS, menu
    assert all("needs the admin role" in menu[k]["text"] for k in ADMIN_ACTIONS)
    # An enabled action works: the operator tags a checkpoint.
    page.get_by_test_id("actions-lab-vpg").select_option("tag")
    modal = page.get_by_test_id("modal")
    modal.get_by_label("Tag", exact=True).fill("by-operator")
    modal.get_by_test_id("submit").click()
    expect(modal.get_by_test_id("task-done")).to_be_visible(timeout=150_000)
    modal.get_by_role("button", name="Close").click()
    # Listed once the recovery journal holds it (the page polls).
    expect(page.locator("[data-testid=timeline] [data-tag=by-operator]")).to_have_count(1, timeout=60_000)
    # An admin's action sent anyway: refused, and the VPG is still there.
    forced = _forced(page, "DELETE", f"/vpgs/{vpg}")
    assert forced["status"] == 403, forced
    assert "admin" in forced["body"]["Message"]
    assert site.api().get(f"{site.url}/v1/vpgs/{vpg}", timeout=30).status_code == 200
