"""Delta sync: the replica ends equal to the source (by hash) whatever the edits, only differing blocks are
sent, holes are not read, and bad input from the peer gets an error that says what to fix."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sync.conftest import MemVolume, file_digest
from vra_appliance.errors import (
    BlockSizeMismatchError,
    ChecksumListError,
    PermanentError,
    SyncParamsError,
    TransientError,
    UnknownVolumeError,
    VolumeSizeError,
)
from vra_appliance.sync.checksums import DIGEST_SIZE, DeltaParams, Hasher, block_ranges, differing
from vra_appliance.sync.delta import DeltaSync, ReplicaChecksums, delta_sync, hash_range
from vra_appliance.sync.initial import choose_initial
from vra_appliance.sync.messages import (
    CloseRequest,
    DeltaOpen,
    GroupDigests,
    GroupRequest,
    LeafDigests,
    LeafRequest,
    decode,
)
from vra_appliance.sync.state import SyncKind
from vra_appliance.sync.volume import FileVolume

edits = st.lists(st.tuples(st.integers(0, 200_000), st.binary(min_size=1, max_size=9000)), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(1, 200_000),
    seed=st.integers(0, 2**32),
    changes=edits,
    block_size=st.sampled_from([512, 1024, 4096]),
    fanout=st.sampled_from([1, 3, 16]),
    window=st.sampled_from([1, 8192, 65536, 1 << 20]),
)
def test_delta_sync_makes_the_replica_equal_to_the_source(size, seed, changes, block_size, fanout, window):
    rng = random.Random(seed)
    source = MemVolume(rng.randbytes(size))
    replica = MemVolume(source.buf)
    for offset, data in changes:
        offset %= size
        data = data[:size - offset]
        replica.buf[offset:offset + len(data)] = data
    changed = {i // block_size for i in range(size) if source.buf[i] != replica.buf[i]}
    params = DeltaParams(block_size, fanout, salt=rng.randbytes(16))
    stats = delta_sync(source, "vol-1", replica, params, window_bytes=window)
    assert replica.digest() == source.digest()
    assert stats.differing_blocks == len(changed)
    assert stats.data_bytes <= len(changed) * block_size
    again = delta_sync(source, "vol-1", replica, params, window_bytes=window)
    assert again.data_bytes == 0 and again.differing_groups == 0


def test_two_levels_cut_checksum_traffic_when_changes_are_few():
    rng = random.Random(1)
    source = MemVolume(rng.randbytes(8 << 20))
    replica = MemVolume(source.buf)
    replica.buf[3_000_000:3_000_100] = bytes(100)
    flat = delta_sync(source, "v", MemVolume(replica.buf), DeltaParams(4096, 1))
    two = delta_sync(source, "v", replica, DeltaParams(4096, 16))
    assert two.data_bytes == flat.data_bytes == 4096
    assert two.checksum_bytes * 8 < flat.checksum_bytes
    assert replica.digest() == source.digest()


def test_evicted_windows_are_rehashed_on_the_recovery_side():
    rng = random.Random(2)
    replica = MemVolume(rng.randbytes(1 << 20))
    params = DeltaParams(4096, 4, salt=b"s")
    open_ = DeltaOpen("vpg", "v", 1 << 20, params)
    tight, roomy = ReplicaChecksums({"v": replica}, keep_bytes=1), ReplicaChecksums({"v": replica})
    for peer in (tight, roomy):
        peer.open(open_)
        peer.group_digests("v", 0, 4)
        peer.group_digests("v", 4, 4)  # the tight one keeps this window only
    request = LeafRequest("v", (1, 2, 5))
    assert tight.leaf_digests(request) == roomy.leaf_digests(request)
    assert tight.rehashed_groups == 2 and roomy.rehashed_groups == 0


def write_sparse(path, size, pieces):
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in pieces:
            f.seek(off)
            f.write(data)


def test_holes_are_hashed_without_reading(tmp_path):
    size = 8 << 20
    write_sparse(tmp_path / "a", size, [(1 << 20, os.urandom(4096)), (5 << 20, os.urandom(10000))])
    params = DeltaParams(4096, 16)
    hasher = Hasher(params)
    with FileVolume(tmp_path / "a") as vol:
        reads = []
        real = vol.pread
        vol.pread = lambda off, n: reads.append((off, n)) or real(off, n)
        leaves = hash_range(vol, hasher, 0, size)
        data = MemVolume(real(0, size))
    assert leaves == hasher.leaves(data.buf)  # a hole hashes like the zeros it reads as
    assert sum(n for _, n in reads) <= 4096 + 12288 + 2 * 4096 * 2  # data blocks only, block aligned


def test_sparse_files_delta_sync_to_equal(tmp_path):
    size = (16 << 20) + 1234  # a short last block
    write_sparse(tmp_path / "src", size, [(0, os.urandom(70000)), (9 << 20, os.urandom(300000)),
                                          (size - 1000, os.urandom(1000))])
    write_sparse(tmp_path / "dst", size, [(9 << 20, os.urandom(5000)), (12 << 20, os.urandom(4096))])
    with FileVolume(tmp_path / "src") as src, FileVolume(tmp_path / "dst", writable=True) as dst:
        stats = delta_sync(src, "v", dst, window_bytes=1 << 20)
    assert file_digest(tmp_path / "src") == file_digest(tmp_path / "dst")
    assert stats.data_bytes < 500_000


def test_a_preseeded_replica_gets_only_the_differences(tmp_path):
    """Pre-seed: the replica holds an older copy (from a backup): the initial sync is a delta sync."""
    rng = random.Random(3)
    size = 8 << 20
    old = rng.randbytes(size)
    new = bytearray(old)
    changed_blocks = set()
    for _ in range(20):
        off = rng.randrange(0, size - 4096) // 4096 * 4096
        new[off:off + 4096] = rng.randbytes(4096)
        changed_blocks.add(off)
    write_sparse(tmp_path / "src", size, [(0, bytes(new))])
    write_sparse(tmp_path / "replica", size, [(0, old)])
    with FileVolume(tmp_path / "src") as src, FileVolume(tmp_path / "replica", writable=True) as replica:
        allocated = sum(n for _, n in replica.data_ranges(0, size))
        assert choose_initial(allocated) is SyncKind.DELTA
        stats = delta_sync(src, "v", replica)
    assert file_digest(tmp_path / "src") == file_digest(tmp_path / "replica")
    assert stats.data_bytes == len(changed_blocks) * 4096
    assert stats.wire_bytes < size // 20
    assert choose_initial(0) is SyncKind.INITIAL
    assert choose_initial(0, preseeded=True) is SyncKind.DELTA


# -- bad input ---------------------------------------------------------------------------------------------

class LyingPeer:
    """A recovery side that answers with something else than what was asked."""

    def __init__(self, inner: ReplicaChecksums, **lie) -> None:
        self.inner, self.lie = inner, lie

    def open(self, request):
        self.inner.open(request)

    def group_digests(self, volume, first, count):
        g = self.inner.group_digests(volume, first, count)
        return GroupDigests(self.lie.get("volume", g.volume), self.lie.get("block_size", g.block_size),
                            g.first_group, g.digests[:len(g.digests) - self.lie.get("drop", 0)])

    def leaf_digests(self, request):
        return self.inner.leaf_digests(request)

    def close(self, volume):
        self.inner.close(volume)


def lying_sync(**lie):
    source = MemVolume(random.Random(4).randbytes(256 * 1024))
    replica = MemVolume(bytes(256 * 1024))
    peer = LyingPeer(ReplicaChecksums({"vol-1": replica}), **lie)
    return list(DeltaSync(source, "vol-1", peer, DeltaParams(4096, 4)).ranges())


def test_checksums_for_the_wrong_block_size_say_which_to_use():
    with pytest.raises(BlockSizeMismatchError, match="8192-byte blocks.*block size 4096") as err:
        lying_sync(block_size=8192)
    assert isinstance(err.value, PermanentError)


def test_checksums_for_an_unknown_volume_are_refused():
    with pytest.raises(UnknownVolumeError, match="'vol-9' is not part of this VPG on the protected side"):
        lying_sync(volume="vol-9")


def test_a_short_checksum_list_is_refused():
    with pytest.raises(ChecksumListError, match="expected 16 digests, got 15"):
        lying_sync(drop=DIGEST_SIZE)


def test_recovery_side_refuses_unknown_volumes_sizes_and_early_requests():
    replica = MemVolume(bytes(64 * 1024))
    peer = ReplicaChecksums({"vol-1": replica, "vol-2": replica})
    params = DeltaParams()
    with pytest.raises(UnknownVolumeError, match="'vol-3'.*'vol-1', 'vol-2'.*add the volume"):
        peer.open(DeltaOpen("vpg", "vol-3", 64 * 1024, params))
    with pytest.raises(VolumeSizeError, match="resize the replica volume to 131072 bytes"):
        peer.open(DeltaOpen("vpg", "vol-1", 128 * 1024, params))
    with pytest.raises(ChecksumListError, match="before the delta sync was opened"):
        peer.group_digests("vol-1", 0, 1)
    peer.open(DeltaOpen("vpg", "vol-1", 64 * 1024, params))
    with pytest.raises(ChecksumListError, match="group 99 asked"):
        peer.leaf_digests(LeafRequest("vol-1", (99,)))
    with pytest.raises(ChecksumListError, match="asked, volume has 1"):
        peer.group_digests("vol-1", 0, 2)


def test_unsupported_parameters_say_what_is_supported():
    with pytest.raises(SyncParamsError, match="power of two"):
        DeltaParams(block_size=3000)
    with pytest.raises(SyncParamsError, match="fanout"):
        DeltaParams(fanout=0)
    with pytest.raises(SyncParamsError, match="upgrade"):
        DeltaParams(algorithm="md5")
    blob = bytearray(DeltaOpen("vpg", "v", 10, DeltaParams(salt=b"s")).encode())
    blob[-len("sha256-128") - 2:-2] = b"sha256-999"
    with pytest.raises(ChecksumListError, match="sha256-999"):
        DeltaOpen.decode(bytes(blob))


def test_unreadable_source_is_transient():
    class Broken(MemVolume):
        def pread(self, offset, length):
            raise OSError(5, "Input/output error")

    with pytest.raises(TransientError, match="Input/output error.*runs again"):
        delta_sync(Broken(bytes(8192)), "v", MemVolume(bytes(8192)))


# -- messages and helpers ----------------------------------------------------------------------------------

@given(vpg=st.text(max_size=20), volume=st.text(min_size=1, max_size=20), size=st.integers(0, 2**63),
       bs=st.sampled_from([512, 4096, 65536]), fanout=st.integers(1, 64), salt=st.binary(max_size=32),
       groups=st.lists(st.integers(0, 2**40), max_size=20), n=st.integers(0, 40))
def test_messages_round_trip(vpg, volume, size, bs, fanout, salt, groups, n):
    digests = os.urandom(n * DIGEST_SIZE)
    for msg in (DeltaOpen(vpg, volume, size, DeltaParams(bs, fanout, salt=salt)),
                GroupDigests(volume, bs, 7, digests), LeafRequest(volume, tuple(groups)),
                LeafDigests(volume, bs, tuple(groups), digests), GroupRequest(volume, n, 2**32 - 1),
                CloseRequest(volume)):
        assert type(msg).decode(msg.encode()) == msg == decode(msg.encode())


def test_truncated_messages_are_refused():
    blob = GroupDigests("v", 4096, 0, os.urandom(64)).encode()
    with pytest.raises(ChecksumListError, match="truncated"):
        GroupDigests.decode(blob[:-1])
    with pytest.raises(ChecksumListError, match="trailing"):
        GroupDigests.decode(blob + b"x")
    with pytest.raises(ChecksumListError, match="expected a ZLR1"):
        LeafRequest.decode(blob)


@given(a=st.lists(st.booleans(), max_size=300))
def test_differing_finds_exactly_the_changed_digests(a):
    mine = os.urandom(len(a) * DIGEST_SIZE)
    theirs = bytearray(mine)
    for i, flip in enumerate(a):
        if flip:
            theirs[i * DIGEST_SIZE] ^= 1
    assert differing(mine, bytes(theirs)) == [i for i, flip in enumerate(a) if flip]


def test_block_ranges_coalesce_clip_and_split():
    assert block_ranges([0, 1, 2, 5, 7, 8], 4096, 8 * 4096 + 100) == [(0, 12288), (20480, 4096), (28672, 4196)]
    assert block_ranges([8], 4096, 8 * 4096 + 100) == [(32768, 100)]
    assert block_ranges(list(range(10)), 4096, 10 * 4096, max_len=8192) == [(i * 8192, 8192) for i in range(5)]
