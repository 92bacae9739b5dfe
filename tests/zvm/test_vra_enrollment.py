"""VRA enrollment and mutual TLS on 4005, with real processes: `vra serve` enrolls with the ZVM's REST API
(served on a loopback port) using the one-time token its install put in its vApp properties (vcsim), the
ZVM manages it over mutual TLS, refusals of wrong, reused and expired tokens change nothing; then a peer
site's VRA is refused until the sites pair, accepted after (no restart), refused after unpairing; another
VRA may not use the Control service. Site A runs in this process, site B as `zvm serve`."""

from __future__ import annotations

import json
import stat
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import requests
from cryptography import x509
from pyVmomi import vim
from werkzeug.serving import make_server

from tests.replication.lab import Proc, wait_for
from tests.replication.test_tls import Ca
from tests.zvm.conftest import ADMIN_PASSWORD
from tests.zvm.fakes import ApiClient
from tests.zvm.pg import free_port
from tests.zvm.procs import start_serve
from vra_appliance.proto.v1 import control_pb2 as cpb
from vra_appliance.proto.v1 import control_pb2_grpc as cpb_grpc
from vra_appliance.proto.v1 import recovery_pb2 as rpb
from vra_appliance.proto.v1 import recovery_pb2_grpc as rpb_grpc
from vra_appliance.stream.transport import Hello, TransientError
from vra_appliance.stream.transport_grpc import GrpcTransport
from vra_appliance.stream.wire import StreamWrite, seal
from vra_appliance.trust.auth import Security
from zvm import models as m
from zvm.client import ZvmClient
from zvm.enums import TaskState
from zvm.peer.enrollment import site_enrollment
from zvm.tls import SiteCA
from zvm.vcenter import VCenter, VCenterConfig
from zvm.vcenter.ovf import vapp_properties
from zvm.vra_control import RecoverPlan, VraRef

ENROLL_HEADER = "x-zvr-enrollment-token"


@dataclass
class SiteA:
    app: object
    zvm: object
    api: ApiClient
    url: str
    sim: object


def remove_vra_vms(sim) -> None:
    """The session's vcsim is shared: a test that failed may have left VRA VMs behind."""
    with VCenter(VCenterConfig(sim.url, sim.username, sim.password)) as vc:
        view = vc.content.viewManager.CreateContainerView(vc.content.rootFolder, [vim.VirtualMachine], True)
        try:
            stale = [vm._moId for vm in view.view if vm.name.startswith("Z-VRA-")]
        finally:
            view.Destroy()
        for moid in stale:
            vc.destroy_vm(moid)


@pytest.fixture
def site_a(make_app, two_sites):
    sim = two_sites.protected
    remove_vra_vms(sim)
    app = make_app(name="site-a", site_name="Site A", peer_port=free_port(), vcenter_url=sim.url,
                   vcenter_username=sim.username, vcenter_password=sim.password, vcenter_verify="false")
    zvm = app.extensions["zvm"]
    zvm.inventory.sync_once()
    zvm.peer_server.start()
    server = make_server("127.0.0.1", 0, app, threaded=True)  # the VRAs enroll over real HTTP
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    site = SiteA(app, zvm, ApiClient.login(app), f"http://127.0.0.1:{server.server_port}", sim)
    try:
        yield site
    finally:
        for vra in m.Vra.select():  # the vcsim is shared by the session's tests: remove the VRAs' VMs
            site.api.delete(f"/vras/{vra.identifier}")
        site.api.run_tasks()
        assert not m.Vra.select().exists()
        server.shutdown()
        thread.join(10)
        zvm.peer_server.stop()


