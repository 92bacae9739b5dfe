"""Pairing on 9081 between two ZVMs on two vcsims: a token from the recovery site, a wrong one refused,
certificates exchanged so that later calls are mutual TLS, the peer's inventory for recovery settings,
unpairing. Site B runs as `zvm serve`; site A runs in this process."""

from __future__ import annotations

import http.client
import ssl

import pytest

from tests.zvm.conftest import ADMIN_PASSWORD
from tests.zvm.fakes import ApiClient
from tests.zvm.pg import free_port
from tests.zvm.procs import start_serve
from zvm import models as m
from zvm.client import ZvmClient
from zvm.enums import PairingStatus, TaskState
from zvm.errors import AuthenticationError
from zvm.peer.client import PeerClient
from zvm.peer.pki import SitePki, ensure_pki


@pytest.fixture
def site_b(two_sites, tmp_path):
    sim = two_sites.recovery
    server = start_serve(tmp_path / "site-b", "--admin-password", ADMIN_PASSWORD, "--site-name", "Site B",
                         "--public-address", "127.0.0.1", "--peer-port", str(free_port()),
                         "--vcenter-url", sim.url, "--vcenter-username", sim.username, "--vcenter-verify", "false",
                         env={"ZVM_VCENTER_PASSWORD": sim.password})
    server.wait_for(r"inventory of \S+ loaded")
    port = int(server.wait_for(r"peer service listening on \S+:(\d+)").group(1))
    client = ZvmClient(server.url).login("admin", ADMIN_PASSWORD)
    yield server, client, port
    client.close()
    assert server.stop() == 0


@pytest.fixture
def site_a(make_app, two_sites):
    sim = two_sites.protected
    app = make_app(name="site-a", site_name="Site A", peer_port=free_port(), vcenter_url=sim.url,
                   vcenter_username=sim.username, vcenter_password=sim.password, vcenter_verify="false")
    zvm = app.extensions["zvm"]
    zvm.inventory.sync_once()
    zvm.peer_server.start()
    yield app
    zvm.peer_server.stop()


def _without_client_certificate(port: int, ca_pem: str) -> http.client.HTTPSConnection:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=ca_pem)
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)


def pair(api, port: int, token: str) -> dict:
    task = api.post("/peersites", {"HostName": "127.0.0.1", "Port": port, "Token": token}).json
    api.run_tasks()
    return api.get(f"/tasks/{task}").json


