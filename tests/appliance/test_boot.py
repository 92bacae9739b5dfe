"""The VRA appliance for real: the OVA that ``python -m ovf.build`` makes, installed by a `zvm serve` into
vcsim (OVF import, NFC upload of the real disk), then its own disk booted under QEMU (no ``-kernel``; KVM if
it works here, else TCG) with the vApp properties the install gave it as an OVF environment on a CD-ROM,
and user-mode networking forwarding the VRA's port (4005) and its NBD image port.

- With a wrong enrollment token the serial console names the property (``enroll_token``) and retries; the
  environment fixed and the VM power-cycled, it enrolls with the ZVM (the key made in the appliance).
- It then acts as the recovery VRA of a VPG whose protect side is a `vra serve` on this machine (enrolled
  with the same ZVM), fed by an IO filter that fio writes through; a checkpoint's point-in-time image, read
  from the appliance over NBD with nbdcopy, equals the source volume by SHA-256.
The ZVM's Control calls use the ZVM's own client certificate (DATA_DIR/pki/vra-control.*), as it does.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from ovf import build as ova_build
from ovf.qemu import Vm, free_port, iso
from tests.conftest import TWO_SITES_SPEC
from tests.faults.site import Fio
from tests.replication.lab import Lab, run, sha256_file, wait_for
from tests.zvm.conftest import ADMIN_PASSWORD
from tests.zvm.procs import start_serve
from vra_appliance.appliance import ovfenv
from vra_appliance.proto.v1 import control_pb2 as cpb
from vra_appliance.proto.v1 import control_pb2_grpc as cpb_grpc
from vra_appliance.trust.auth import Security
from zvm.client import ZvmClient
from zvm.vcenter import VCenter, VCenterConfig
from zvm.vcenter.ovf import find_vm, vapp_properties

VPG = "vpg-appliance"
VOL = "vol-1"
MiB = 1 << 20
SIZE = 64 * MiB
GUEST_IP = "10.0.2.15"  # QEMU user networking: the guest's address; the host is 10.0.2.2
NBD_PORT = 10809
BOOT_TIMEOUT = 420.0  # TCG on a loaded 2-core machine: a boot to enrolled took about 90 s idle


@pytest.fixture(scope="module")
def built() -> Path:
    """The cached appliance build (made here if the inputs changed since ./run test built it)."""
    return ova_build.build_ova()


@pytest.fixture
def short_tmp():
    d = Path(tempfile.mkdtemp(prefix="za-", dir="/tmp"))  # unix socket paths must stay short
    yield d
    if not os.environ.get("ZVR_KEEP_APPLIANCE_DIRS"):
        shutil.rmtree(d, ignore_errors=True)


class ZvmControl:
    """A VRA's Control service, called with the ZVM's own client certificate (as GrpcVraControl does)."""

    def __init__(self, pki: Path, address: str, vra_id: str) -> None:
        security = Security(pki / "vra-control.pem", pki / "vra-control.key", pki / "ca.pem")
        self.channel = security.channel(address, vra_id)
        self.stub = cpb_grpc.ControlStub(self.channel)

    def __getattr__(self, name: str):
        method = getattr(self.stub, name)
        return lambda request, timeout=60.0: method(request, timeout=timeout)

    def vpg_status(self, role: str) -> cpb.VpgStatus | None:
        return next((s for s in self.Status(cpb.StatusRequest(vpg=VPG)).vpgs if s.role == role), None)

    def close(self) -> None:
        self.channel.close()


def install(client: ZvmClient, site_id: str, index: int, ip: str, mask: str, gateway: str = "") -> dict:
    host = sorted(client.hosts(site_id), key=lambda h: h["VirtualizationHostName"])[index]
    task = client.install_vra(host["HostIdentifier"], host["DatastoreIdentifiers"][0], host["NetworkIdentifiers"][0],
                              ip_address=ip, subnet_mask=mask, gateway=gateway)
    client.wait_for_task(task, timeout=300)
    return next(v for v in client.vras() if v["HostIdentifier"] == host["HostIdentifier"])


@pytest.mark.timeout(1200)  # two boots under TCG on a loaded 2-core machine; see docs/APPLIANCE.md
def test_the_appliance_installs_boots_enrolls_and_recovers_a_replicated_volume(built, start_vcsim, short_tmp):
    sim = start_vcsim("appliance", TWO_SITES_SPEC)
    data = short_tmp / "zvm"
    zvm = start_serve(data, "--admin-password", ADMIN_PASSWORD, "--site-name", "Site A",
                      "--public-address", "10.0.2.2",  # the host, as the appliance sees it through QEMU
                      "--vcenter-url", sim.url, "--vcenter-username", sim.username, "--vcenter-verify", "false",
                      env={"ZVM_VCENTER_PASSWORD": sim.password})
    lab = Lab(short_tmp)
    vm: Vm | None = None
    controls: list[ZvmControl] = []
    fio: Fio | None = None
    try:
        zvm.wait_for(r"inventory of \S+ loaded")
        client = ZvmClient(zvm.url).login("admin", ADMIN_PASSWORD)
        site_id = client.local_site()["SiteIdentifier"]

        # The ZVM's install path: OVF import into vcsim with the NFC upload of the appliance's real disk.
        appliance = install(client, site_id, 0, GUEST_IP, "255.255.255.0", "10.0.2.2")
        disk = built / ova_build.DISK
        # vcsim takes the NFC upload and discards it, logging what it got: the whole disk
        assert re.search(rf"nfc PUT \S+: transferred {disk.stat().st_size} bytes", Path(sim.log).read_text()), \
            "vcsim was not sent the appliance's disk"
        with VCenter(VCenterConfig(sim.url, sim.username, sim.password, verify=False)) as vc:
            props = vapp_properties(vc, find_vm(vc, appliance["VraName"]))
        assert props["vra_id"] == appliance["VraIdentifier"] and props["zvm_address"] == "10.0.2.2"
        vra_id, token = props["vra_id"], props["enroll_token"]

        # A wrong token: the console names the property, and the appliance keeps trying.
        control_port, nbd_port = free_port(), free_port()
        env = {**props, "nbd_port": str(NBD_PORT)}
        bad = iso({ovfenv.FILE_NAME: ovfenv.render({**env, "enroll_token": "x" + token})},
                  short_tmp / "env-bad.iso", ovfenv.ISO_LABEL)
        vm = Vm(disk, short_tmp / "vm", name="vra", memory_mib=1024, cdrom=bad,
                forwards={control_port: 4005, nbd_port: NBD_PORT}).start()
        vm.wait_for_serial(r"OVF property 'enroll_token': the ZVM refused the enrollment \(401 EnrollmentTokenInvalid",
                           BOOT_TIMEOUT)
        vm.wait_for_serial(r"Enrollment:\s+enrolling \(attempt \d+, next in \d+ s\)", 60)
        assert token not in vm.serial()

        # The environment fixed, power cycle: it enrolls, then `vra serve` runs on 4005.
        good = iso({ovfenv.FILE_NAME: ovfenv.render(env)}, short_tmp / "env-good.iso", ovfenv.ISO_LABEL)
        vm.stop()
        started = time.monotonic()
        vm.restart(cdrom=good)
        vm.wait_for_serial(rf"zvr-vra: enrolled as {re.escape(vra_id)}", BOOT_TIMEOUT)
        m = vm.wait_for_serial(r"Address:\s+(\S+) \(static\)", 30)
        assert m.group(1) == f"{GUEST_IP}/24"
        pki = data / "pki"
        rc = ZvmControl(pki, f"127.0.0.1:{control_port}", vra_id)
        controls.append(rc)
        wait_for(lambda: _status_ok(rc), 120, "the appliance's vra serve to answer the ZVM")
        print(f"power-on to enrolled and serving the ZVM: {time.monotonic() - started:.0f} s ({vm.accel})")
        assert token not in vm.serial()

        # The protect side: a `vra serve` here, enrolled with the same ZVM, and an IO filter in front of it.
        protect = install(client, site_id, 1, "127.0.0.1", "255.0.0.0")
        with VCenter(VCenterConfig(sim.url, sim.username, sim.password, verify=False)) as vc:
            pprops = vapp_properties(vc, find_vm(vc, protect["VraName"]))
        pid = pprops["vra_id"]
        (short_tmp / "ptoken").write_text(pprops["enroll_token"])
        p = lab.vra(pid, extra=["--enroll-url", zvm.url, "--enroll-token-file", str(short_tmp / "ptoken"),
                                "--zvm-ca-fingerprint", pprops["zvm_ca_fingerprint"]])
        pc = ZvmControl(pki, p.address, pid)
        controls.append(pc)
        source = lab.volume(VOL, SIZE)
        with open(source, "r+b") as f:
            f.write(os.urandom(8 * MiB))
        reply = rc.ConfigureRecover(cpb.RecoverConfig(
            vpg=VPG, journal_dir="/var/lib/zvr/vra/journal-" + VPG, protect_peers=[pid],
            volumes=[cpb.ReplicaVolume(volume=VOL, path="/var/lib/zvr/vra/replica-vol-1.img", size=SIZE)]))
        assert reply.ok, reply.message
        filt = lab.filter("filter-a", {VOL: source}, p)
        reply = pc.ConfigureProtect(cpb.ProtectConfig(
            vpg=VPG, volumes=[VOL], filter_controls=[filt.control_path], compression=True, coordinator=True,
            recover_peer=cpb.PeerVra(vra_id=vra_id, address=f"127.0.0.1:{control_port}"),
            protect_peers=[cpb.PeerVra(vra_id=pid, address=p.address)],
            checkpoint_interval_ms=2000, freeze_timeout_ms=1000, buffer_bytes=4 * MiB))
        assert reply.ok, reply.message

        fio = Fio(filt.uri(VOL), short_tmp / "fio.json", rate_iops=200)
        wait_for(lambda: filt.counters()["writes"] >= 600, 120, "fio's writes through the filter")
        stats = fio.stop()
        assert stats["total_ios"] > 0 and stats["error"] == 0, stats

        def consistent_checkpoint():
            st = pc.vpg_status("protect")
            if st is None or st.substatus or st.state != "ok":
                return None
            r = pc.Checkpoint(cpb.CheckpointRequest(vpg=VPG, tag="final", wait_durable=True, timeout_ms=60_000),
                              timeout=90)
            return r if r.ok and r.consistent else None

        last = wait_for(consistent_checkpoint, 300, "a consistent checkpoint after the last write")
        export = rc.OpenImage(cpb.OpenImageRequest(vpg=VPG, volume=VOL, checkpoint_id=last.checkpoint_id)).export_name
        try:
            image = short_tmp / "image.img"
            run(["nbdcopy", f"nbd://127.0.0.1:{nbd_port}/{export}", str(image)], timeout=300)
            assert sha256_file(image) == sha256_file(source), "the appliance's image differs from the source"
        finally:
            rc.CloseImage(cpb.CloseImageRequest(export_name=export))
    finally:
        if fio is not None and fio.alive():
            fio.stop()
        for c in controls:
            c.close()
        lab.close()
        if vm is not None:
            vm.kill()
        zvm.stop()


def _status_ok(control: ZvmControl) -> bool:
    try:
        control.Status(cpb.StatusRequest(), timeout=10)
        return True
    except grpc.RpcError:
        return False
