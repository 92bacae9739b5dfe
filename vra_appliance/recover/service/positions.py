"""Where each protect VRA's stream stands in a VPG's journal, kept durable next to it (recovery side).

The recovery VRA interleaves the streams of several protect VRAs into the VPG's single journal sequence,
so the journal alone cannot say up to which stream seq of each peer it holds records. Before every journal
append the receiver writes (and fdatasyncs) an *entry* describing the append: its first VPG seq and, in
order, the groups of records it holds::

    ["w", peer, n]        n writes of the peer (n VPG seqs, n stream seqs)
    ["c", [peer, ...]]    one checkpoint record (one VPG seq; one marker of each participant)
    ["d", peer]           a marker of an abandoned checkpoint (no VPG seq; one stream seq)

After a journal append that stored nothing (JournalFullError, JournalGapError) an ``{"abort": n}`` entry
cancels entry n. On start, replaying the non-aborted entries against the journal's last seq L (groups whose
VPG seqs are all <= L, then a partly stored group's first records) gives every peer's durable stream seq:
exactly what was acknowledged, plus whatever a crash left stored but unacknowledged (which the peer's
resend then skips, because the journal did store it).

File: a sequence of frames ``u32 length | u32 CRC32C(body) | body`` (little-endian), the body a JSON
object; a torn or failing frame ends the log (it was never acknowledged). ``compact`` rewrites the file as
one ``{"snap": {peer: seq}, "n": next entry}`` frame (tmp file, fsync, rename, directory fsync).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from pathlib import Path

import crc32c

FRAME = struct.Struct("<II")
Group = tuple  # ("w", peer, n) | ("c", (peer, ...)) | ("d", peer)


def _frame(doc: dict) -> bytes:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return FRAME.pack(len(body), crc32c.crc32c(body)) + body


def _read_frames(data: bytes) -> tuple[list[dict], int]:
    """The documents of the verified frames, and the length they span (a torn tail follows it)."""
    docs, pos = [], 0
    while pos + FRAME.size <= len(data):
        length, crc = FRAME.unpack_from(data, pos)
        body = data[pos + FRAME.size : pos + FRAME.size + length]
        if len(body) != length or crc32c.crc32c(body) != crc:
            break
        try:
            docs.append(json.loads(body))
        except ValueError:
            break
        pos += FRAME.size + length
    return docs, pos


def replay(docs: Iterable[dict], last_vpg_seq: int) -> tuple[dict[str, int], int]:
    """Peers' durable stream seqs, and the next entry number, from the log's documents and the journal's L.

    An entry's records are stored up to L, and no further than the next entry's first VPG seq - 1: a
    later entry starting inside an earlier one means the earlier append stopped there (a crash cut it,
    and the restarted receiver went on from the journal's last seq)."""
    docs = list(docs)
    aborted = {d["abort"] for d in docs if "abort" in d}
    positions: dict[str, int] = {}
    next_n = 0
    entries = []
    for doc in docs:
        if "snap" in doc:
            positions = {k: int(v) for k, v in doc["snap"].items()}
            next_n = max(next_n, int(doc["n"]))
            entries = []
        elif "n" in doc:
            next_n = max(next_n, int(doc["n"]) + 1)
            if doc["n"] not in aborted:
                entries.append(doc)
    for i, doc in enumerate(entries):
        upto = last_vpg_seq
        if i + 1 < len(entries):
            upto = min(upto, int(entries[i + 1]["s"]) - 1)
        apply_groups(positions, doc["s"], doc["g"], upto)
    return positions, next_n


def apply_groups(positions: dict[str, int], first_vpg_seq: int, groups: Iterable, upto: int | None) -> int:
    """Advance ``positions`` by ``groups`` stored from ``first_vpg_seq``, as far as VPG seq ``upto``.
    Returns the next VPG seq."""
    seq = first_vpg_seq
    for g in groups:
        kind = g[0]
        if kind == "w":
            peer, n = g[1], int(g[2])
            room = n if upto is None else max(0, min(n, upto - seq + 1))
            positions[peer] = positions.get(peer, 0) + room
            seq += room
            if room < n:
                break
        elif kind == "c":
            if upto is not None and seq > upto:
                break
            for peer in g[1]:
                positions[peer] = positions.get(peer, 0) + 1
            seq += 1
        elif kind == "d":
            positions[g[1]] = positions.get(g[1], 0) + 1
        else:
            raise ValueError(f"unknown group kind {kind!r}")
    return seq


class PositionsLog:
    """The append-only positions file of one recovery VPG (see the module docstring)."""

    COMPACT_BYTES = 4 << 20

    def __init__(self, path: str | os.PathLike, last_vpg_seq: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = self.path.read_bytes() if self.path.exists() else b""
        docs, valid = _read_frames(data)
        self.positions, self._next_n = replay(docs, last_vpg_seq)
        self.existed = bool(docs)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        if valid != len(data):
            os.ftruncate(self._fd, valid)  # drop a torn tail frame
        os.lseek(self._fd, 0, os.SEEK_END)
        self._size = valid
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _append(self, doc: dict) -> None:
        frame = _frame(doc)
        os.write(self._fd, frame)
        os.fdatasync(self._fd)
        self._size += len(frame)

    def begin(self, first_vpg_seq: int, groups: list) -> int:
        """Durably record the groups of an append about to be made; returns the entry number."""
        n = self._next_n
        self._next_n += 1
        self._append({"n": n, "s": first_vpg_seq, "g": [list(g) if g[0] != "c" else ["c", list(g[1])] for g in groups]})
        return n

    def commit(self, first_vpg_seq: int, groups: list) -> None:
        """The append of the last ``begin`` is durable: advance the in-memory positions."""
        apply_groups(self.positions, first_vpg_seq, groups, None)

    def abort(self, n: int) -> None:
        """The append of entry ``n`` stored nothing."""
        self._append({"abort": n})

    def maybe_compact(self) -> bool:
        if self._size < self.COMPACT_BYTES:
            return False
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        frame = _frame({"snap": self.positions, "n": self._next_n})
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, frame)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._fsync_dir()
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = len(frame)
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
