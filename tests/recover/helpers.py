"""A recovery VPG with a reference model of its volumes, for the image and promoter tests."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from vra_appliance.recover import CheckpointRecord, MemoryJournal, WriteRecord
from vra_appliance.recover.filejournal import FileJournal
from vra_appliance.recover.promoter import RetentionPolicy
from vra_appliance.recover.replica import ReplicaIO, ReplicaVolume
from vra_appliance.recover.vpg import RecoveryVPG

VPG = "vpg-1"
SEC = 1_000_000_000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Clock:
    def __init__(self, start_s: float = 1_700_000_000) -> None:
        self.now = int(start_s * SEC)

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * SEC)


class Site:
    """A recovery VPG over a journal of the given kind, plus the model: each volume's bytes now, and
    each checkpoint's volume hashes. Replica volumes are pre-seeded with random content (as a restored
    backup would be), so reads of bytes no write covers are checked too."""

    def __init__(self, root: Path, kind: str, sizes: dict[str, int], *, seed: int = 0,
                 policy: RetentionPolicy | None = None, segment_bytes: int = 16 << 10,
                 replica_io: ReplicaIO | None = None, journal=None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.kind = kind
        self.sizes = sizes
        self.policy = policy or RetentionPolicy(history_s=10)
        self.segment_bytes = segment_bytes
        self.clock = Clock()
        self.model = {}
        rng = random.Random(seed)
        for volume, size in sizes.items():
            path = root / f"{volume}.img"
            if not path.exists():
                path.write_bytes(rng.randbytes(size))
            self.model[volume] = bytearray(path.read_bytes())
        self.snapshots: dict[str, dict[str, str]] = {}
        self.stored = {v: bytearray(m) for v, m in self.model.items()}  # the model as of last_seq
        self.seq = 0
        self.pending: list = []
        self.journal = journal if journal is not None else self.new_journal()
        self.vpg = self.open_vpg(replica_io)

    def new_journal(self):
        if self.kind == "memory":
            return MemoryJournal()
        return FileJournal(self.root / "journal", segment_bytes=self.segment_bytes)

    def volume_specs(self) -> dict[str, ReplicaVolume]:
        return {v: ReplicaVolume(self.root / f"{v}.img", size) for v, size in self.sizes.items()}

    def open_vpg(self, replica_io: ReplicaIO | None = None) -> RecoveryVPG:
        return RecoveryVPG(VPG, self.journal, self.volume_specs(), self.root / "state", self.policy,
                           clock=self.clock, replica_io=replica_io)

    def write(self, volume: str, offset: int, data: bytes) -> None:
        self.seq += 1
        self.pending.append(WriteRecord(VPG, self.seq, self.clock(), volume, offset, data))
        self.model[volume][offset : offset + len(data)] = data

    def checkpoint(self, tag: str | None = None) -> str:
        self.seq += 1
        cid = f"cp-{self.seq}"
        self.pending.append(CheckpointRecord(VPG, self.seq, self.clock(), cid, tag, True))
        self.snapshots[cid] = {v: sha(bytes(m)) for v, m in self.model.items()}
        return cid

    def flush(self) -> None:
        if self.pending:
            assert self.vpg.append(self.pending) == self.seq
            self.pending = []
            self.stored = {v: bytearray(m) for v, m in self.model.items()}

    def drop_pending(self) -> None:
        """Forget a batch the journal refused (the protect side would keep it for a resend)."""
        self.pending = []
        self.seq = self.vpg.last_seq()
        self.model = {v: bytearray(m) for v, m in self.stored.items()}
        self.snapshots = {k: v for k, v in self.snapshots.items() if int(k.split("-")[1]) <= self.seq}

    def image_hash(self, volume: str, cid: str) -> str:
        image = self.vpg.image(volume, cid)
        try:
            return sha(image.pread(0, image.size))
        finally:
            image.close()

    def check_all_checkpoints(self) -> int:
        """Every checkpoint still offered, every volume: image hash == model hash. Returns how many."""
        offered = self.vpg.checkpoints()
        for info in offered:
            for volume in self.sizes:
                assert self.image_hash(volume, info.checkpoint_id) == self.snapshots[info.checkpoint_id][volume], (
                    info, volume)
        return len(offered)

    def close(self) -> None:
        self.vpg.close()
        if hasattr(self.journal, "close"):
            self.journal.close()