def install(site: SiteA, index: int, ip: str) -> tuple[m.Vra, dict]:
    """Install a VRA through the API (OVF import into vcsim); returns it and its vApp properties."""
    site_id = site.api.get("/localsite").json["SiteIdentifier"]
    host = sorted(site.api.get(f"/virtualizationsites/{site_id}/hosts").json,
                  key=lambda h: h["VirtualizationHostName"])[index]
    resp = site.api.post("/vras", {"HostIdentifier": host["HostIdentifier"],
                                   "DatastoreIdentifier": host["DatastoreIdentifiers"][0],
                                   "NetworkIdentifier": host["NetworkIdentifiers"][0],
                                   "VraNetworkDataApi": {"VraIPConfigurationTypeApi": "Static", "VraIPAddress": ip,
                                                         "SubnetMask": "255.0.0.0"}})
    assert resp.status == 202, resp
    site.api.run_tasks()
    task = site.api.get(f"/tasks/{resp.json}").json
    assert task["Status"]["State"] == TaskState.Completed, task
    vra = m.Vra.get(m.Vra.host_moid == host["HostIdentifier"])
    with VCenter(VCenterConfig(site.sim.url, site.sim.username, site.sim.password)) as vc:
        return vra, vapp_properties(vc, vra.vm_moid)


class VraProc:
    def __init__(self, tmp: Path, vra_id: str, *args: str) -> None:
        self.tmp, self.vra_id, self.args = tmp, vra_id, args
        self.state = tmp / f"{vra_id}-state"
        self.port_file = tmp / f"{vra_id}.port"
        self.proc: Proc | None = None

    def start(self, *extra: str, expect_up: bool = True) -> VraProc:
        self.port_file.unlink(missing_ok=True)
        self.proc = Proc(f"vra-{self.vra_id}", [
            sys.executable, "-m", "vra_appliance.cli", "serve", "--vra-id", self.vra_id, "--listen", "127.0.0.1:0",
            "--port-file", str(self.port_file), "--state-dir", str(self.state), "--no-split", *self.args, *extra],
            self.tmp, log_mode="ab")
        wait_for(lambda: self.port_file.exists() or not self.proc.alive(), 60, f"vra serve {self.vra_id}")
        if expect_up:
            assert self.proc.alive(), self.proc.log()
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{int(self.port_file.read_text())}"

    def security(self) -> Security:
        """This VRA's own credentials, as another process holding them would use them."""
        tls = self.state / "tls"
        return Security(tls / "cert.pem", tls / "key.pem", tls / "trust.pem")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def enrolling(tmp: Path, site: SiteA, vra: m.Vra, props: dict, token: str | None = None) -> VraProc:
    token_file = tmp / f"{vra.identifier}.token"
    token_file.write_text(token if token is not None else props["enroll_token"])
    return VraProc(tmp, vra.identifier, "--enroll-url", site.url, "--enroll-token-file", str(token_file),
                   "--zvm-ca-fingerprint", props["zvm_ca_fingerprint"])


def post_enroll(site: SiteA, vra_id: str, token: str | None, csr: str = "x") -> requests.Response:
    headers = {ENROLL_HEADER: token} if token is not None else {}
    return requests.post(f"{site.url}/v1/vras/{vra_id}/enroll", json={"CertificateRequestPem": csr},
                         headers=headers, timeout=30)


def control_status(security: Security, address: str, peer_id: str) -> grpc.StatusCode | None:
    with security.channel(address, peer_id) as channel:
        try:
            cpb_grpc.ControlStub(channel).Status(cpb.StatusRequest(), timeout=10)
            return None
        except grpc.RpcError as exc:
            return exc.code()


