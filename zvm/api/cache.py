"""Answers of GET calls kept per process until the state they show changes.

The database's revision counter (zvm.models.Revision, bumped by triggers on every change) is read first;
an answer cached at that revision is still exact. It is read before the answer is computed, so a cached
answer is never older than the revision it is filed under. Bounded (LRU, entries and bytes). Large answers
are kept gzipped too, for clients that accept it (compressed once per revision, not per request).
"""

from __future__ import annotations

import gzip
import threading
from collections import OrderedDict

from zvm import models as m

GZIP_FROM = 8192  # bytes: smaller answers are sent as they are


def current_revision() -> int:
    row = m.Revision._meta.database.execute_sql("SELECT value FROM revision WHERE id = 1").fetchone()
    return row[0] if row else 0


class ResponseCache:
    def __init__(self, max_entries: int = 512, max_bytes: int = 128 << 20):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[int, bytes, bytes | None]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str, revision: int) -> tuple[bytes, bytes | None] | None:
        """(body, gzipped body or None) cached at ``revision``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != revision:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1], entry[2]

    def put(self, key: str, revision: int, body: bytes) -> tuple[bytes, bytes | None]:
        """File an answer; large ones are also kept gzipped (compressed once, sent many times)."""
        packed = gzip.compress(body, compresslevel=5, mtime=0) if len(body) >= GZIP_FROM else None
        if len(body) > self.max_bytes // 4:
            return body, packed
        size = len(body) + len(packed or b"")
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1]) + len(old[2] or b"")
            self._entries[key] = (revision, body, packed)
            self._bytes += size
            while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
                _, (_, dropped, dropped_gz) = self._entries.popitem(last=False)
                self._bytes -= len(dropped) + len(dropped_gz or b"")
        return body, packed
