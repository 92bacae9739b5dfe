"""A recovery journal corrupted in the middle of a segment, found when the recovery VRA restarts, and the
resync that repairs it (DiscardJournal, then a delta sync), through real processes.

Two VPGs share the recovery VRA's journal directory: ``vpg-f`` (vol-1, whose journal is corrupted) and
``vpg-g`` (vol-2, which must be left alone). One IO filter serves both volumes to one protect VRA, the
coordinator of both VPGs. Writes go through the filter over NBD; equality is checked by the SHA-256 of the
point-in-time image (copied out of the recovery VRA's NBD export with nbdcopy) against the source file.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from tests.replication.lab import Lab, NbdClient, free_port, run, sha256_file, wait_for
from vra_appliance.proto.v1 import control_pb2 as cpb
from vra_appliance.recover.format import T_WRITE, scan_segment
from vra_appliance.recover.segments import vpg_dirname

VPG_F, VPG_G = "vpg-f", "vpg-g"
VOL_F, VOL_G = "vol-1", "vol-2"
MiB = 1 << 20
SIZE = 16 * MiB
BLOCK = 4096


class TwoVpgSite:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.rng = random.Random(5)
        self.lab = Lab(tmp)
        try:
            self.source = {VOL_F: self.lab.volume(VOL_F, SIZE), VOL_G: self.lab.volume(VOL_G, SIZE)}
            for path in self.source.values():
                with open(path, "r+b") as f:
                    f.write(self.rng.randbytes(2 * MiB))
            self.journal = tmp / "journal"
            self.r = self.lab.vra("recover-r", split=False, nbd=True, port=free_port())
            self.p = self.lab.vra("host-a")
            for vpg, vol in ((VPG_F, VOL_F), (VPG_G, VOL_G)):
                reply = self.r.control.ConfigureRecover(cpb.RecoverConfig(
                    vpg=vpg, journal_dir=str(self.journal), protect_peers=["host-a"],
                    volumes=[cpb.ReplicaVolume(volume=vol, path=str(tmp / f"replica-{vol}.img"), size=SIZE)]))
                assert reply.ok, reply.message
            self.filter = self.lab.filter("filter-a", self.source, self.p)
            for vpg, vol in ((VPG_F, VOL_F), (VPG_G, VOL_G)):
                reply = self.p.control.ConfigureProtect(cpb.ProtectConfig(
                    vpg=vpg, volumes=[vol], filter_controls=[self.filter.control_path], compression=True,
                    coordinator=True, recover_peer=cpb.PeerVra(vra_id="recover-r", address=self.r.address),
                    protect_peers=[cpb.PeerVra(vra_id="host-a", address=self.p.address)],
                    checkpoint_interval_ms=1000, freeze_timeout_ms=1000))
                assert reply.ok, reply.message
            self.nbd = {v: NbdClient(self.filter.nbd, v) for v in self.source}
        except BaseException:
            self.close()
            raise

    def write(self, volume: str, n: int) -> None:
        """``n`` random 4 KiB writes through the filter (each returns once the filter completed it)."""
        for _ in range(n):
            self.nbd[volume].write(self.rng.randrange(0, SIZE // BLOCK) * BLOCK, self.rng.randbytes(BLOCK))

    def protect_status(self, vpg: str) -> cpb.VpgStatus:
        return self.p.control.vpg_status(vpg, "protect")

    def recover_status(self, vpg: str) -> cpb.VpgStatus:
        return self.r.control.vpg_status(vpg, "recover")

    def checkpoints(self, vpg: str) -> list[cpb.CheckpointEntry]:
        return list(self.r.control.ListCheckpoints(cpb.ListCheckpointsRequest(vpg=vpg)).checkpoints)

    def consistent_checkpoint(self, vpg: str) -> str:
        """Wait until the VPG streams with no sync pending, then take a checkpoint that is consistent."""
        def take():
            self.p.control.wait_streaming(vpg, 120)
            reply = self.p.control.Checkpoint(
                cpb.CheckpointRequest(vpg=vpg, tag="test", wait_durable=True, timeout_ms=60_000), timeout=90)
            if not (reply.ok and reply.consistent):
                return None
            journaled = {c.checkpoint_id: c.consistent for c in self.checkpoints(vpg)}
            return reply.checkpoint_id if journaled.get(reply.checkpoint_id) else None
        return wait_for(take, 180, f"a consistent checkpoint of {vpg}")

    def image_sha256(self, vpg: str, volume: str, checkpoint_id: str) -> str:
        export = self.r.control.OpenImage(
            cpb.OpenImageRequest(vpg=vpg, volume=volume, checkpoint_id=checkpoint_id)).export_name
        try:
            out = self.tmp / "image.img"
            run(["nbdcopy", f"nbd+unix:///{export}?socket={self.r.nbd}", str(out)])
            digest = sha256_file(out)
            out.unlink()
            return digest
        finally:
            self.r.control.CloseImage(cpb.CloseImageRequest(export_name=export))

    def corrupt_middle_write(self, vpg: str) -> tuple[Path, int]:
        """Flip bytes in the data of a write record in the middle of the VPG's (last) segment: a bad CRC
        with verified records of later batches after it (corruption, not a torn tail). The VRA must be
        stopped."""
        segment = sorted((self.journal / vpg_dirname(vpg)).glob("*.seg"))[-1]
        buf = segment.read_bytes()
        scan = scan_segment(buf, int(segment.name.split(".")[0]))
        writes = [m for m in scan.records if m.rtype == T_WRITE and m.data_len]
        assert len(writes) >= 10, f"too few write records to corrupt one in the middle: {len(writes)}"
        victim = writes[len(writes) // 2]
        at = victim.data_pos + victim.data_len // 2
        with open(segment, "r+b") as f:
            f.seek(at)
            f.write(bytes(b ^ 0xA5 for b in buf[at:at + 8]))
        return segment, victim.seq

    def close(self) -> None:
        for c in getattr(self, "nbd", {}).values():
            c.close()
        self.lab.close()


@pytest.fixture
def site(short_tmp):
    s = TwoVpgSite(short_tmp)
    yield s
    s.close()


def _corrupt_and_restart(site: TwoVpgSite) -> str:
    """Replicate both VPGs, checkpoint vpg-g (no writes to vol-2 afterwards), corrupt vpg-f's journal, restart
    the recovery VRA. Returns vpg-g's checkpoint."""
    site.write(VOL_F, 200)
    site.write(VOL_G, 100)
    site.consistent_checkpoint(VPG_F)
    cp_g = site.consistent_checkpoint(VPG_G)
    site.write(VOL_F, 100)
    site.consistent_checkpoint(VPG_F)
    site.r.stop()
    site.corrupt_middle_write(VPG_F)
    site.r.restart()
    st = site.recover_status(VPG_F)
    assert st.state == "journal-corrupt", st
    assert "resync" in st.error
    assert site.recover_status(VPG_G).state == "ok"
    return cp_g


