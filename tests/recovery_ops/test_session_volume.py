"""A recovery session's volume (vra_appliance/recover/service/exports.py): a point-in-time image under a scratch
overlay. Reads see the image with the scratch's writes on top; the image is never written; the scratch's
limit refuses writes with ENOSPC and says so; applying the scratch onto a replica equal to the image makes
it equal to what the VM saw, copying only the blocks written, and doing it again changes nothing."""

from __future__ import annotations

import errno
import os
import random

import pytest

from vra_appliance.recover.service.exports import (
    SCRATCH_BLOCK,
    ScratchBudget,
    SessionVolume,
    apply_scratch,
    data_ranges,
)

SIZE = 2 << 20


class Image:
    """Stands for a read-only PointInTimeImage."""

    def __init__(self, data: bytes):
        self.data = data
        self.size = len(data)
        self.closed = False

    def pread(self, offset: int, length: int) -> bytes:
        return self.data[offset:offset + length]

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("seed", range(4))
def test_reads_see_the_writes_over_the_image_and_the_commit_reproduces_them(tmp_path, seed):
    rng = random.Random(seed)
    base = rng.randbytes(SIZE)
    image = Image(base)
    vol = SessionVolume("s.v", "v", image, tmp_path / "v.scratch", ScratchBudget())
    model = bytearray(base)
    for _ in range(60):
        offset = rng.randrange(SIZE - 1)
        length = rng.randrange(1, min(300_000, SIZE - offset) + 1)
        if rng.random() < 0.5:
            data = rng.randbytes(length)
            vol.pwrite(offset, data)
            model[offset:offset + length] = data
        else:
            assert vol.pread(offset, length) == bytes(model[offset:offset + length])
    vol.write_zeroes(SIZE - 100_000, 100_000)
    model[SIZE - 100_000:] = bytes(100_000)
    assert vol.pread(0, SIZE) == bytes(model)
    assert image.data == base  # the image (journal and replica) is never written
    written = vol.scratch_bytes
    vol.close(discard=False)
    assert image.closed

    replica = tmp_path / "replica.img"
    replica.write_bytes(base)
    copied = apply_scratch(tmp_path / "v.scratch", replica, SIZE)
    assert replica.read_bytes() == bytes(model)
    assert copied == written < SIZE  # only the blocks the VM wrote
    assert apply_scratch(tmp_path / "v.scratch", replica, SIZE) == copied and replica.read_bytes() == bytes(model)


def test_the_scratch_limit_refuses_writes_with_enospc_and_says_so(tmp_path):
    budget = ScratchBudget(limit=4 * SCRATCH_BLOCK)
    a = SessionVolume("s.a", "a", Image(bytes(SIZE)), tmp_path / "a.scratch", budget)
    b = SessionVolume("s.b", "b", Image(bytes(SIZE)), tmp_path / "b.scratch", budget)
    a.pwrite(0, b"x" * (2 * SCRATCH_BLOCK))
    b.pwrite(SCRATCH_BLOCK, b"y")  # one block, copied whole
    a.pwrite(10, b"again")  # a block it has already: no new scratch
    assert not budget.exceeded and budget.used == 3 * SCRATCH_BLOCK
    with pytest.raises(OSError) as refused:
        b.pwrite(5 * SCRATCH_BLOCK, b"z" * (2 * SCRATCH_BLOCK))
    assert refused.value.errno == errno.ENOSPC and budget.exceeded
    assert b.pread(5 * SCRATCH_BLOCK, 10) == bytes(10)  # nothing of the refused write landed
    b.pwrite(6 * SCRATCH_BLOCK, b"fits")
    a.close()
    b.close()
    assert not (tmp_path / "a.scratch").exists() and not (tmp_path / "b.scratch").exists()


def test_the_scratch_file_holds_exactly_the_written_blocks(tmp_path):
    vol = SessionVolume("s.v", "v", Image(bytes(SIZE)), tmp_path / "v.scratch", ScratchBudget())
    vol.pwrite(3 * SCRATCH_BLOCK + 7, b"q" * 10)
    vol.pwrite(20 * SCRATCH_BLOCK - 1, b"rr")  # straddles two blocks
    vol.flush()
    fd = os.open(tmp_path / "v.scratch", os.O_RDONLY)
    try:
        ranges = list(data_ranges(fd, SIZE))
    finally:
        os.close(fd)
    assert ranges == [(3 * SCRATCH_BLOCK, SCRATCH_BLOCK), (19 * SCRATCH_BLOCK, 2 * SCRATCH_BLOCK)]
    vol.close()