def test_a_vra_enrolls_with_its_install_token_and_the_zvm_manages_it_over_mutual_tls(site_a, tmp_path):
    vra, props = install(site_a, 0, "127.0.0.1")
    assert len(props["zvm_ca_fingerprint"]) == 64 and props["enroll_token"]
    token = props["enroll_token"]
    store = site_a.zvm.config.data_dir / "pki" / "enrollment.json"
    assert token not in store.read_text()  # kept only hashed
    assert stat.S_IMODE(store.stat().st_mode) == 0o600

    # refusals change nothing: no token, another VRA's path, a made-up token
    before = store.read_bytes()
    r = post_enroll(site_a, vra.identifier, None)
    assert r.status_code == 401 and "enrollment token" in r.json()["Message"]
    assert post_enroll(site_a, "no-such-vra", token).json()["Code"] == "EnrollmentTokenInvalid"
    r = post_enroll(site_a, vra.identifier, "x" + token)
    assert (r.status_code, r.json()["Code"]) == (401, "EnrollmentTokenInvalid")
    r = post_enroll(site_a, vra.identifier, token, csr="not a certificate request")
    assert (r.status_code, r.json()["Field"]) == (400, "CertificateRequestPem")
    assert store.read_bytes() == before

    proc = enrolling(tmp_path, site_a, vra, props).start()
    try:
        tls = proc.state / "tls"
        assert stat.S_IMODE((tls / "key.pem").stat().st_mode) == 0o600
        cert = x509.load_pem_x509_certificate((tls / "cert.pem").read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == vra.identifier
        assert vra.identifier in san.get_values_for_type(x509.DNSName)
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        assert token not in proc.proc.log()

        # the ZVM calls it with mutual TLS (no secret configured on either side)
        ref = VraRef(vra.identifier, proc.address, vra.name)
        assert site_a.zvm.vra_control.status(ref) == {}
        # a caller without a certificate does not get through the handshake
        with grpc.insecure_channel(proc.address) as ch:
            with pytest.raises(grpc.RpcError) as err:
                cpb_grpc.ControlStub(ch).Status(cpb.StatusRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

        # the token is used: a second enrollment is refused and changes nothing
        before = store.read_bytes()
        r = post_enroll(site_a, vra.identifier, token)
        assert (r.status_code, r.json()["Code"]) == (401, "EnrollmentTokenUsed")
        assert store.read_bytes() == before

        # a restarted VRA reuses its key and certificate: no token needed
        proc.stop()
        cert_before = (tls / "cert.pem").read_bytes()
        restarted = VraProc(tmp_path, vra.identifier, "--enroll-url", site_a.url, "--zvm-ca-fingerprint",
                            props["zvm_ca_fingerprint"]).start()
        proc = restarted
        assert (tls / "cert.pem").read_bytes() == cert_before
        assert site_a.zvm.vra_control.status(VraRef(vra.identifier, proc.address, vra.name)) == {}
    finally:
        proc.stop()


def test_expired_and_wrong_fingerprint_enrollments_are_refused(site_a, tmp_path):
    vra, props = install(site_a, 1, "127.0.0.2")
    enrollment = site_enrollment(site_a.zvm)
    expired = enrollment.tokens.create(vra.identifier, ttl_s=-1)  # replaces the install's token
    r = post_enroll(site_a, vra.identifier, props["enroll_token"])
    assert r.json()["Code"] == "EnrollmentTokenInvalid"  # a new token voids the earlier one
    proc = enrolling(tmp_path, site_a, vra, props, token=expired).start(expect_up=False)
    assert proc.proc.stop() == 1
    assert "EnrollmentTokenExpired" in proc.proc.log()
    assert not enrollment.tokens.enrolled(vra.identifier)

    # a VRA given another CA's fingerprint takes no certificate from this ZVM
    fresh = enrollment.tokens.create(vra.identifier)
    other = SiteCA(tmp_path / "other-ca", "Other").fingerprint()
    token_file = tmp_path / "t"
    token_file.write_text(fresh)
    proc = VraProc(tmp_path, vra.identifier, "--enroll-url", site_a.url, "--enroll-token-file", str(token_file),
                   "--zvm-ca-fingerprint", other).start(expect_up=False)
    assert proc.proc.stop() == 1
    assert "not the one this VRA was installed with" in proc.proc.log()
    assert not (proc.state / "tls" / "cert.pem").exists()


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
    yield tmp_path / "site-b", client, port
    client.close()
    assert server.stop() == 0


def b_vra(tmp: Path, data_dir: Path, vra_id: str) -> Security:
    """Credentials of a VRA of site B: a certificate from B's site CA, trusting B's CA and A's."""
    ca = SiteCA(data_dir / "pki")
    d = tmp / vra_id
    d.mkdir()
    ca.issue(vra_id, [vra_id], d / "cert.pem", d / "key.pem")
    return Security(d / "cert.pem", d / "key.pem", d / "trust.pem")


def test_peer_site_vras_are_trusted_from_pairing_to_unpairing_without_restarts(site_a, site_b, tmp_path):
    data_b, client_b, peer_port_b = site_b
    vra1, props1 = install(site_a, 0, "127.0.0.1")
    vra2, props2 = install(site_a, 1, "127.0.0.2")
    a1 = enrolling(tmp_path, site_a, vra1, props1).start()
    a2 = enrolling(tmp_path, site_a, vra2, props2).start()
    try:
        ref1 = VraRef(vra1.identifier, a1.address, vra1.name)
        m.Vra.update(control_address=a1.address).where(m.Vra.id == vra1.id).execute()
        m.Vra.update(control_address=a2.address).where(m.Vra.id == vra2.id).execute()
        site_a.zvm.vra_control.configure_recover(ref1, RecoverPlan(
            vpg="vpg-t", journal_dir=str(tmp_path / "journal"), protect_peers=["b-vra-1"], history_s=3600,
            volumes=[("vol-1", str(tmp_path / "replica.img"), 1 << 20)]))
        b1 = b_vra(tmp_path, data_b, "b-vra-1")
        a_ca = (site_a.zvm.config.data_dir / "pki" / "ca.pem").read_text()
        b1.ca.write_text((data_b / "pki" / "ca.pem").read_text() + a_ca)

        def replicate(seq: int) -> None:
            t = GrpcTransport(a1.address, peer_id=vra1.identifier, security=b1, open_timeout=10)
            try:
                assert t.open(Hello("vpg-t", "b-vra-1", seq - 1)).durable_seq == seq - 1
                ack = t.send(seal("vpg-t", [StreamWrite(seq, 1, "vol-1", 0, b"\x5a" * 4096)])).result(30)
                assert ack.durable_seq == seq
            finally:
                t.shutdown()

        def refused() -> None:
            t = GrpcTransport(a1.address, peer_id=vra1.identifier, security=b1, open_timeout=10)
            try:
                with pytest.raises(TransientError):  # the handshake fails: B's CA is not trusted
                    t.open(Hello("vpg-t", "b-vra-1", 0))
            finally:
                t.shutdown()

        # B's VRA as it was before it knew A's CA: its transport cannot verify A's VRA ...
        stale = Security(b1.cert, b1.key, tmp_path / "b-vra-1" / "stale-trust.pem")
        stale.ca.write_text((data_b / "pki" / "ca.pem").read_text())
        kept = GrpcTransport(a1.address, peer_id=vra1.identifier, security=stale, open_timeout=5)
        with pytest.raises(TransientError):
            kept.open(Hello("vpg-t", "b-vra-1", 0))

        # not paired: site B's VRA does not get through the handshake
        refused()
        assert control_status(b1, a1.address, vra1.identifier) == grpc.StatusCode.UNAVAILABLE

        # pairing: A's VRAs trust B's CA at once, no restart
        token = client_b.generate_pairing_token()["Token"]
        task = site_a.api.post("/peersites", {"HostName": "127.0.0.1", "Port": peer_port_b, "Token": token}).json
        site_a.api.run_tasks()
        done = site_a.api.get(f"/tasks/{task}").json
        assert done["Status"]["State"] == TaskState.Completed, done
        assert "did not take" not in done["Step"], done
        trust = (a1.state / "tls" / "trust.pem").read_bytes()
        assert len(x509.load_pem_x509_certificates(trust)) == 2
        replicate(1)
        # ... and a transport made before its own trust changed handshakes again with the new roots
        stale.update_trust(b1.ca.read_bytes())
        try:
            assert kept.open(Hello("vpg-t", "b-vra-1", 1)).durable_seq == 1
        finally:
            kept.shutdown()
        # ... for Replication only: a peer site's VRA may not use the Control service
        assert control_status(b1, a1.address, vra1.identifier) == grpc.StatusCode.PERMISSION_DENIED
        with b1.channel(a1.address, vra1.identifier) as ch:  # nor RecoveryOps (recovery sessions)
            with pytest.raises(grpc.RpcError) as err:
                rpb_grpc.RecoveryOpsStub(ch).GetSession(rpb.SessionRequest(vpg="vpg-t", session="s"), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # nor may a certificate of B's CA that claims to be A's ZVM
        fake_zvm = b_vra(tmp_path, data_b, f"zvm:{m.Site.get(m.Site.is_local == True).identifier}")  # noqa: E712
        fake_zvm.ca.write_bytes(trust)
        assert control_status(fake_zvm, a1.address, vra1.identifier) == grpc.StatusCode.PERMISSION_DENIED

        # another VRA of site A: Freeze and Thaw (checkpoints) yes, the rest of Control no
        own = a2.security()
        assert control_status(own, a1.address, vra1.identifier) == grpc.StatusCode.PERMISSION_DENIED
        with own.channel(a1.address, vra1.identifier) as ch:
            reply = cpb_grpc.ControlStub(ch).Freeze(cpb.FreezeRequest(vpg="none", checkpoint_id="c", timeout_ms=10),
                                                    timeout=10)
        assert not reply.ok  # answered (no such VPG here), not refused
        # a certificate of a CA nobody paired with does not get through
        rogue = Ca("rogue").issue(tmp_path / "rogue", "b-vra-1")
        rogue.ca.write_bytes(trust)
        assert control_status(rogue, a1.address, vra1.identifier) == grpc.StatusCode.UNAVAILABLE

        # unpairing: refused again, still without restarts
        site_b_id = client_b.local_site()["SiteIdentifier"]
        assert site_a.api.delete(f"/peersites/{site_b_id}").status == 202
        site_a.api.run_tasks()
        assert len(x509.load_pem_x509_certificates((a1.state / "tls" / "trust.pem").read_bytes())) == 1
        refused()
        assert control_status(b1, a1.address, vra1.identifier) == grpc.StatusCode.UNAVAILABLE
        assert "vpg-t" in site_a.zvm.vra_control.status(ref1)  # the ZVM still manages it
    finally:
        a1.stop()
        a2.stop()


def test_the_site_another_site_pairs_with_updates_its_vras_too(site_a, site_b, tmp_path):
    """Here site B starts the pairing and the unpairing: site A learns of them on its peer service and gives
    its VRAs the new bundle in a task of its own (UpdateVraTrust)."""
    data_b, client_b, _ = site_b
    vra, props = install(site_a, 2, "127.0.0.3")
    a1 = enrolling(tmp_path, site_a, vra, props).start()
    try:
        m.Vra.update(control_address=a1.address).where(m.Vra.id == vra.id).execute()
        b1 = b_vra(tmp_path, data_b, "b-vra-9")
        b1.ca.write_text((data_b / "pki" / "ca.pem").read_text()
                         + (site_a.zvm.config.data_dir / "pki" / "ca.pem").read_text())
        assert control_status(b1, a1.address, vra.identifier) == grpc.StatusCode.UNAVAILABLE

        token = site_a.api.post("/peersites/generatetoken").json["Token"]
        client_b.wait_for_task(client_b.pair("127.0.0.1", token, site_a.zvm.config.peer_port), timeout=60)
        site_a.api.run_tasks()
        task = site_a.api.get("/tasks", query_string={"type": "UpdateVraTrust"}).json[0]
        assert task["Status"]["State"] == TaskState.Completed, task
        assert control_status(b1, a1.address, vra.identifier) == grpc.StatusCode.PERMISSION_DENIED  # past TLS

        site_a_id = site_a.api.get("/localsite").json["SiteIdentifier"]
        client_b.wait_for_task(client_b.unpair(site_a_id), timeout=60)
        site_a.api.run_tasks()
        assert [t["Status"]["State"] for t in site_a.api.get("/tasks", query_string={"type": "UpdateVraTrust"}).json] \
            == [TaskState.Completed, TaskState.Completed]
        assert control_status(b1, a1.address, vra.identifier) == grpc.StatusCode.UNAVAILABLE
    finally:
        a1.stop()


def test_the_ovf_declares_the_enrollment_properties():
    import xml.etree.ElementTree as ET

    ns = {"ovf": "http://schemas.dmtf.org/ovf/envelope/1"}
    root = ET.parse(Path(__file__).resolve().parents[2] / "ovf" / "vra.ovf").getroot()
    props = {p.get(f"{{{ns['ovf']}}}key"): p for p in root.iterfind(".//ovf:ProductSection/ovf:Property", ns)}
    assert {"enroll_token", "zvm_ca_fingerprint", "zvm_scheme"} <= set(props)
    assert props["enroll_token"].get(f"{{{ns['ovf']}}}password") == "true"
    assert json.dumps(sorted(props))  # every key once
