"""A protected guest across real processes: the guest's disk (a copy of guests/image.py's) is the protected
volume, served by ``vra iofilter``, and QEMU runs the guest on it through the filter's NBD export; the protect
``vra serve`` (a checkpoint every second) streams to the recovery ``vra serve`` through the WAN emulator.

``checkpoint()`` reads the highest transaction id the guest acknowledged, then takes a checkpoint: every id up
to it must be in the image at that checkpoint. ``check(checkpoint_id, expect)`` boots that image (the recovery
VRA's export with a scratch overlay: the image is not changed) in check mode and returns the guest's verdict.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from guests.image import GuestImage
from guests.runner import CheckResult, Guest
from tests.replication.lab import Lab, free_port, wait_for
from vra_appliance.proto.v1 import control_pb2 as cpb
from zvm.lab.wan import WanEmulator

VPG = "vpg-g"
VOL = "guest-1"
CHECKPOINT_MS = 1000


class GuestSite:
    def __init__(self, tmp: Path, image: GuestImage) -> None:
        self.tmp = tmp
        self.image = image
        self.lab = Lab(tmp)
        self.wan: WanEmulator | None = None
        self.guests: list[Guest] = []
        try:
            self.source = self.lab.volume(VOL, 0)
            subprocess.run(["cp", "--sparse=always", str(image.disk), str(self.source)], check=True)
            self.replica = tmp / "replica-guest-1.img"
            self.r = self.lab.vra("recover-r", split=False, nbd=True, port=free_port())
            self.wan = WanEmulator(("127.0.0.1", 0), ("127.0.0.1", self.r.port), latency_ms=1).start()
            self.p = self.lab.vra("host-a")
            reply = self.r.control.ConfigureRecover(cpb.RecoverConfig(
                vpg=VPG, journal_dir=str(tmp / "journal"), protect_peers=["host-a"],
                volumes=[cpb.ReplicaVolume(volume=VOL, path=str(self.replica), size=image.disk_bytes)]))
            assert reply.ok, reply.message
            self.filter = self.lab.filter("filter-a", {VOL: self.source}, self.p)
        except BaseException:
            self.close()
            raise

    def protect(self) -> None:
        reply = self.p.control.ConfigureProtect(cpb.ProtectConfig(
            vpg=VPG, volumes=[VOL], filter_controls=[self.filter.control_path], compression=True,
            coordinator=True, recover_peer=cpb.PeerVra(vra_id="recover-r", address=f"127.0.0.1:{self.wan.address[1]}"),
            protect_peers=[cpb.PeerVra(vra_id="host-a", address=self.p.address)],
            checkpoint_interval_ms=CHECKPOINT_MS, freeze_timeout_ms=1000, buffer_bytes=4 << 20))
        assert reply.ok, reply.message

    def wait_streaming(self, timeout: float = 120.0) -> None:
        self.p.control.wait_streaming(VPG, timeout)

    def start_guest(self, name: str = "protected") -> Guest:
        """The protected VM, powered on: its disk is the filter's export of the protected volume."""
        guest = Guest(self.image, self.filter.uri(VOL), self.tmp, name).start()
        self.guests.append(guest)
        return guest

    def checkpoint(self, guest: Guest, tag: str = "") -> tuple[int, cpb.CheckpointReply]:
        """(highest id acknowledged before the checkpoint was asked for, the checkpoint: a consistent one,
        asked again while the VPG cannot mark one yet, e.g. a restarted filter reconnecting its stream)."""
        deadline = time.monotonic() + 90
        while True:
            self.wait_streaming()
            wait_for(lambda: self.filter.counters()["vra"] == "connected", 30, "the filter to reach its VRA")
            acknowledged = guest.app.acknowledged()
            reply = self.p.control.Checkpoint(
                cpb.CheckpointRequest(vpg=VPG, tag=tag, wait_durable=True, timeout_ms=60_000), timeout=90)
            if reply.ok and reply.consistent:
                return acknowledged, reply
            assert time.monotonic() < deadline, f"no consistent checkpoint: {reply}"
            time.sleep(0.5)

    def check(self, checkpoint_id: str, expect: int, name: str = "recovered") -> CheckResult:
        """Boot the image at ``checkpoint_id`` (with a scratch overlay) in check mode."""
        export = self.r.control.OpenImage(cpb.OpenImageRequest(
            vpg=VPG, volume=VOL, checkpoint_id=checkpoint_id, writable=True)).export_name
        uri = f"nbd+unix:///{export}?socket={self.r.nbd}"
        try:
            guest = Guest(self.image, uri, self.tmp, name, mode="check", expect=expect).start()
            self.guests.append(guest)
            try:
                return guest.check_result()
            finally:
                guest.kill()
        finally:
            self.r.control.CloseImage(cpb.CloseImageRequest(export_name=export))

    def close(self) -> None:
        for guest in self.guests:
            guest.kill()
        self.lab.close()
        if self.wan is not None:
            self.wan.stop()
