"""Replica volumes of a recovery VPG and the durable promotion state (docs/FORMAT.md section 6).

A replica volume is a sparse raw file holding the volume as of ``promoted_seq``. Promotion writes an
intent (``promoting_to``) before touching the files and commits ``promoted_seq`` only after fsyncing them,
so after a crash the interrupted range is simply applied again (idempotent).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from vra_appliance.errors import UnknownVolumeError
from vra_appliance.fileio import pread_exact, pwrite_all, write_atomic

from .records import CheckpointInfo, CheckpointRecord, Record, WriteRecord

STATE_FILE = "promotion"


@dataclass(frozen=True)
class ReplicaVolume:
    """Where a volume's replica lives and how big the volume is."""

    path: Path
    size: int


class ReplicaIO:
    """The system calls that change replica files; tests subclass it to simulate a crash."""

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        pwrite_all(fd, data, offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)


class Replica:
    """The replica files of one VPG and its promotion state."""

    def __init__(
        self,
        vpg: str,
        volumes: Mapping[str, ReplicaVolume],
        state_dir: str | os.PathLike[str],
        io: ReplicaIO | None = None,
    ) -> None:
        self.vpg = vpg
        self.volumes = dict(volumes)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._io = io or ReplicaIO()
        self._fds: dict[str, int] = {}
        self.promoted_seq = 0
        self.promoting_to: int | None = None
        self.checkpoint: CheckpointInfo | None = None  # the checkpoint the replica is at, if it is at one
        self._load_state()
        for volume, spec in self.volumes.items():
            fd = os.open(spec.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._fds[volume] = fd
            if os.fstat(fd).st_size < spec.size:
                os.ftruncate(fd, spec.size)  # sparse: takes no space until written

    def _load_state(self) -> None:
        try:
            state = json.loads((self.state_dir / STATE_FILE).read_text())
        except FileNotFoundError:
            return
        if state.get("format") != 1 or state.get("vpg") != self.vpg:
            raise ValueError(f"{self.state_dir / STATE_FILE} is not the promotion state of VPG {self.vpg!r}")
        self.promoted_seq = int(state["promoted_seq"])
        self.promoting_to = state.get("promoting_to")
        cp = state.get("checkpoint")
        if cp is not None:
            self.checkpoint = CheckpointInfo(self.vpg, cp["id"], cp["timestamp_ns"], cp["tag"], cp["consistent"],
                                             self.promoted_seq)

    def _save_state(self) -> None:
        cp = self.checkpoint
        state = {"format": 1, "vpg": self.vpg, "promoted_seq": self.promoted_seq,
                 "promoting_to": self.promoting_to,
                 "checkpoint": None if cp is None else {"id": cp.checkpoint_id, "timestamp_ns": cp.timestamp_ns,
                                                        "tag": cp.tag, "consistent": cp.consistent}}
        write_atomic(self.state_dir / STATE_FILE, json.dumps(state).encode())

    def fd(self, volume: str) -> int:
        try:
            return self._fds[volume]
        except KeyError:
            raise UnknownVolumeError(f"volume {volume!r} is not part of recovery VPG {self.vpg!r}") from None

    def pread(self, volume: str, offset: int, length: int) -> bytes:
        data = pread_exact(self.fd(volume), length, offset)
        return data if len(data) == length else data + bytes(length - len(data))

    def begin(self, target: int) -> None:
        """Durably record that promotion up to ``target`` starts (before any replica write)."""
        self.promoting_to = target
        self._save_state()

    def apply(self, records: Iterable[Record], upto: int) -> tuple[int, CheckpointInfo | None]:
        """Write the write records in seq order (checkpoints carry no data). Returns the bytes written and
        the checkpoint at ``upto`` if the last record is one.

        Checks that the seqs run without a gap from promoted_seq + 1 to ``upto``.
        """
        expected = self.promoted_seq + 1
        written = 0
        last: Record | None = None
        for record in records:
            last = record
            if record.seq != expected:
                raise OSError(errno.EIO, f"promotion expected seq {expected} from the journal, got {record.seq}")
            expected += 1
            if isinstance(record, WriteRecord):
                self._io.pwrite(self.fd(record.volume), record.data, record.offset)
                written += len(record.data)
        if expected != upto + 1:
            raise OSError(errno.EIO, f"journal ended at seq {expected - 1} before the promotion target {upto}")
        return written, CheckpointInfo.from_record(last) if isinstance(last, CheckpointRecord) else None

    def sync(self) -> None:
        for fd in self._fds.values():
            self._io.fsync(fd)

    def commit(self, target: int, checkpoint: CheckpointInfo | None = None) -> None:
        """Durably record the replica as of ``target`` (after ``sync``), at ``checkpoint`` if that is one."""
        self.promoted_seq = target
        self.promoting_to = None
        self.checkpoint = checkpoint
        self._save_state()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def reset_promotion_state(vpg: str, state_dir: str | os.PathLike[str]) -> None:
    """Durably set the VPG's promotion state to "nothing promoted, at no checkpoint" (its journal was
    discarded: seqs start again from 1). The replica files keep their content, which is at no checkpoint
    (a promotion may have been half done): only a sync makes them whole again."""
    path = Path(state_dir)
    path.mkdir(parents=True, exist_ok=True)
    state = {"format": 1, "vpg": vpg, "promoted_seq": 0, "promoting_to": None, "checkpoint": None}
    write_atomic(path / STATE_FILE, json.dumps(state).encode())