def _writes_keep_flowing(site: TwoVpgSite) -> None:
    """The protect VRA is refused (JOURNAL_ERROR) and the VM's writes still complete (buffer, dirty map)."""
    wait_for(lambda: site.protect_status(VPG_F).counters.get("refused_journal_error", 0) >= 1, 60,
             "the protect VRA to be refused with JOURNAL_ERROR")
    done = threading.Event()

    def burst():
        site.write(VOL_F, 300)
        done.set()

    t = threading.Thread(target=burst, daemon=True)
    t.start()
    t.join(60)
    assert done.is_set(), "writes through the filter blocked while the recovery journal is corrupt"
    st = site.protect_status(VPG_F)
    assert st.state == "error" and "JOURNAL_ERROR" in st.error, st


def _resynced(site: TwoVpgSite, before_reports: int) -> None:
    """A delta sync of vol-1 completed after the discard, no checkpoint before its end is consistent, a new
    consistent checkpoint exists, and the image at it equals the source."""
    def delta_done():
        reports = list(site.protect_status(VPG_F).last_syncs)[before_reports:]
        return [r for r in reports if r.kind == "DeltaSync" and r.completed and r.volume == VOL_F]
    delta = wait_for(delta_done, 180, "a delta sync of vol-1 after the discard")[0]
    cp = site.consistent_checkpoint(VPG_F)
    listed = site.checkpoints(VPG_F)
    early = [c for c in listed if c.consistent and c.timestamp_ns <= delta.finished_ns]
    assert not early, f"checkpoints taken before the delta sync ended are marked consistent: {early}"
    assert cp in [c.checkpoint_id for c in listed if c.consistent]
    assert site.image_sha256(VPG_F, VOL_F, cp) == sha256_file(site.source[VOL_F])


