"""Browser sessions of the web UI without a browser: the session cookie (HttpOnly, SameSite), CSRF on
state-changing calls, the x-zerto-session header unchanged; and the vSphere Client's user, verified by
cloning their vCenter session (a real clone ticket from vcsim's SessionManager)."""

from __future__ import annotations

import requests

from zvm.vcenter import VCenter, VCenterConfig


def clone_tickets(vcenter: dict, count: int) -> list[str]:
    """Tickets of an administrator's vCenter session, as the vSphere Client holds one for its user."""
    with VCenter(VCenterConfig(vcenter["url"], vcenter["username"], vcenter["password"])) as vc:
        return [vc.content.sessionManager.AcquireCloneTicket() for _ in range(count)]


def test_cookie_session_needs_csrf_and_the_header_still_works(plugin_lab):
    site = plugin_lab.protected
    s = requests.Session()
    r = s.post(f"{site.url}/v1/session/add", auth=("admin", site.password), headers={"X-ZVR-Session-Cookie": "1"},
               timeout=30)
    assert r.status_code == 200, r.text
    assert "x-zerto-session" not in r.headers  # the token stays out of the page's reach
    set_cookie = r.headers["Set-Cookie"]
    assert "zvr_session=" in set_cookie and "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    assert s.get(f"{site.url}/v1/session", timeout=30).json()["User"] == "admin"

    # A state-changing call with the cookie alone is refused before it reaches the API.
    r = s.post(f"{site.url}/v1/vpgs/{plugin_lab.vpg['identifier']}/pause", timeout=30)
    assert r.status_code == 403 and r.json()["Code"] == "CsrfTokenInvalid"
    r = s.post(f"{site.url}/v1/vpgs/no-such-vpg/pause", headers={"X-CSRF-Token": "0" * 64}, timeout=30)
    assert r.status_code == 403
    assert s.get(f"{site.url}/v1/vpgs/{plugin_lab.vpg['identifier']}", timeout=30).json()["IsPaused"] is False
    # With the session's CSRF token it reaches the API (which answers for the unknown VPG).
    r = s.post(f"{site.url}/v1/vpgs/no-such-vpg/pause", headers={"X-CSRF-Token": s.cookies["zvr_csrf"]}, timeout=30)
    assert r.status_code == 404 and r.json()["Code"] == "VpgNotFound"

    # Scripts: the header, no cookie, no CSRF token.
    api = site.api()
    assert api.post(f"{site.url}/v1/vpgs/no-such-vpg/pause", timeout=30).status_code == 404

    r = s.delete(f"{site.url}/v1/session", headers={"X-CSRF-Token": s.cookies["zvr_csrf"]}, timeout=30)
    assert r.status_code == 204
    assert "zvr_session" not in s.cookies
    assert s.get(f"{site.url}/v1/vpgs", timeout=30).status_code == 401


def test_vsphere_client_user_is_verified_by_cloning_their_session(plugin_lab):
    site = plugin_lab.protected
    ticket, other = clone_tickets(site.vcenter, 2)
    s = requests.Session()
    r = s.post(f"{site.url}/plugin/auth/vsphere", json={"CloneTicket": ticket}, timeout=30)
    assert r.status_code == 200, r.text
    user = f"vsphere:{site.vcenter['username']}"
    assert r.json() == {"User": user}
    assert "HttpOnly" in r.headers["Set-Cookie"]
    assert s.get(f"{site.url}/v1/session", timeout=30).json()["User"] == user
    events = site.api().get(f"{site.url}/v1/events?eventType=VsphereLogin&limit=5", timeout=30).json()
    assert events[0]["User"] == user and events[0]["Result"] == "Succeeded"

    # A ticket is good once; one vCenter never issued is refused; none at all names the field.
    again = requests.post(f"{site.url}/plugin/auth/vsphere", json={"CloneTicket": ticket}, timeout=30)
    assert again.status_code == 401 and "ticket" in again.json()["Message"]
    forged = requests.post(f"{site.url}/plugin/auth/vsphere", json={"CloneTicket": "forged"}, timeout=30)
    assert forged.status_code == 401
    empty = requests.post(f"{site.url}/plugin/auth/vsphere", json={}, timeout=30)
    assert empty.status_code == 400 and empty.json()["Field"] == "CloneTicket"
    # The other site's vCenter does not know this site's tickets.
    foreign = requests.post(f"{plugin_lab.recovery.url}/plugin/auth/vsphere", json={"CloneTicket": other}, timeout=30)
    assert foreign.status_code == 401


def test_manifest_and_pages_are_served(plugin_lab):
    site = plugin_lab.protected
    r = requests.get(f"{site.url}/plugin/plugin.json", timeout=30)
    assert r.status_code == 200 and r.json()["manifestVersion"] == "1.2.0"
    for uri in ("assets/sprites.svg", "assets/sprites-dark.svg", "views/dashboard", "views/vm"):
        assert requests.get(f"{site.url}/plugin/{uri}", timeout=30).status_code == 200, uri
    page = requests.get(f"{site.url}/plugin/views/vm", timeout=30)
    assert '<script src="/api/ui/htmlClientSdk.js">' in page.text  # the client's JS API, in the client
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert requests.get(f"{site.url}/plugin/views/nope", timeout=30).status_code == 404
    css = requests.get(f"{site.url}/plugin/assets/app.css", timeout=30)  # requests accepts gzip
    assert css.headers["Content-Encoding"] == "gzip" and css.headers["Content-Type"].startswith("text/css")
    assert len(css.content) > 10 * int(css.headers["Content-Length"]) / 2  # decoded: several times larger
    plain = requests.get(f"{site.url}/plugin/assets/app.css", headers={"Accept-Encoding": "identity"}, timeout=30)
    assert "Content-Encoding" not in plain.headers and plain.content == css.content
    assert requests.get(f"{site.url}/", allow_redirects=False, timeout=30).headers["Location"].endswith("/plugin/")
