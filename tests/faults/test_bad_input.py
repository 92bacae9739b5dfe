"""Bad input to the delta sync's checksum service, through gRPC, with the real `vra serve` on each side:

- against the recovery `vra serve` (its checksum service on the gRPC port): checksums asked for a volume
  the VPG does not have, for an unsupported block size, for groups past the volume, before opening, for
  the wrong volume size, for an unknown VPG, or without the pairing secret: each gets an error that says
  what is wrong and what to do, as the same error class on the client;
- against the protect `vra serve`: a recovery side that answers with checksums for another block size (or
  for another volume) makes the forced delta sync fail with that message in the VPG's status; the VPG stays
  in DeltaSync and its checkpoints are not consistent.
"""

from __future__ import annotations

import struct
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from tests.replication.lab import SECRET, Lab, wait_for
from vra_appliance.errors import (
    ChecksumListError,
    PermanentError,
    UnknownVolumeError,
    UnknownVpgError,
    VolumeSizeError,
)
from vra_appliance.proto.v1 import control_pb2 as cpb
from vra_appliance.proto.v1 import replication_pb2_grpc as pb_grpc
from vra_appliance.recover import MemoryJournal
from vra_appliance.recover.service.receiver import RecoveryEndpoint, VpgReceiver
from vra_appliance.rpc.checksums import checksum_handler
from vra_appliance.stream.transport_grpc import SERVER_OPTIONS
from vra_appliance.sync.checksums import DeltaParams
from vra_appliance.sync.delta import ReplicaChecksums
from vra_appliance.sync.grpc_peer import METHOD, GrpcChecksumPeer
from vra_appliance.sync.messages import DeltaOpen, GroupDigests, LeafRequest
from vra_appliance.sync.volume import FileVolume
from vra_appliance.trust.auth import SECRET_KEY, Security

from .site import VOL, VPG

SIZE = 4 << 20


def test_the_recovery_vra_refuses_bad_checksum_requests_clearly(short_tmp: Path) -> None:
    lab = Lab(short_tmp)
    try:
        r = lab.vra("recover-r", split=False)
        reply = r.control.ConfigureRecover(cpb.RecoverConfig(
            vpg=VPG, journal_dir=str(short_tmp / "journal"), protect_peers=["host-a"],
            volumes=[cpb.ReplicaVolume(volume=VOL, path=str(short_tmp / "replica.img"), size=SIZE)]))
        assert reply.ok, reply.message
        channel = grpc.insecure_channel(r.address)
        peer = GrpcChecksumPeer(channel, VPG, metadata=((SECRET_KEY, SECRET),), timeout=20)
        params = DeltaParams(salt=b"s")
        try:
            with pytest.raises(UnknownVolumeError, match=r"'vol-9' is not part of this VPG on the recovery side "
                                                         r"\(its volumes: 'vol-1'\)"):
                peer.open(DeltaOpen(VPG, "vol-9", SIZE, params))
            with pytest.raises(ChecksumListError, match="asked before the delta sync was opened"):
                peer.group_digests(VOL, 0, 1)
            with pytest.raises(VolumeSizeError, match=f"resize the replica volume to {2 * SIZE} bytes"):
                peer.open(DeltaOpen(VPG, VOL, 2 * SIZE, params))
            with pytest.raises(UnknownVpgError, match="'vpg-x' has no recovery role on this VRA"):
                GrpcChecksumPeer(channel, "vpg-x", metadata=((SECRET_KEY, SECRET),)).open(
                    DeltaOpen("vpg-x", VOL, SIZE, params))
            # A checksum request for a block size this VRA does not do (our client cannot even build one).
            blob = bytearray(DeltaOpen(VPG, VOL, SIZE, params).encode())
            at = blob.index(struct.pack("<QII", SIZE, 4096, 16))
            blob[at:at + 16] = struct.pack("<QII", SIZE, 3000, 16)
            raw = channel.unary_unary(METHOD)
            with pytest.raises(grpc.RpcError) as err:
                raw(struct.pack("<H", len(VPG)) + VPG.encode() + bytes(blob), timeout=20,
                    metadata=((SECRET_KEY, SECRET),))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "block size 3000 is not supported: use a power of two" in err.value.details()
            # Opened properly: groups past the end of the volume, then the right ones work.
            peer.open(DeltaOpen(VPG, VOL, SIZE, params))
            groups = params.groups(SIZE)
            with pytest.raises(ChecksumListError, match=f"groups {groups}..{groups + 1} asked, volume has {groups}"):
                peer.group_digests(VOL, groups, 1)
            assert peer.group_digests(VOL, 0, groups).block_size == 4096
            peer.close(VOL)
            # Without the pairing secret: refused, saying so.
            with pytest.raises(PermanentError, match="not paired with VPG"):
                GrpcChecksumPeer(channel, VPG, metadata=((SECRET_KEY, "wrong"),)).open(DeltaOpen(VPG, VOL, SIZE, params))
        finally:
            channel.close()
    finally:
        lab.close()