def _untouched(site: TwoVpgSite, cp_g: str, digest_g: str) -> None:
    assert site.recover_status(VPG_G).state == "ok"
    assert cp_g in [c.checkpoint_id for c in site.checkpoints(VPG_G)]
    assert site.image_sha256(VPG_G, VOL_G, cp_g) == digest_g


def test_discard_corrupt_journal_then_delta_sync(site: TwoVpgSite) -> None:
    cp_g = _corrupt_and_restart(site)
    digest_g = sha256_file(site.source[VOL_G])
    assert site.image_sha256(VPG_G, VOL_G, cp_g) == digest_g
    _writes_keep_flowing(site)

    # a healthy journal is not discarded without force, and nothing changes
    before = [(c.checkpoint_id, c.seq) for c in site.checkpoints(VPG_G)]
    reply = site.r.control.DiscardJournal(cpb.DiscardJournalRequest(vpg=VPG_G, reason="test"))
    assert not reply.ok and "healthy" in reply.message and "force" in reply.message
    assert [(c.checkpoint_id, c.seq) for c in site.checkpoints(VPG_G)][: len(before)] == before

    # the procedure: the protect VRA records the delta sync first (no consistent checkpoint from here on),
    # then the journal is discarded
    reports = len(site.protect_status(VPG_F).last_syncs)
    reply = site.p.control.ForceSync(cpb.ForceSyncRequest(vpg=VPG_F, reason=cpb.SYNC_REASON_JOURNAL_CORRUPT))
    assert reply.ok, reply.message
    assert site.protect_status(VPG_F).substatus == "DeltaSync"
    reply = site.r.control.DiscardJournal(cpb.DiscardJournalRequest(vpg=VPG_F, reason="test: admin"))
    assert reply.ok, reply.message
    assert reply.state_before == "journal-corrupt"
    assert site.recover_status(VPG_F).state == "ok"
    assert not (site.tmp / "recover-r" / "state" / "recover" / vpg_dirname(VPG_F) / "discard").exists()

    _resynced(site, reports)
    _untouched(site, cp_g, digest_g)

    # and it survives a restart of the recovery VRA (nothing of the old journal comes back)
    site.r.stop()
    site.r.restart()
    assert site.recover_status(VPG_F).state == "ok"
    _untouched(site, cp_g, digest_g)


def test_discard_interrupted_by_a_crash_is_finished_on_restart(site: TwoVpgSite) -> None:
    """The VRA dies right after the discard was marked (before anything was deleted): the restart finishes it.
    The marker is what DiscardJournal writes first (vra_appliance/recover/service/side.py)."""
    cp_g = _corrupt_and_restart(site)
    digest_g = sha256_file(site.source[VOL_G])
    reply = site.p.control.ForceSync(cpb.ForceSyncRequest(vpg=VPG_F, reason=cpb.SYNC_REASON_JOURNAL_CORRUPT))
    assert reply.ok, reply.message
    reports = len(site.protect_status(VPG_F).last_syncs)
    site.r.kill()
    marker = site.tmp / "recover-r" / "state" / "recover" / vpg_dirname(VPG_F) / "discard"
    marker.write_text('{"vpg": "vpg-f", "reason": "test: crash after the mark", "state_before": "journal-corrupt"}')
    site.r.restart()
    assert not marker.exists()
    assert site.recover_status(VPG_F).state == "ok"
    _resynced(site, reports)
    _untouched(site, cp_g, digest_g)
