"""The in-memory journal: the reference implementation of the Journal contract, for tests and for the
transport's in-process wiring. Nothing survives the process; sizes are counted as the file journal would
store the records (docs/FORMAT.md), so hard limits behave alike."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence

from vra_appliance.errors import JournalClosedError, JournalFullError

from .format import encoded_size
from .journal import Entry, batch_vpg, new_records
from .records import CheckpointInfo, CheckpointRecord, Record, WriteRecord


class _VpgLog:
    def __init__(self) -> None:
        self.records: list[Record] = []  # stored, not trimmed, in seq order
        self.sizes: list[int] = []  # cumulative encoded size, parallel to records
        self.trimmed_bytes = 0  # cumulative size of what was trimmed
        self.last_seq = 0
        self.hard_limit: int | None = None

    @property
    def first_seq(self) -> int:
        return self.records[0].seq if self.records else self.last_seq + 1

    def size(self) -> int:
        return (self.sizes[-1] - self.trimmed_bytes) if self.sizes else 0

    def index(self, seq: int) -> int:
        """Position of the first stored record with seq >= the given one."""
        return max(0, min(len(self.records), seq - self.first_seq))


class MemoryJournal:
    """Journal and IndexedJournal in memory. ``hard_limit_bytes`` applies to every VPG unless set per VPG."""

    def __init__(self, hard_limit_bytes: int | None = None) -> None:
        self._default_limit = hard_limit_bytes
        self._vpgs: dict[str, _VpgLog] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _log(self, vpg: str, create: bool = False) -> _VpgLog | None:
        log = self._vpgs.get(vpg)
        if log is None and create:
            log = self._vpgs[vpg] = _VpgLog()
            log.hard_limit = self._default_limit
        return log

    # -- Journal ---------------------------------------------------------------------------------------

    def append(self, records: Sequence[WriteRecord | CheckpointRecord]) -> int:
        vpg = batch_vpg(records)
        with self._lock:
            if self._closed:
                raise JournalClosedError("journal is closed")
            log = self._log(vpg, create=True)
            assert log is not None
            fresh = new_records(vpg, log.last_seq, records)
            if not fresh:
                return log.last_seq
            sizes = [encoded_size(r) for r in fresh]
            needed = sum(sizes)
            if log.hard_limit is not None and log.size() + needed > log.hard_limit:
                raise JournalFullError(vpg, needed, max(0, log.hard_limit - log.size()))
            total = log.sizes[-1] if log.sizes else log.trimmed_bytes
            for record, size in zip(fresh, sizes, strict=True):
                if isinstance(record, WriteRecord) and not isinstance(record.data, bytes):
                    record = WriteRecord(
                        record.vpg, record.seq, record.timestamp_ns, record.volume, record.offset,
                        bytes(record.data),
                    )
                total += size
                log.records.append(record)
                log.sizes.append(total)
            log.last_seq = fresh[-1].seq
            return log.last_seq

    def last_seq(self, vpg: str) -> int:
        log = self._log(vpg)
        return log.last_seq if log else 0

    def checkpoints(self, vpg: str) -> list[CheckpointInfo]:
        with self._lock:
            log = self._log(vpg)
            if log is None:
                return []
            return [CheckpointInfo.from_record(r) for r in log.records if isinstance(r, CheckpointRecord)]

    def read(self, vpg: str, from_seq: int, to_seq: int | None = None) -> Iterator[Record]:
        with self._lock:
            log = self._log(vpg)
            if log is None:
                return iter(())
            hi = log.last_seq if to_seq is None else min(to_seq, log.last_seq)
            records = log.records[log.index(from_seq) : log.index(hi + 1)]
        return iter(records)

    def trim(self, vpg: str, upto_seq: int) -> None:
        with self._lock:
            log = self._log(vpg)
            if log is None or not log.records:
                return
            n = log.index(min(upto_seq, log.last_seq) + 1)
            if n:
                log.trimmed_bytes = log.sizes[n - 1]
                del log.records[:n]
                del log.sizes[:n]

    # -- IndexedJournal --------------------------------------------------------------------------------

    def entries(self, vpg: str, after_seq: int, upto_seq: int) -> Iterator[Entry]:
        for r in self.read(vpg, after_seq + 1, upto_seq):
            if isinstance(r, WriteRecord):
                yield Entry(r.seq, r.timestamp_ns, r.volume, r.offset, len(r.data), r.data)
            else:
                yield Entry(r.seq, r.timestamp_ns, None, 0, 0, None)

    def read_data(self, vpg: str, loc: object, skip: int, length: int) -> bytes:
        assert isinstance(loc, bytes)
        return loc[skip : skip + length]

    def first_seq(self, vpg: str) -> int:
        log = self._log(vpg)
        return log.first_seq if log else 1

    def size_bytes(self, vpg: str) -> int:
        log = self._log(vpg)
        return log.size() if log else 0

    def trim_point(self, vpg: str, free_bytes: int) -> int:
        with self._lock:
            log = self._log(vpg)
            if log is None or not log.records:
                return log.last_seq if log else 0
            target = log.trimmed_bytes + free_bytes
            i = bisect.bisect_left(log.sizes, target)
            return log.records[min(i, len(log.records) - 1)].seq

    def set_hard_limit(self, vpg: str, limit_bytes: int | None) -> None:
        with self._lock:
            log = self._log(vpg, create=True)
            assert log is not None
            log.hard_limit = limit_bytes

    def hard_limit(self, vpg: str) -> int | None:
        log = self._log(vpg)
        return log.hard_limit if log else self._default_limit

    def close(self) -> None:
        with self._lock:
            self._closed = True
