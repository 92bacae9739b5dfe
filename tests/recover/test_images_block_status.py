"""Block status (NBD ``base:allocation``) of point-in-time images, read by ``nbdinfo --map``: an image
reports data where a write up to its checkpoint covers the bytes (in the journal, or promoted into the
replica) or the replica file holds data, and holes elsewhere; a scratch overlay's blocks (a writable image,
or a recovery session's volume) are data. ``nbdcopy`` of an image comes out as sparse as the map.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from vra_appliance.iofilter.nbd import NbdServer
from vra_appliance.recover.promoter import RetentionPolicy
from vra_appliance.recover.service.exports import ScratchBudget, SessionVolume

from .helpers import Site, sha

KiB = 1024
MiB = 1 << 20
SIZE = 8 * MiB
VOLUME = "vol"
SEEDED = [(1 * MiB, 256 * KiB)]  # data in the replica before any write (a restored backup)
ROUNDS = [  # 4 KiB-aligned writes per checkpoint (promotion writes whole file-system blocks)
    [(3 * MiB, 64 * KiB), (5 * MiB + 4 * KiB, 8 * KiB)],
    [(6 * MiB, 128 * KiB), (1 * MiB + 200 * KiB, 100 * KiB)],
    [(3 * MiB + 32 * KiB, 64 * KiB)],
    [(7 * MiB, 4 * KiB)],
    [(0, 16 * KiB)],
]
HOLE = 3


@pytest.fixture
def sock() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="rbs", dir="/tmp"))  # unix socket paths must stay short
    yield directory / "nbd.sock"
    shutil.rmtree(directory)


def expected_map(ranges: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(offset, length, flags): data where ``ranges`` cover, holes between (as nbdinfo --map lists them)."""
    covered = bytearray(SIZE // (4 * KiB))
    for offset, length in ranges:
        covered[offset // (4 * KiB):(offset + length) // (4 * KiB)] = b"\1" * (length // (4 * KiB))
    out: list[tuple[int, int, int]] = []
    for block, is_data in enumerate(covered):
        flags = 0 if is_data else HOLE
        if out and out[-1][2] == flags:
            out[-1] = (out[-1][0], out[-1][1] + 4 * KiB, flags)
        else:
            out.append((block * 4 * KiB, 4 * KiB, flags))
    return out


def nbdinfo_map(sock: Path, export: str) -> list[tuple[int, int, int]]:
    out = subprocess.run(["nbdinfo", "--map", f"nbd+unix:///{export}?socket={sock}"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return [tuple(int(x) for x in line.split()[:3]) for line in out.splitlines() if line.strip()]


def make_site(root: Path) -> tuple[Site, dict[str, list[tuple[int, int]]]]:
    """A site whose replica is sparse; the rounds written with a checkpoint each, the older ones promoted.
    Returns it and, per checkpoint, the ranges holding data at that checkpoint."""
    root.mkdir(parents=True)
    with open(root / f"{VOLUME}.img", "wb") as f:
        f.truncate(SIZE)
        for offset, length in SEEDED:
            f.seek(offset)
            f.write(os.urandom(length))
    site = Site(root, "file", {VOLUME: SIZE}, policy=RetentionPolicy(history_s=100), segment_bytes=1 * MiB)
    data = list(SEEDED)
    at = {}
    for writes in ROUNDS:
        for offset, length in writes:
            site.write(VOLUME, offset, os.urandom(length))
            data.append((offset, length))
        at[site.checkpoint()] = list(data)
        site.flush()
        site.clock.advance(30)
    return site, at


def test_images_map_what_was_written_up_to_their_checkpoint(tmp_path, sock):
    site, at = make_site(tmp_path / "site")
    site.vpg.promote_once()  # the older rounds go into the replica file
    assert site.vpg.replica.promoted_seq > 0
    offered = [c.checkpoint_id for c in site.vpg.checkpoints()]
    assert len(offered) >= 2
    images = {f"at-{i}": site.vpg.image(VOLUME, cid) for i, cid in enumerate(offered)}
    server = NbdServer(images, unix_path=sock)
    server.start()
    try:
        for i, cid in enumerate(offered):
            assert nbdinfo_map(sock, f"at-{i}") == expected_map(at[cid]), cid
        latest = f"at-{len(offered) - 1}"
        out = tmp_path / "copy.img"
        subprocess.run(["nbdcopy", f"nbd+unix:///{latest}?socket={sock}", str(out)], check=True, timeout=60)
        assert sha(out.read_bytes()) == site.snapshots[offered[-1]][VOLUME]
        assert os.stat(out).st_blocks * 512 <= sum(n for _, n in at[offered[-1]]) + 64 * KiB
    finally:
        server.stop()
    site.close()


def test_scratch_blocks_are_data_in_a_writable_image_and_in_a_session_volume(tmp_path, sock):
    site, at = make_site(tmp_path / "site")
    cid = list(at)[-1]
    writable = site.vpg.image(VOLUME, cid, scratch_path=tmp_path / "img.scratch")
    session = SessionVolume("session-vol", VOLUME, site.vpg.image(VOLUME, cid), tmp_path / "session.scratch",
                            ScratchBudget())
    server = NbdServer({"writable": writable, "session": session}, unix_path=sock)
    server.start()
    try:
        for export in ("writable", "session"):
            assert nbdinfo_map(sock, export) == expected_map(at[cid])
            # 4 KiB into a hole: its whole 64 KiB scratch block is copied, so it is all data now
            subprocess.run(["qemu-io", "-f", "raw", "-c", f"write -P 9 {4 * MiB + 8 * KiB} 4k",
                            f"nbd+unix:///{export}?socket={sock}"], check=True, capture_output=True, timeout=60)
            assert nbdinfo_map(sock, export) == expected_map([*at[cid], (4 * MiB, 64 * KiB)])
    finally:
        server.stop()
    site.close()
