"""The web UI's operations end to end in Debian's chromium (Playwright) against the two-site lab: edit a VPG
through the wizard; pause, resume and force sync; failover from a tagged checkpoint then roll back; move,
commit with reverse protection, and move back; delete keeping the recovery volumes or not; on a third site,
install a VRA (the static address checked at its field) and uninstall it; pair with it and unpair.

The module makes its own VPGs (one VM each) so the lab's VPG, which other modules use, is never moved or
deleted; they share one setup (module-scoped) and follow each other in file order. Every modal's button is
checked to be disabled at once when pressed. What the page shows is asserted through the UI; the few reads
of the REST API go through ``_vpg``/``_client`` (the one place that knows the API's shapes)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.plugin.conftest import PluginLab, Site, lab_attach, login, shoot
from tests.zvm.pg import free_port
from tests.zvm.procs import start_serve
from zvm.client import ZvmClient
from zvm.enums import VpgStatus

TASK = 240_000  # ms: a move waits for the source VMs to shut down and a last sync


def _client(site: Site) -> ZvmClient:
    return ZvmClient(site.url).login("admin", site.password)


def _vpg(site: Site, vpg_id: str) -> dict:
    """What the tests read of a VPG through ``site``'s REST API: the one place that knows the API's shapes
    (the API sends Zerto's numbers for enumerations)."""
    v = _client(site).vpg(vpg_id)
    return {"meets_sla": v["Status"] == VpgStatus.MeetingSLA, "paused": v["IsPaused"], "rpo": v["ConfiguredRpoSeconds"],
            "history_minutes": v["HistoryStatusApi"]["ConfiguredHistoryInMinutes"], "vms": v["VmsCount"],
            "protected_by": v["ProtectedSite"]["SiteName"]}


def _until(check, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        time.sleep(1)


@dataclass
class Flow:
    lab: PluginLab
    vpg: str  # flow-vpg: edited, paused, failed over, moved, deleted keeping its volumes
    other: str  # flow-vpg-2: deleted without keeping them
    recovery_datastore: Path  # the recovery vCenter's datastore directory their replicas are in


def _recovery_placement(client: ZvmClient, site_id: str) -> tuple[str, str, str]:
    """The recovery site's first host (by name, as the lab's VPG uses) and its first datastore."""
    host = sorted(client.hosts(site_id), key=lambda h: h["VirtualizationHostName"])[0]
    names = {d["DatastoreIdentifier"]: d["DatastoreName"] for d in client.datastores(site_id)}
    ds = host["DatastoreIdentifiers"][0]
    return host["HostIdentifier"], ds, names[ds]


@pytest.fixture(scope="module")
def flow(plugin_lab) -> Iterator[Flow]:
    prot, rec = _client(plugin_lab.protected), _client(plugin_lab.recovery)
    here, there = prot.local_site()["SiteIdentifier"], rec.local_site()["SiteIdentifier"]
    for old in prot.vpgs():  # left by an earlier run on a lab kept up (ZVR_PLUGIN_LAB)
        if old["VpgName"].startswith("flow-vpg"):
            prot.wait_for_task(prot.delete_vpg(old["VpgIdentifier"], force=True), timeout=180)
    free = [v for v in prot.vms(here) if not v["VpgIdentifier"] and not v["VmName"].startswith("Z-VRA-")]
    assert len(free) >= 2, "the lab has too few unprotected VMs for this module"
    host, ds, ds_name = _recovery_placement(rec, there)
    ids = []
    for name, vm in (("flow-vpg", free[0]), ("flow-vpg-2", free[1])):
        prot.wait_for_task(prot.create_vpg(name, [vm["VmIdentifier"]], recovery_site=there, recovery_datastore=ds,
                                           recovery_host=host, rpo_seconds=300), timeout=180)
        ids.append(prot.vpg_by_name(name)["VpgIdentifier"])
    lab_attach(plugin_lab)
    for vpg_id in ids:
        _until(lambda v=vpg_id: _vpg(plugin_lab.protected, v)["meets_sla"], "the flow VPGs to meet their SLA")
    yield Flow(lab=plugin_lab, vpg=ids[0], other=ids[1],
               recovery_datastore=Path(plugin_lab.state["vcenters"]["recovery"]["datastores"][ds_name]))


def _action(page, vpg_name: str, action: str):
    """Choose ``action`` in the VPG page's menu; the modal it opens."""
    page.get_by_test_id(f"actions-{vpg_name}").select_option(action)
    modal = page.get_by_test_id("modal")
    expect(modal.get_by_role("dialog")).to_be_visible()
    return modal


def _press(button) -> None:
    """Click ``button``: in the same turn of the page's event loop it is disabled and busy (a second click
    does nothing)."""
    expect(button).to_be_enabled()
    assert button.evaluate("b => { b.click(); return b.disabled && b.getAttribute('aria-busy') === 'true'; }")


def _submit(modal, timeout: int = TASK) -> None:
    """Press the modal's button (disabled at once); its task ends well (else the refusal shown fails the test)."""
    _press(modal.get_by_test_id("submit"))
    ended = modal.locator("[data-testid=task-done], [data-testid=task-failed], [data-testid=form-error] .alert, "
                          ".zvr-field-error:not([hidden])")
    expect(ended.first).to_be_visible(timeout=timeout)
    assert modal.get_by_test_id("task-done").count() == 1, ended.first.inner_text()
    modal.get_by_role("button", name="Close").click()
    expect(modal).to_have_count(0)


def _substatus(page, text: str) -> None:
    expect(page.get_by_test_id("vpg-substatus")).to_have_text(text, timeout=60_000)


def test_edit_a_vpg_through_the_wizard(flow, page):
    site = flow.lab.protected
    login(page, site, f"/plugin/?poll=2000#/vpg/{flow.vpg}")
    modal = _action(page, "flow-vpg", "vpg")
    expect(modal.get_by_test_id("step-title")).to_have_text("General")
    expect(modal.get_by_label("Name")).to_have_value("flow-vpg")
    modal.get_by_label("RPO alert (seconds)").fill("240")
    modal.get_by_test_id("next").click()
    expect(modal.get_by_test_id("step-title")).to_have_text("VMs")
    assert modal.locator("input[data-vm]:checked").count() == 1  # its VM, kept
    for title in ("Recovery", "Journal"):
        modal.get_by_test_id("next").click()
        expect(modal.get_by_test_id("step-title")).to_have_text(title)
    modal.get_by_label("Journal history (hours)").fill("12")
    for title in ("Networks", "Boot order", "Summary"):
        modal.get_by_test_id("next").click()
        expect(modal.get_by_test_id("step-title")).to_have_text(title)
    expect(modal.get_by_test_id("vpg-summary")).to_contain_text("240 s")
    commit = modal.get_by_test_id("commit")
    expect(commit).to_have_text("Save")
    _press(commit)
    expect(modal.get_by_test_id("task-done")).to_be_visible(timeout=TASK)
    modal.get_by_role("button", name="Close").click()
    expect(page.get_by_test_id("vpg-name")).to_have_text("flow-vpg")
    expect(page.locator("main")).to_contain_text("alert above 4 min")
    v = _vpg(site, flow.vpg)
    assert (v["rpo"], v["history_minutes"], v["vms"]) == (240, 720, 1)


def test_pause_resume_and_force_sync(flow, page):
    site = flow.lab.protected
    login(page, site, f"/plugin/?poll=1500#/vpg/{flow.vpg}")
    _submit(_action(page, "flow-vpg", "pause"))
    _substatus(page, "ReplicationPausedUserInitiated")
    assert _vpg(site, flow.vpg)["paused"] is True
    shoot(page, "vpg-paused-light")
    # Paused, the menu offers Resume instead of Pause.
    _submit(_action(page, "flow-vpg", "resume"))
    expect(page.get_by_test_id("actions-flow-vpg").locator("option[value=pause]")).to_have_count(1)
    assert _vpg(site, flow.vpg)["paused"] is False
    _submit(_action(page, "flow-vpg", "forceSync"))
    _until(lambda: _vpg(site, flow.vpg)["meets_sla"], "flow-vpg to meet its SLA after the force sync")


def test_failover_from_a_tagged_checkpoint_then_roll_back(flow, page):
    prot, rec = flow.lab.protected, flow.lab.recovery
    client = _client(prot)
    client.wait_for_task(client.take_checkpoint(flow.vpg, "before-failover"), timeout=120)
    remote = _client(rec)

    def tagged() -> list[dict]:  # as the recovery site's journal holds them
        return [c for c in remote.checkpoints(flow.vpg, tagged_only=True) if c["Tag"] == "before-failover"]

    _until(tagged, "the tagged checkpoint to reach the recovery site")
    chosen = tagged()[0]["CheckpointIdentifier"]
    login(page, rec, f"/plugin/?poll=1500#/vpg/{flow.vpg}")  # ordered where the VPG recovers
    modal = _action(page, "flow-vpg", "failover")
    modal.get_by_test_id("cp-mode").select_option("tagged")
    modal.get_by_label("Commit policy").select_option("None")
    modal.get_by_label("Source VMs").select_option("None")
    expect(modal.get_by_label("Reverse protection on commit")).not_to_be_checked()
    _submit(modal)
    _substatus(page, "FailingOverBeforeCommit")
    # Before commit the menu offers commit and roll back instead of another failover.
    menu = page.get_by_test_id("actions-flow-vpg")
    expect(menu.locator("option[value=failoverRollback]")).to_have_count(1)
    expect(menu.locator("option[value=failover]")).to_have_count(0)
    shoot(page, "vpg-before-commit-light")
    _submit(_action(page, "flow-vpg", "failoverRollback"))
    _substatus(page, "None")
    report = _client(rec).recovery_reports(vpg=flow.vpg, type="Failover")[0]
    assert chosen in str(report)


def test_move_commit_with_reverse_protection_then_move_back(flow, page):
    prot, rec = flow.lab.protected, flow.lab.recovery
    login(page, rec, f"/plugin/?poll=1500#/vpg/{flow.vpg}")
    modal = _action(page, "flow-vpg", "move")
    modal.get_by_label("Commit policy").select_option("None")
    _submit(modal)
    _substatus(page, "MovingBeforeCommit")
    modal = _action(page, "flow-vpg", "moveCommit")
    expect(modal.get_by_label("Reverse protection")).to_be_checked()
    _submit(modal)
    lab_attach(flow.lab)
    # Reversed: the recovery site protects the VMs now, and the move back is ordered on the first site.
    expect(page.locator("main")).to_contain_text("Protected site", timeout=60_000)
    _until(lambda: _vpg(rec, flow.vpg)["protected_by"] == _client(rec).local_site()["SiteName"],
           "the VPG to be protected by the recovery site after the committed move")
    page2 = page.context.new_page()
    login(page2, prot, f"/plugin/?poll=1500#/vpg/{flow.vpg}")
    modal = _action(page2, "flow-vpg", "move")
    modal.get_by_label("Commit policy").select_option("Commit")
    modal.get_by_label("Commit after (seconds)").fill("0")
    _submit(modal)
    _until(lambda: _vpg(prot, flow.vpg)["protected_by"] == _client(prot).local_site()["SiteName"],
           "the VPG to be protected by its first site again after the move back")
    lab_attach(flow.lab)
    page2.close()


def test_delete_keeping_the_recovery_volumes_or_not(flow, page):
    site = flow.lab.protected
    login(page, site, f"/plugin/?poll=1500#/vpg/{flow.vpg}")
    _until(lambda: _vpg(site, flow.vpg)["meets_sla"], "flow-vpg to meet its SLA before the delete")
    modal = _action(page, "flow-vpg", "delete")
    modal.get_by_label("Keep the recovery volumes").check()
    _submit(modal)
    page.goto(f"{site.url}/plugin/?poll=1500#/vpg/{flow.other}")
    modal = _action(page, "flow-vpg-2", "delete")
    expect(modal.get_by_label("Keep the recovery volumes")).not_to_be_checked()
    _submit(modal)
    page.goto(f"{site.url}/plugin/?poll=1500#/vpgs")
    expect(page.locator("[data-testid=vpg-list] tr[data-vpg=lab-vpg]")).to_be_visible()
    expect(page.locator("[data-testid=vpg-list] tr[data-vpg^=flow-vpg]")).to_have_count(0)
    kept = flow.recovery_datastore / "zvr" / flow.vpg
    assert kept.is_dir() and any(p.is_file() for p in kept.rglob("*")), f"no replica kept in {kept}"
    assert not (flow.recovery_datastore / "zvr" / flow.other).exists()


@pytest.fixture(scope="module")
def third_site(start_vcsim, tmp_path_factory) -> Iterator[tuple[Site, int]]:
    """A third ZVM on its own vcsim, with no VRA and not paired: where VRAs are installed and uninstalled
    (the lab's VRAs are served by its own processes, which a new install would not have), and what the lab's
    protected site pairs with and unpairs; the site and its peer service's port."""
    sim = start_vcsim("third")
    password, peer_port = secrets.token_urlsafe(12), free_port()
    server = start_serve(tmp_path_factory.mktemp("third") / "zvm", "--admin-password", password, "--site-name", "Third site",
                         "--public-address", "127.0.0.1", "--peer-port", str(peer_port),
                         "--vcenter-url", sim.url, "--vcenter-username", sim.username, "--vcenter-verify", "false",
                         env={"ZVM_VCENTER_PASSWORD": sim.password})
    try:
        server.wait_for(r"inventory of \S+ loaded")
        yield Site(url=server.url, password=password, vcenter={}), peer_port
    finally:
        server.stop()


def test_install_a_vra_with_a_static_address_then_uninstall(third_site, page):
    site, _ = third_site
    host = sorted(_client(site).hosts(_client(site).local_site()["SiteIdentifier"]),
                  key=lambda h: h["VirtualizationHostName"])[0]["VirtualizationHostName"]
    login(page, site, "/plugin/?poll=1500#/sites")
    row = page.locator(f"[data-testid=vras] tr[data-host='{host}']")
    expect(row).to_contain_text("none")
    _press(row.get_by_test_id(f"install-{host}"))
    modal = page.get_by_test_id("modal")
    expect(modal.get_by_label("Datastore").locator("option").first).to_be_attached()
    modal.get_by_label("Address", exact=True).select_option("Static")
    ip = modal.get_by_label("IP address")
    ip.fill("10.0.0")
    modal.get_by_test_id("submit").click()
    expect(ip).to_have_attribute("aria-invalid", "true")
    expect(modal.locator(f"#{ip.get_attribute('id')}-err")).to_contain_text("IPv4 address")
    shoot(page, "vra-install-field-error")
    ip.fill("10.20.30.40")
    modal.get_by_label("Subnet mask").fill("255.255.0.0")
    _submit(modal)
    expect(row).to_contain_text("Installed")
    expect(row).to_contain_text("10.20.30.40:")
    _press(row.get_by_test_id(f"uninstall-{host}"))
    _submit(page.get_by_test_id("modal"))
    expect(row).to_contain_text("none")
    assert _client(site).vras() == []


def test_pair_with_a_site_then_unpair(flow, third_site, page):
    site = flow.lab.protected
    third, peer_port = third_site
    # The peer makes a token on its own UI.
    login(page, third, "/plugin/?poll=2000#/sites")
    page.get_by_test_id("generate-token").click()
    expect(page.get_by_test_id("token")).to_be_visible()
    token = page.get_by_test_id("token").input_value()
    login(page, site, "/plugin/?poll=1500#/sites")
    # A port the API refuses shows at its field.
    page.get_by_label("Peer ZVM address").fill("127.0.0.1")
    port = page.get_by_label("Peer service port")
    port.fill("70000")
    page.get_by_label("Pairing token", exact=True).fill(token)
    page.get_by_test_id("pair").click()
    expect(port).to_have_attribute("aria-invalid", "true")
    expect(page.locator(f"#{port.get_attribute('id')}-err")).to_contain_text("65535")
    port.fill(str(peer_port))
    _press(page.get_by_test_id("pair"))
    expect(page.get_by_test_id("task-done")).to_be_visible(timeout=TASK)
    row = page.locator("[data-testid=peers] tr[data-peer='Third site']")
    expect(row).to_contain_text("Paired")
    shoot(page, "sites-paired-light")
    # The lab's pair has VPGs: unpairing it is refused in its modal.
    page.get_by_test_id("unpair-Recovery site").click()
    modal = page.get_by_test_id("modal")
    modal.get_by_test_id("submit").click()
    expect(modal.get_by_test_id("form-error")).to_contain_text("delete them before unpairing")
    modal.get_by_role("button", name="Cancel").click()
    page.get_by_test_id("unpair-Third site").click()
    _submit(page.get_by_test_id("modal"))
    expect(row).to_have_count(0)
    assert [p["PeerSiteName"] for p in _client(site).peer_sites()] == ["Recovery site"]
