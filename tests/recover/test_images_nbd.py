"""Point-in-time images served by the IO filter's NBD server and read by real clients (qemu-img, nbdcopy,
qemu-io), while the promoter moves the journal into the replica."""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from vra_appliance.iofilter.nbd import NbdServer
from vra_appliance.recover.promoter import RetentionPolicy

from .helpers import Site, sha

MiB = 1 << 20
SIZES = {"vm1-disk0": 6 * MiB, "vm2-disk0": 3 * MiB + 4096}


def run(*cmd: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def sock() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="rnbd", dir="/tmp"))  # unix socket paths must stay short
    yield directory / "nbd.sock"
    shutil.rmtree(directory)


def uri(sock: Path, export: str) -> str:
    return f"nbd+unix:///{export}?socket={sock}"


def journal_and_replica_digest(site: Site) -> dict[str, str]:
    files = sorted(p for p in site.root.rglob("*") if p.is_file() and "scratch" not in p.name)
    return {str(p): sha(p.read_bytes()) for p in files}


def build_history(site: Site) -> dict[str, dict[str, bytes]]:
    """Six rounds of writes (big and small, overlapping) with a checkpoint each; the volumes' bytes at
    every checkpoint."""
    rng = random.Random(11)
    at: dict[str, dict[str, bytes]] = {}
    for _ in range(6):
        for _ in range(25):
            volume = rng.choice(sorted(SIZES))
            length = rng.choice([512, 4096, 65536, 300_000])
            offset = rng.randrange(SIZES[volume] - length) // 512 * 512
            site.write(volume, offset, rng.randbytes(length))
        cid = site.checkpoint()
        at[cid] = {v: bytes(m) for v, m in site.model.items()}
        site.flush()
        site.clock.advance(30)
    return at


def test_real_clients_read_point_in_time_images(tmp_path, sock):
    site = Site(tmp_path / "site", "file", SIZES, policy=RetentionPolicy(history_s=100),
                segment_bytes=1 * MiB)
    at = build_history(site)
    cids = list(at)
    site.vpg.promote_once()  # the older rounds go into the replica
    assert site.vpg.replica.promoted_seq > 0
    offered = [c.checkpoint_id for c in site.vpg.checkpoints()]
    assert offered == cids[2:]
    chosen = offered[1]
    images = {f"{v}-at-cp": site.vpg.image(v, chosen) for v in SIZES}
    server = NbdServer(images, unix_path=sock)
    server.start()
    try:
        for volume in SIZES:
            reference = tmp_path / f"{volume}.reference"
            reference.write_bytes(at[chosen][volume])
            export = uri(sock, f"{volume}-at-cp")
            run("qemu-img", "compare", "-f", "raw", "-F", "raw", export, str(reference))
            out = tmp_path / f"{volume}.nbdcopy"
            run("nbdcopy", export, str(out))
            assert sha(out.read_bytes()) == sha(at[chosen][volume])
        # replication and promotion go on while the images are served
        site.write("vm1-disk0", 0, b"\xee" * MiB)
        site.checkpoint()
        site.flush()
        site.clock.advance(1000)
        result = site.vpg.promote_once()
        assert result.pinned  # held at the served checkpoint
        out = tmp_path / "again.nbdcopy"
        run("nbdcopy", uri(sock, "vm1-disk0-at-cp"), str(out))
        assert sha(out.read_bytes()) == sha(at[chosen]["vm1-disk0"])
        # a read-only image: a client asking for write access is refused
        proc = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x55 0 4096",
                               uri(sock, "vm1-disk0-at-cp")], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "Permission denied" in proc.stderr
    finally:
        server.stop()  # closes the images: the pins go
    assert site.vpg.status().open_images == 0
    site.close()


def test_scratch_image_over_nbd_takes_writes_elsewhere(tmp_path, sock):
    site = Site(tmp_path / "site", "file", SIZES, policy=RetentionPolicy(history_s=100), segment_bytes=1 * MiB)
    at = build_history(site)
    chosen = list(at)[-2]
    before = journal_and_replica_digest(site)
    image = site.vpg.image("vm2-disk0", chosen, scratch_path=tmp_path / "vm2.scratch")
    server = NbdServer({"test-vm2": image}, unix_path=sock)
    server.start()
    expected = bytearray(at[chosen]["vm2-disk0"])
    try:
        export = uri(sock, "test-vm2")
        cmds = []
        for off, n, pat in [(0, 4096, 0x11), (70_000, 200_000, 0x22), (3 * MiB, 4096, 0x33)]:
            cmds += ["-c", f"write -P {pat:#x} {off} {n}"]
            expected[off : off + n] = bytes([pat]) * n
        cmds += ["-c", f"write -z {MiB} 65536", "-c", "flush"]
        expected[MiB : MiB + 65536] = bytes(65536)
        out = run("qemu-io", "-f", "raw", *cmds, export).stdout
        assert "failed" not in out.lower()
        copy = tmp_path / "vm2.nbdcopy"
        run("nbdcopy", export, str(copy))
        assert sha(copy.read_bytes()) == sha(bytes(expected))
    finally:
        server.stop()
    assert journal_and_replica_digest(site) == before
    assert not (tmp_path / "vm2.scratch").exists()
    assert site.image_hash("vm2-disk0", chosen) == sha(at[chosen]["vm2-disk0"])
    assert site.vpg.last_seq() == site.seq
    site.close()