def test_pair_use_and_unpair_two_sites(site_a, site_b, tmp_path):
    server_b, b, peer_port_b = site_b
    a = ApiClient.login(site_a)
    token = b.generate_pairing_token(10)["Token"]
    secret, pin = token.rsplit(".", 1)

    # a wrong token is refused by B; a token naming another certificate is never sent
    wrong = pair(a, peer_port_b, f"{'x' * len(secret)}.{pin}")
    assert wrong["Status"]["State"] == TaskState.Failed and wrong["Error"]["Code"] == "AuthenticationFailed"
    assert "token is wrong" in wrong["Error"]["Message"]
    other = pair(a, peer_port_b, f"{secret}.{'0' * 16}")
    assert other["Status"]["State"] == TaskState.Failed and "not the one that generated" in other["Error"]["Message"]
    assert a.get("/peersites").json == [] and b.peer_sites() == []

    done = pair(a, peer_port_b, token)
    assert done["Status"] == {"State": TaskState.Completed, "Progress": 100}, done
    site_b_id = b.local_site()["SiteIdentifier"]
    assert done["Result"] == {"SiteIdentifier": site_b_id}
    peers = a.get("/peersites").json
    assert [(p["PeerSiteName"], p["PairingStatus"], p["Port"]) for p in peers] == [("Site B", PairingStatus.Paired, peer_port_b)]
    assert [p["PeerSiteName"] for p in b.peer_sites()] == ["Site A"]
    again = a.post("/peersites", {"HostName": "127.0.0.1", "Port": peer_port_b, "Token": token})
    assert again.status == 409 and "already paired" in again.json["Message"]
    stranger = ensure_pki(tmp_path / "stranger", "Stranger", "stranger-id", [])
    with pytest.raises(AuthenticationError, match="wrong, used or expired"):  # a token is used once
        PeerClient("127.0.0.1", peer_port_b, stranger).pair(
            token, {"SiteIdentifier": "stranger-id", "SiteName": "Stranger"}, stranger.ca_pem)

    # B's inventory, for recovery settings
    b_hosts = {h["HostIdentifier"] for h in b.hosts(site_b_id)}
    assert {h["HostIdentifier"] for h in a.get(f"/virtualizationsites/{site_b_id}/hosts").json} == b_hosts
    b_ds = a.get(f"/virtualizationsites/{site_b_id}/datastores").json
    assert b_ds and a.get(f"/virtualizationsites/{site_b_id}/networks").json
    assert a.get(f"/virtualizationsites/{site_b_id}/vms").json == []  # VMs of a peer are not copied

    # later calls are mutual TLS, both ways
    zvm_a = a.zvm
    peer_row = m.PeerSite.get()
    assert PeerClient("127.0.0.1", peer_port_b, zvm_a.peer_pki(), peer_row.certificate_pem).ping()["Site"][
        "SiteName"] == "Site B"
    # a certificate from a CA that is not paired: the TLS handshake refuses it
    with pytest.raises(AuthenticationError, match="UNKNOWN_CA"):
        PeerClient("127.0.0.1", peer_port_b, stranger, peer_row.certificate_pem).ping()
    nameless = PeerClient("127.0.0.1", peer_port_b, stranger, peer_row.certificate_pem)
    nameless._mutual = lambda: _without_client_certificate(peer_port_b, peer_row.certificate_pem)
    with pytest.raises(AuthenticationError, match="client certificate of a paired site"):
        nameless.ping()
    pki_b = SitePki(*(tmp_path / "site-b" / "pki" / n for n in ("ca.pem", "peer.pem", "peer.key")))
    a_port = zvm_a.peer_server.port
    assert PeerClient("127.0.0.1", a_port, pki_b, zvm_a.peer_pki().ca_pem).ping()["Site"]["SiteName"] == "Site A"
    zvm_a.monitor.run_once()  # A pings B (and refreshes its inventory)
    assert a.get("/peersites").json[0]["PairingStatus"] == PairingStatus.Paired

    # a VPG from A to B, with B's host and datastore
    site_a_id = a.get("/localsite").json["SiteIdentifier"]
    vm = a.get(f"/virtualizationsites/{site_a_id}/vms").json[0]["VmIdentifier"]
    sid = a.post("/vpgSettings").json
    a.put(f"/vpgSettings/{sid}/basic", {"Name": "to-b", "RecoverySiteIdentifier": site_b_id, "RpoInSeconds": 60,
                                        "JournalHistoryInHours": 1, "Priority": "Low", "UseWanCompression": True})
    a.put(f"/vpgSettings/{sid}/recovery", {"DefaultHostIdentifier": sorted(b_hosts)[0],
                                           "DefaultHostClusterIdentifier": None,
                                           "DefaultDatastoreIdentifier": b_ds[0]["DatastoreIdentifier"],
                                           "DefaultFolderIdentifier": None})
    a.post(f"/vpgSettings/{sid}/vms", {"VmIdentifier": vm})
    assert a.post(f"/vpgSettings/{sid}/commit").status == 202
    vpg = a.get("/vpgs").json[0]
    assert vpg["RecoverySite"] == {"SiteIdentifier": site_b_id, "SiteName": "Site B"}

    # unpairing waits for the VPGs to go
    assert a.delete(f"/peersites/{site_b_id}").status == 409
    a.delete(f"/vpgs/{vpg['VpgIdentifier']}")
    a.run_tasks()
    task = a.delete(f"/peersites/{site_b_id}").json
    a.run_tasks()
    t = a.get(f"/tasks/{task}").json
    assert t["Status"]["State"] == TaskState.Completed and "not reached" not in t["Step"], t
    assert a.get("/peersites").json == [] and b.peer_sites() == []
    assert a.get(f"/virtualizationsites/{site_b_id}/hosts").status == 404