class LyingChecksums(ReplicaChecksums):
    """A recovery side that answers with checksums for 8 KiB blocks, or for another volume."""

    def __init__(self, volumes, lie: str) -> None:
        super().__init__(volumes)
        self.lie = lie

    def group_digests(self, volume, first_group, count):
        real = super().group_digests(volume, first_group, count)
        if self.lie == "block-size":
            return GroupDigests(volume, 8192, first_group, real.digests)
        return GroupDigests("vol-other", real.block_size, first_group, real.digests)

    def leaf_digests(self, request: LeafRequest):
        return super().leaf_digests(request)


class ImpostorRecovery:
    """A recovery VRA in this process: a real receiver and journal (in memory) for the stream, and a checksum
    service that lies."""

    def __init__(self, tmp: Path, replica: Path, lie: str) -> None:
        self.journal = MemoryJournal()
        self.rx = VpgReceiver(VPG, self.journal, tmp / "positions", paired={"host-a"}, recover_id="recover-r")
        endpoint = RecoveryEndpoint()
        endpoint.add(self.rx)
        self.rx.start()
        self.replica = FileVolume(replica)
        sides = {VPG: LyingChecksums({VOL: self.replica}, lie)}
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=SERVER_OPTIONS)
        pb_grpc.add_ReplicationServicer_to_server(
            __import__("vra_appliance.stream.transport_grpc", fromlist=["ReplicationServicer"]).ReplicationServicer(
                endpoint, Security(pairing_secret=SECRET)), self.server)
        self.server.add_generic_rpc_handlers((checksum_handler(sides.get),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self) -> None:
        self.server.stop(grace=None).wait()
        self.rx.stop()
        self.replica.close()


@pytest.mark.parametrize("lie,message", [
    ("block-size", "are for 8192-byte blocks, but this delta sync uses 4096-byte blocks; restart the delta "
                   "sync so that both sides use block size 4096"),
    ("volume", "volume 'vol-other' is not part of this VPG on the protected side"),
])
def test_the_protect_vra_reports_a_peer_that_sends_bad_checksums(short_tmp: Path, lie: str, message: str) -> None:
    lab = Lab(short_tmp)
    replica = short_tmp / "replica.img"
    replica.write_bytes(bytes(SIZE))
    impostor = ImpostorRecovery(short_tmp, replica, lie)
    try:
        p = lab.vra("host-a")
        source = lab.volume(VOL, SIZE)
        f = lab.filter("filter-a", {VOL: source}, p)
        reply = p.control.ConfigureProtect(cpb.ProtectConfig(
            vpg=VPG, volumes=[VOL], filter_controls=[f.control_path], coordinator=True,
            recover_peer=cpb.PeerVra(vra_id="recover-r", address=f"127.0.0.1:{impostor.port}"),
            protect_peers=[cpb.PeerVra(vra_id="host-a", address=p.address)], checkpoint_interval_ms=3_600_000))
        assert reply.ok, reply.message
        p.control.wait_streaming(VPG)  # the initial sync needs no checksums
        reply = p.control.ForceSync(cpb.ForceSyncRequest(vpg=VPG, reason=cpb.SYNC_REASON_FORCED))
        assert reply.ok, reply.message

        def failed():
            st = p.control.vpg_status(VPG, "protect")
            return next((r for r in st.last_syncs if r.kind == "DeltaSync" and r.error), None)

        report = wait_for(failed, 30, "the forced delta sync to fail")
        assert not report.completed and message in report.error, report.error
        st = p.control.vpg_status(VPG, "protect")
        assert st.substatus == "DeltaSync" and st.state == "syncing"  # it is still needed: not streaming
        cp = p.control.Checkpoint(cpb.CheckpointRequest(vpg=VPG, wait_durable=True, timeout_ms=30_000))
        assert cp.ok and not cp.consistent
        # A volume that is not the VPG's is refused by the Control service, saying which ones are.
        bad = p.control.ForceSync(cpb.ForceSyncRequest(vpg=VPG, volumes=["vol-9"]))
        assert not bad.ok and "['vol-9'] are not protected by this VRA" in bad.message
    finally:
        lab.close()
        impostor.close()
