"""Bad input and faults through the real daemons: wrong checksums, unknown VPGs, unpaired peers, a full
journal, and a corrupt or torn journal found when the recovery VRA starts."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path

import grpc
import pytest

from vra_appliance.proto.v1 import control_pb2 as cpb
from vra_appliance.stream.transport import (
    BAD_CHECKSUM,
    GAP,
    JOURNAL_ERROR,
    UNKNOWN_VPG,
    UNPAIRED_PEER,
    Hello,
    Refused,
)
from vra_appliance.stream.transport_grpc import GrpcTransport
from vra_appliance.stream.wire import StreamMarker, StreamWrite, seal
from vra_appliance.trust.auth import Security

from .lab import SECRET, Lab, run, sha256_file, wait_for

VPG = "vpg-f"
SIZE = 4 << 20


def writes(first: int, n: int, size: int = 65536) -> list[StreamWrite]:
    now = time.time_ns()  # the promoter keeps an hour of history: timestamps must be recent
    return [StreamWrite(s, now, "vol-1", (s * size) % SIZE, hashlib.sha256(b"%d" % s).digest() * (size // 32))
            for s in range(first, first + n)]


class RecoveryOnly:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.lab = Lab(tmp)
        self.r = self.lab.vra("recover-r", split=False, nbd=True)
        self.configure()

    def configure(self, **kw) -> cpb.ConfigureReply:
        return self.r.control.ConfigureRecover(cpb.RecoverConfig(
            vpg=VPG, journal_dir=str(self.tmp / "journal"), protect_peers=["host-a"],
            volumes=[cpb.ReplicaVolume(volume="vol-1", path=str(self.tmp / "replica.img"), size=SIZE)], **kw))

    def transport(self, secret: str | None = SECRET) -> GrpcTransport:
        return GrpcTransport(self.r.address, peer_id="recover-r", security=Security(pairing_secret=secret))

    def status(self) -> cpb.VpgStatus:
        return self.r.control.vpg_status(VPG, "recover")

    def segment(self) -> Path:
        segs = sorted((self.tmp / "journal").glob("v_*/*.seg"))
        assert len(segs) == 1, segs
        return segs[0]


@pytest.fixture
def recovery(tmp_path):
    r = RecoveryOnly(tmp_path)
    yield r
    r.lab.close()


def test_wrong_checksum_is_refused_and_the_resend_lands(recovery: RecoveryOnly) -> None:
    t = recovery.transport()
    try:
        assert t.open(Hello(VPG, "host-a", 0)).durable_seq == 0
        good = seal(VPG, writes(1, 8))
        with pytest.raises(Refused) as err:
            t.send(dataclasses.replace(good, crc32c=good.crc32c ^ 0x10)).result(20)
        assert err.value.reason == BAD_CHECKSUM
        assert t.open(Hello(VPG, "host-a", 1)).durable_seq == 0
        assert t.send(good).result(20).durable_seq == 8
    finally:
        t.shutdown()
    st = recovery.status()
    assert st.counters["bad_checksum"] == 1 and st.counters["last_seq"] == 8


def test_unknown_vpg_unpaired_peer_and_wrong_secret_are_refused(recovery: RecoveryOnly) -> None:
    cases = [(Hello("no-such-vpg", "host-a", 0), SECRET, UNKNOWN_VPG),
             (Hello(VPG, "host-z", 0), SECRET, UNPAIRED_PEER),
             (Hello(VPG, "host-a", 0), "not-the-secret", UNPAIRED_PEER),
             (Hello(VPG, "host-a", 0), None, UNPAIRED_PEER)]
    for hello, secret, reason in cases:
        t = recovery.transport(secret)
        try:
            with pytest.raises(Refused) as err:
                t.open(hello)
            assert err.value.reason == reason, (hello, secret)
        finally:
            t.shutdown()
    # The Control service wants the secret too.
    from .lab import Control

    anonymous = Control(recovery.r.port, secret=None)
    try:
        with pytest.raises(grpc.RpcError) as err:
            anonymous.Status(cpb.StatusRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        anonymous.close()
    assert recovery.status().counters["last_seq"] == 0


def _fill(recovery: RecoveryOnly, batches: int) -> None:
    t = recovery.transport()
    try:
        t.open(Hello(VPG, "host-a", 0))
        seq = 1
        for i in range(batches):
            recs = writes(seq, 4)
            seq += 4
            recs.append(StreamMarker(seq, time.time_ns(), f"cp-{i}", "", True, ("host-a",)))
            seq += 1
            t.send(seal(VPG, recs)).result(20)
    finally:
        t.shutdown()


def test_corrupt_segment_is_detected_on_start(recovery: RecoveryOnly) -> None:
    _fill(recovery, 4)
    assert recovery.status().counters["last_seq"] == 20
    recovery.r.stop()
    seg = recovery.segment()
    with open(seg, "r+b") as f:  # a byte inside the data of the first write: later batches follow it
        f.seek(200)
        b = f.read(1)
        f.seek(200)
        f.write(bytes([b[0] ^ 0x55]))
    recovery.r.start(split=False)
    st = recovery.status()
    assert st.state == "journal-corrupt"
    assert "corrupt" in st.error and "resync" in st.error
    t = recovery.transport()
    try:
        with pytest.raises(Refused) as err:
            t.open(Hello(VPG, "host-a", 21))
        assert err.value.reason == JOURNAL_ERROR and err.value.kind == "corruption"
    finally:
        t.shutdown()
    with pytest.raises(grpc.RpcError) as rpc:
        recovery.r.control.ListCheckpoints(cpb.ListCheckpointsRequest(vpg=VPG))
    assert rpc.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_torn_tail_is_cut_on_start_and_the_lost_writes_are_not_acknowledged_again(recovery: RecoveryOnly) -> None:
    _fill(recovery, 4)
    recovery.r.stop()
    seg = recovery.segment()
    os.truncate(seg, seg.stat().st_size - 40_000)  # into the last batch's data: a torn tail
    recovery.r.start(split=False)
    st = recovery.status()
    assert st.state == "ok"
    assert "torn journal tail cut" in st.error
    last = st.counters["last_seq"]
    assert 15 <= last < 20
    # The sender still holding everything from seq 16 on finds the journal short of it: GAP, the VPG
    # needs a sync; a fresh sender (resume_from 0) continues from what is durable.
    t = recovery.transport()
    try:
        with pytest.raises(Refused) as err:
            t.open(Hello(VPG, "host-a", 21))
        assert err.value.reason == GAP
        assert t.open(Hello(VPG, "host-a", 0)).durable_seq == st.counters["peer_host-a_durable_seq"]
    finally:
        t.shutdown()
    listed = recovery.r.control.ListCheckpoints(cpb.ListCheckpointsRequest(vpg=VPG)).checkpoints
    assert [c.checkpoint_id for c in listed] == ["cp-0", "cp-1", "cp-2"]


def test_full_journal_pushes_back_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Filter -> protect VRA -> recovery VRA whose journal hits its hard limit while an open image pins it:
    the recovery VRA refuses, reports journal-full, the protect VRA keeps its buffer; once the image is
    closed the promoter makes room, the buffer drains, and every write is in the checkpoint image."""
    lab = Lab(tmp_path)
    try:
        r = lab.vra("recover-r", split=False, nbd=True)
        p = lab.vra("host-a")
        source = lab.volume("vol-1", 16 << 20)
        reply = r.control.ConfigureRecover(cpb.RecoverConfig(
            vpg=VPG, journal_dir=str(tmp_path / "journal"), protect_peers=["host-a"],
            journal_hard_limit_bytes=6 << 20,
            volumes=[cpb.ReplicaVolume(volume="vol-1", path=str(tmp_path / "replica.img"), size=16 << 20)]))
        assert reply.ok, reply.message
        f = lab.filter("filter-a", {"vol-1": source}, p)
        reply = p.control.ConfigureProtect(cpb.ProtectConfig(
            vpg=VPG, volumes=["vol-1"], filter_controls=[f.control_path], compression=True, coordinator=True,
            recover_peer=cpb.PeerVra(vra_id="recover-r", address=r.address),
            protect_peers=[cpb.PeerVra(vra_id="host-a", address=p.address)], freeze_timeout_ms=1000))
        assert reply.ok, reply.message
        # The initial sync of the (empty) volume first: one started late would read the writes below
        # and send them again after the drain, filling the journal past "after-full".
        p.control.wait_streaming(VPG)

        def checkpoint(tag: str) -> str:
            rep = p.control.Checkpoint(cpb.CheckpointRequest(vpg=VPG, tag=tag, wait_durable=True, timeout_ms=60_000))
            assert rep.ok, rep.message
            return rep.checkpoint_id

        def image_hash(cid: str) -> str:
            export = r.control.OpenImage(cpb.OpenImageRequest(vpg=VPG, volume="vol-1", checkpoint_id=cid)).export_name
            try:
                out = tmp_path / "image.img"
                run(["nbdcopy", f"nbd+unix:///{export}?socket={r.nbd}", str(out)])
                return sha256_file(out)
            finally:
                r.control.CloseImage(cpb.CloseImageRequest(export_name=export))

        run(["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 1M", f.uri("vol-1")])
        c1 = checkpoint("before-full")
        at_c1 = sha256_file(source)
        pin = r.control.OpenImage(cpb.OpenImageRequest(vpg=VPG, volume="vol-1", checkpoint_id=c1)).export_name
        cmds = []
        for i in range(160):  # 10 MiB in 64 KiB writes
            cmds += ["-c", f"write -P {0x20 + i % 200} {(1 << 20) + i * 65536} 64k"]
        run(["qemu-io", "-f", "raw", *cmds, f.uri("vol-1")])
        wait_for(lambda: r.control.vpg_status(VPG, "recover").state == "journal-full", 30, "journal-full")
        wait_for(lambda: p.control.vpg_status(VPG, "protect").state == "peer-journal-full", 30, "push back")
        prot = p.control.vpg_status(VPG, "protect")
        assert prot.counters["buffered_bytes"] > 0 and prot.counters["dropped_bytes"] == 0
        assert "full" in r.control.vpg_status(VPG, "recover").error
        assert image_hash(c1) == at_c1  # what was acknowledged is all there
        r.control.CloseImage(cpb.CloseImageRequest(export_name=pin))
        wait_for(lambda: p.control.vpg_status(VPG, "protect").counters["buffered_bytes"] == 0, 60, "buffer to drain")
        c2 = checkpoint("after-full")
        assert image_hash(c2) == sha256_file(source)
        st = r.control.vpg_status(VPG, "recover")
        assert st.counters["journal_full"] >= 1 and st.state in ("ok", "journal-history_shrunk")
        assert p.control.vpg_status(VPG, "protect").counters["refused_journal_full"] >= 1
    finally:
        lab.close()
