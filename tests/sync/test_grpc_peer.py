"""The delta sync's checksum exchange over gRPC (through the WAN emulator, with latency): the replica ends
equal to the source, and the recovery side's refusals arrive as the same errors with the same messages."""

from __future__ import annotations

import random
from concurrent import futures

import grpc
import pytest

from tests.sync.conftest import MemVolume
from vra_appliance.errors import (
    ChecksumListError,
    TransientError,
    UnknownVolumeError,
    UnknownVpgError,
    VolumeSizeError,
)
from vra_appliance.rpc.checksums import checksum_handler
from vra_appliance.sync.checksums import DeltaParams
from vra_appliance.sync.delta import DeltaSync, ReplicaChecksums, apply
from vra_appliance.sync.grpc_peer import GrpcChecksumPeer
from vra_appliance.sync.messages import DeltaOpen, LeafRequest
from zvm.lab.wan import WanEmulator

SIZE = 2 << 20


@pytest.fixture
def recovery():
    rng = random.Random(9)
    source = MemVolume(rng.randbytes(SIZE))
    replica = MemVolume(source.buf)
    for _ in range(30):
        off = rng.randrange(0, SIZE - 100)
        replica.buf[off:off + 100] = rng.randbytes(100)
    sides = {"vpg-1": ReplicaChecksums({"vol-1": replica})}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((checksum_handler(sides.get),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    wan = WanEmulator(("127.0.0.1", 0), ("127.0.0.1", port), latency_ms=5).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{wan.address[1]}")
    yield source, replica, channel, wan
    channel.close()
    wan.stop()
    server.stop(grace=None).wait()


def test_delta_sync_over_grpc_makes_the_replica_equal(recovery):
    source, replica, channel, _ = recovery
    sync = DeltaSync(source, "vol-1", GrpcChecksumPeer(channel, "vpg-1"), DeltaParams(4096, 16, salt=b"salt"),
                     vpg="vpg-1", window_bytes=256 * 1024)
    apply(replica, sync.extents())
    assert replica.digest() == source.digest()
    assert 0 < sync.stats.data_bytes <= 60 * 4096


def test_refusals_cross_the_wire_as_the_same_errors(recovery):
    _, _, channel, _ = recovery
    peer = GrpcChecksumPeer(channel, "vpg-1")
    params = DeltaParams()
    with pytest.raises(UnknownVolumeError, match="'vol-9' is not part of this VPG on the recovery side"):
        peer.open(DeltaOpen("vpg-1", "vol-9", SIZE, params))
    with pytest.raises(VolumeSizeError, match="resize the replica volume to 4194304 bytes"):
        peer.open(DeltaOpen("vpg-1", "vol-1", 2 * SIZE, params))
    with pytest.raises(ChecksumListError, match="before the delta sync was opened"):
        peer.leaf_digests(LeafRequest("vol-1", (0,)))
    with pytest.raises(UnknownVpgError, match="'vpg-7' has no recovery role"):
        GrpcChecksumPeer(channel, "vpg-7").open(DeltaOpen("vpg-7", "vol-1", SIZE, params))


def test_a_cut_link_is_transient(recovery):
    _, _, channel, wan = recovery
    wan.cut(mode="reset")
    peer = GrpcChecksumPeer(channel, "vpg-1", timeout=2)
    with pytest.raises(TransientError, match="runs again"):
        peer.open(DeltaOpen("vpg-1", "vol-1", SIZE, DeltaParams()))
    wan.restore()


def test_a_call_on_a_closed_channel_is_transient(recovery):
    """What a sync sees when its VRA stops it by closing the channel under it: run again later."""
    _, _, channel, _ = recovery
    peer = GrpcChecksumPeer(channel, "vpg-1", timeout=2)
    channel.close()
    with pytest.raises(TransientError, match="closed"):
        peer.open(DeltaOpen("vpg-1", "vol-1", SIZE, DeltaParams()))
