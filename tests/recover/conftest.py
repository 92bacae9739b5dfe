"""Fixtures for the recovery side: one journal factory parametrized over every Journal implementation."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vra_appliance.recover import CheckpointRecord, MemoryJournal, WriteRecord


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(seed: int, length: int) -> bytes:
    return random.Random(seed).randbytes(length)


def writes(vpg: str, first_seq: int, count: int, *, volume: str = "vol-1", size: int = 4096,
           ts: int = 1_000) -> list[WriteRecord]:
    return [
        WriteRecord(vpg, s, ts + s, volume, (s % 16) * size, payload(s, size))
        for s in range(first_seq, first_seq + count)
    ]


def checkpoint(vpg: str, seq: int, cid: str | None = None, *, tag: str | None = None,
               consistent: bool = True, ts: int | None = None) -> CheckpointRecord:
    return CheckpointRecord(vpg, seq, 1_000 + seq if ts is None else ts, cid or f"cp-{seq}", tag, consistent)


class JournalKit:
    """Builds journals of one implementation and reopens them (a restart, for the file journal)."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self.open: list = []

    def make(self, hard_limit_bytes: int | None = None, **kwargs):
        if self.kind == "memory":
            journal = MemoryJournal(hard_limit_bytes=hard_limit_bytes)
        else:
            from vra_appliance.recover.filejournal import FileJournal

            kwargs.setdefault("segment_bytes", 64 << 10)
            journal = FileJournal(self.root / "journal", hard_limit_bytes=hard_limit_bytes, **kwargs)
        self.open.append(journal)
        return journal

    def reopen(self, journal, **kwargs):
        if self.kind == "memory":
            return journal
        journal.close()
        return self.make(hard_limit_bytes=kwargs.pop("hard_limit_bytes", None), **kwargs)

    def close_all(self) -> None:
        for journal in self.open:
            journal.close()


JOURNAL_KINDS = ["memory", "file"]


@pytest.fixture(params=JOURNAL_KINDS)
def kit(request, tmp_path: Path) -> Iterator[JournalKit]:
    k = JournalKit(request.param, tmp_path)
    yield k
    k.close_all()


@pytest.fixture
def make_journal(kit: JournalKit) -> Callable:
    return kit.make
