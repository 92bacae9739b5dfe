"""Point-in-time images as export backends: read-only, scratch overlays, pins, errors."""

from __future__ import annotations

import errno
import random

import pytest

from vra_appliance.recover import CheckpointNotFoundError, CheckpointRecord, UnknownVolumeError, WriteRecord
from vra_appliance.recover.filejournal import FileJournal
from vra_appliance.recover.image import SCRATCH_BLOCK
from vra_appliance.recover.replica import ReplicaVolume
from vra_appliance.recover.vpg import RecoveryVPG

from .helpers import Site, sha

SIZES = {"disk-a": 512 << 10, "disk-b": 200 << 10}


def files_digest(site: Site) -> dict[str, str]:
    """Hashes of every replica and journal file: what a scratch write must never change."""
    return {str(p.relative_to(site.root)): sha(p.read_bytes())
            for p in sorted(site.root.rglob("*")) if p.is_file() and "scratch" not in p.name}


def populate(site: Site, rng: random.Random, count: int = 40) -> str:
    for _ in range(count):
        volume = rng.choice(sorted(SIZES))
        offset = rng.randrange(SIZES[volume])
        site.write(volume, offset, rng.randbytes(min(rng.randrange(1, 70_000), SIZES[volume] - offset)))
    cid = site.checkpoint("test")
    site.flush()
    return cid


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_scratch_writes_never_touch_replica_or_journal(tmp_path, kind):
    rng = random.Random(4)
    site = Site(tmp_path, kind, SIZES, policy=None)
    cid = populate(site, rng)
    populate(site, rng)  # newer writes that the image must not show
    before = files_digest(site)
    image = site.vpg.image("disk-a", cid, scratch_path=tmp_path / "disk-a.scratch")
    assert not image.read_only and image.size == SIZES["disk-a"]
    model = bytearray(image.pread(0, image.size))
    assert sha(bytes(model)) == site.snapshots[cid]["disk-a"]
    bs = SCRATCH_BLOCK
    cases = [(0, 10), (bs - 5, 10), (3 * bs, bs), (4 * bs + 1, 3 * bs), (image.size - 7, 7), (100, 1)]
    cases += [(rng.randrange(image.size - 9000), rng.randrange(1, 9000)) for _ in range(30)]
    for n, (offset, length) in enumerate(cases):
        if n % 7 == 3:
            image.write_zeroes(offset, length)
            model[offset : offset + length] = bytes(length)
        else:
            data = rng.randbytes(length)
            image.pwrite(offset, data, fua=n % 5 == 0)
            model[offset : offset + length] = data
        lo = max(0, offset - bs)
        assert image.pread(lo, min(image.size - lo, 3 * bs)) == bytes(model[lo : lo + 3 * bs])
    image.trim(0, bs)
    image.flush()
    assert sha(image.pread(0, image.size)) == sha(bytes(model))
    assert files_digest(site) == before  # not one byte of the replica or the journal changed
    site.clock.advance(1000)
    site.vpg.promote_once()  # promotion runs meanwhile (up to the image's checkpoint)
    assert site.vpg.replica.promoted_seq == image.checkpoint_seq
    assert sha(image.pread(0, image.size)) == sha(bytes(model))
    image.close()
    assert not (tmp_path / "disk-a.scratch").exists()
    # the scratch is gone: the same checkpoint reads as it was
    assert site.image_hash("disk-a", cid) == site.snapshots[cid]["disk-a"]
    site.close()


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_read_only_image_refuses_writes_and_bad_ranges(tmp_path, kind):
    site = Site(tmp_path, kind, SIZES)
    cid = populate(site, random.Random(1), 5)
    image = site.vpg.image("disk-b", cid)
    assert image.read_only and image.name == f"disk-b@{cid}"
    for call in (lambda: image.pwrite(0, b"x"), lambda: image.trim(0, 512),
                 lambda: image.write_zeroes(0, 512)):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EPERM
    with pytest.raises(OSError) as info:
        image.pread(image.size - 10, 11)
    assert info.value.errno == errno.EINVAL
    image.flush()
    image.close()
    image.close()
    with pytest.raises(OSError):
        image.pread(0, 1)
    with pytest.raises(CheckpointNotFoundError):
        site.vpg.image("disk-b", "no-such-checkpoint")
    with pytest.raises(UnknownVolumeError):
        site.vpg.image("disk-z", cid)
    site.close()


def test_open_image_pins_promotion_and_trim(tmp_path):
    site = Site(tmp_path, "file", SIZES, segment_bytes=32 << 10)
    rng = random.Random(9)
    first = populate(site, rng)
    site.clock.advance(1)
    second = populate(site, rng)
    image = site.vpg.image("disk-a", first)
    site.clock.advance(1000)  # everything is past the history now
    result = site.vpg.promote_once()
    assert result.pinned and site.vpg.status().pinned
    assert site.vpg.replica.promoted_seq == image.checkpoint_seq
    # the records the image reads are still in the journal: the trim waited for the image
    assert site.journal.first_seq("vpg-1") <= image.base_seq + 1
    assert sha(image.pread(0, image.size)) == site.snapshots[first]["disk-a"]
    assert [c.checkpoint_id for c in site.vpg.checkpoints()] == [first, second]
    image.close()
    result = site.vpg.promote_once()
    assert not result.pinned and site.vpg.replica.promoted_seq == site.seq
    assert site.vpg.checkpoints()[-1].checkpoint_id == second  # the newest stays (seq == promoted)
    with pytest.raises(CheckpointNotFoundError):
        site.vpg.image("disk-a", first)
    assert site.image_hash("disk-a", second) == site.snapshots[second]["disk-a"]
    site.close()


def test_opening_an_image_copies_nothing(tmp_path):
    # a 1 GiB sparse replica: opening an image (with a scratch) must not read it into anything or copy it
    journal = FileJournal(tmp_path / "j")
    vpg = RecoveryVPG("v", journal, {"big": ReplicaVolume(tmp_path / "big.img", 1 << 30)}, tmp_path / "s")
    vpg.append([WriteRecord("v", 1, 1, "big", 5 << 20, b"hello"), CheckpointRecord("v", 2, 2, "c", None, True)])
    image = vpg.image("big", "c", scratch_path=tmp_path / "scratch")
    used = sum(p.stat().st_blocks * 512 for p in tmp_path.rglob("*") if p.is_file())
    assert used < 1 << 20
    assert image.size == 1 << 30
    assert image.pread((5 << 20) - 2, 9) == b"\0\0hello\0\0"
    image.close()
    vpg.close()
    journal.close()
