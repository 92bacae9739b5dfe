"""Answers of GET calls kept per process until the state they show changes.

The database's revision counter (zvm.models.Revision, bumped by triggers on every change) is read first;
an answer cached at that revision (or a later one) is still exact. It is read before the answer is computed,
so a cached answer is never older than the revision it is filed under. Bounded (LRU, entries and bytes).

One build per change: when the revision moves while many clients poll the same list, the first request
builds the answer and the others wait for it, instead of each computing (and compressing) the same bytes.

Large answers are sent compressed to clients that accept it: zstd when the client lists it (a third smaller
than gzip here, and about six times cheaper to decode), else gzip. Each encoding is computed once per
revision, the first time a client asks for it, and kept with the answer.
"""

from __future__ import annotations

import gzip
import threading
from collections import OrderedDict
from collections.abc import Callable

import zstandard

from zvm import models as m

COMPRESS_FROM = 8192  # bytes: smaller answers are sent as they are
ENCODINGS = ("zstd", "gzip")  # the preference when a client accepts both equally
BUILD_WAIT = 30.0  # s: a request waiting for another's build of the same answer builds its own after this


def current_revision() -> int:
    row = m.Revision._meta.database.execute_sql("SELECT value FROM revision WHERE id = 1").fetchone()
    return row[0] if row else 0


def _compress(body: bytes, encoding: str) -> bytes:
    if encoding == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(body)
    return gzip.compress(body, compresslevel=5, mtime=0)


def choose_encoding(accepted, size: int) -> str | None:
    """The Content-Encoding to send an answer of ``size`` bytes with, given the client's Accept-Encoding
    (werkzeug's ``request.accept_encodings``; q-values honoured, ``q=0`` a refusal); None: as it is.

    zstd only when the client names it: ``*`` says any, but gzip is the one every client decodes."""
    if size < COMPRESS_FROM:
        return None
    named = {value.lower() for value, q in accepted}
    best, best_q = None, 0.0
    for encoding in ENCODINGS:
        if encoding == "zstd" and encoding not in named:
            continue
        q = accepted.quality(encoding)
        if q > best_q:
            best, best_q = encoding, q
    return best


class Answer:
    """One cached answer: the body, and its compressed forms as clients asked for them."""

    __slots__ = ("key", "revision", "body", "encodings", "counted", "_cache")

    def __init__(self, key: str, revision: int, body: bytes, cache: ResponseCache | None):
        self.key = key
        self.revision = revision
        self.body = body
        self.encodings: dict[str, bytes] = {}
        self.counted = 0  # bytes the cache counts for it while it is filed
        self._cache = cache

    def encoded(self, encoding: str | None) -> bytes:
        """The body in ``encoding`` (None: as it is), compressed the first time it is asked for."""
        if encoding is None:
            return self.body
        data = self.encodings.get(encoding)
        if data is None:
            data = _compress(self.body, encoding)
            if self._cache is not None:
                data = self._cache._add_encoding(self, encoding, data)
        return data


class _Build:
    """A build of one answer in progress; other requests for it wait on ``done``."""

    def __init__(self, revision: int):
        self.revision = revision
        self.done = threading.Event()
        self.answer: Answer | None = None
        self.waiting = 0


class ResponseCache:
    def __init__(self, max_entries: int = 512, max_bytes: int = 128 << 20):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, Answer] = OrderedDict()
        self._builds: dict[str, _Build] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.builds = 0
        self.shared = 0  # misses answered by another request's build

    def get(self, key: str, revision: int) -> Answer | None:
        """The answer cached at ``revision`` or later."""
        with self._lock:
            return self._hit(key, revision)

    def _hit(self, key: str, revision: int) -> Answer | None:
        answer = self._entries.get(key)
        if answer is None or answer.revision < revision:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return answer

    def answer(self, key: str, revision: int, build: Callable[[], bytes]) -> Answer:
        """The answer for ``key`` at ``revision`` or later: cached, or built by ``build()`` once however many
        requests ask for it at the same time (an error of the build is raised to the request that ran it;
        the others then build their own)."""
        with self._lock:
            cached = self._hit(key, revision)
            if cached is not None:
                return cached
            running = self._builds.get(key)
            if running is None or running.revision < revision:  # none, or one of an older state
                running = self._builds[key] = _Build(revision)
                leader = True
            else:
                running.waiting += 1
                leader = False
        if leader:
            try:
                built = self.put(key, revision, build())
                running.answer = built
                return built
            finally:
                with self._lock:
                    if self._builds.get(key) is running:
                        del self._builds[key]
                running.done.set()
        running.done.wait(BUILD_WAIT)
        built = running.answer
        if built is not None and built.revision >= revision:
            with self._lock:
                self.shared += 1
            return built
        return self.put(key, revision, build())

    def waiting(self, key: str) -> int:
        """How many requests wait for the build of ``key`` in progress (0: none runs)."""
        with self._lock:
            running = self._builds.get(key)
            return running.waiting if running is not None else 0

    def put(self, key: str, revision: int, body: bytes) -> Answer:
        """File an answer (unless a later one is filed already); returns the one kept."""
        self.builds += 1
        if len(body) > self.max_bytes // 4:
            return Answer(key, revision, body, None)  # too large to keep: compressed per request
        answer = Answer(key, revision, body, self)
        with self._lock:
            old = self._entries.get(key)
            if old is not None and old.revision > revision:
                return old
            if old is not None:
                self._forget(old)
            self._entries[key] = answer
            answer.counted = len(body)
            self._bytes += answer.counted
            self._evict()
        return answer

    def _add_encoding(self, answer: Answer, encoding: str, data: bytes) -> bytes:
        with self._lock:
            kept = answer.encodings.setdefault(encoding, data)  # two threads may have compressed at once
            if kept is data and self._entries.get(answer.key) is answer:
                answer.counted += len(data)
                self._bytes += len(data)
                self._evict()
            return kept

    def _forget(self, answer: Answer) -> None:
        del self._entries[answer.key]
        self._bytes -= answer.counted
        answer.counted = 0

    def _evict(self) -> None:
        while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
            self._forget(next(iter(self._entries.values())))
