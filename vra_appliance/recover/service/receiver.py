"""The recovery VRA's side of replication: streams of protect VRAs -> one VPG sequence -> the journal.

``RecoveryEndpoint`` is the ``transport.Endpoint`` both transports call: it finds the VPG's
``VpgReceiver`` (UNKNOWN_VPG otherwise) and checks the peer (UNPAIRED_PEER). A ``VpgReceiver``

1. takes batches from each peer's session: decompresses, verifies the CRC32C (BAD_CHECKSUM: the peer
   resends), checks the stream seqs continue (GAP), and queues the records in an ``Aligner`` whose inputs
   are the peers;
2. in ``sync_once`` (the committer; ``start`` runs it in a thread) takes what the aligner lets out, gives
   each write and each checkpoint the next VPG seq, records the append in the ``PositionsLog``, appends to
   the journal (durable when it returns), and only then acknowledges each peer's new durable stream seq.

A full journal (JournalFullError) stores nothing: the peers whose records were in the append are refused
with JOURNAL_FULL (they keep their buffers and reconnect later), the VPG reports the error state, and the
next append that succeeds clears it. Nothing acknowledged is ever lost, because nothing is acknowledged
before the journal's append returned.

Every Welcome carries the journal's epoch (``load_journal_epoch``), new only when the VPG's journal and
positions are created or discarded: a protect VRA that sees it change knows records it had acknowledged are
gone and runs a delta sync.

Sequencing across protect VRAs is documented in docs/FORMAT.md, "Wire format (VRA to VRA)".
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vra_appliance.errors import ApplianceError
from vra_appliance.fileio import write_atomic
from vra_appliance.recover import (
    CheckpointRecord,
    JournalFullError,
    JournalGapError,
    WriteRecord,
)
from vra_appliance.recover.service.positions import PositionsLog
from vra_appliance.stream.aligner import Aligner, Checkpoint, Dropped, Item, Mark
from vra_appliance.stream.transport import (
    BAD_CHECKSUM,
    GAP,
    JOURNAL_ERROR,
    JOURNAL_FULL,
    PROTOCOL,
    PROTOCOL_VERSION,
    UNKNOWN_VPG,
    UNPAIRED_PEER,
    Ack,
    Hello,
    Refused,
    Welcome,
)
from vra_appliance.stream.wire import Batch, PayloadError, StreamMarker, StreamWrite, open_batch
from zvr_common.loop import Loop

log = logging.getLogger(__name__)


class _Session:
    """One open stream of one peer (the ``transport.Session`` of the receiver)."""

    def __init__(self, receiver: VpgReceiver, peer: str, welcome: Welcome, on_ack, on_refusal) -> None:
        self.receiver = receiver
        self.peer = peer
        self.welcome = welcome
        self.on_ack: Callable[[Ack], None] = on_ack
        self.on_refusal: Callable[[Refused], None] = on_refusal
        self.closed = False

    def submit(self, batch: Batch) -> None:
        self.receiver._submit(self, batch)

    def close(self) -> None:
        self.receiver._close_session(self)

    def refuse(self, exc: Refused) -> None:
        if not self.closed:
            self.closed = True
            self.on_refusal(exc)


@dataclass
class _Peer:
    durable: int = 0  # highest stream seq durable in the journal
    received: int = 0  # highest stream seq queued in the aligner (>= durable)
    pending_bytes: int = 0
    session: _Session | None = None
    batches: int = 0
    bad_batches: int = 0
    queued: dict = field(default_factory=dict)  # stream seq -> bytes, of records queued in the aligner


class VpgReceiver:
    """The recovery role of one VPG (see the module docstring)."""

    def __init__(
        self,
        vpg: str,
        journal,
        positions_path,
        *,
        paired: set[str] | frozenset[str],
        recover_id: str = "",
        max_pending_bytes: int = 64 << 20,
        align_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.vpg = vpg
        self.journal = journal
        self.paired = frozenset(paired)
        self.recover_id = recover_id
        self.max_pending_bytes = max_pending_bytes
        self.align_timeout = align_timeout
        self._clock = clock
        self._lock = threading.Condition()
        self._commit_lock = threading.Lock()
        self._aligner = Aligner()
        self._last_seq = journal.last_seq(vpg)
        self.positions = PositionsLog(positions_path, self._last_seq)
        self.journal_epoch = load_journal_epoch(positions_path)
        self._peers: dict[str, _Peer] = {
            p: _Peer(durable=s, received=s) for p, s in self.positions.positions.items()
        }
        self.state = "ok"
        self.error = ""
        self.counters = {
            "batches": 0,
            "records": 0,
            "bytes": 0,
            "wire_bytes": 0,
            "appends": 0,
            "bad_checksum": 0,
            "journal_full": 0,
            "checkpoints": 0,
            "checkpoints_abandoned": 0,
        }
        # The committer: woken by a submit; the interval is for abandoning checkpoints that never complete.
        self._loop = Loop(f"journal-{vpg}", 0.25, target=self._commit_all, logger=log)
        # After a JournalFullError: append no more than the room it reported, so that the journal fills up
        # to its limit (where the promoter starts promoting early) instead of refusing large appends forever.
        self._append_cap: int | None = None

    # -- sessions (any thread) ---------------------------------------------------------------------------
    def open_session(self, hello: Hello, peer: str | None, on_ack, on_refusal) -> _Session:
        if hello.protocol_version != PROTOCOL_VERSION:
            raise Refused(PROTOCOL, f"protocol version {hello.protocol_version}, this VRA speaks {PROTOCOL_VERSION}")
        if peer is None or peer != hello.peer_id or hello.peer_id not in self.paired:
            raise Refused(UNPAIRED_PEER, f"peer {hello.peer_id!r} is not paired with VPG {self.vpg!r} on this VRA")
        if self.state == "journal-error":
            raise Refused(JOURNAL_ERROR, self.error)
        with self._lock:
            state = self._peers.setdefault(hello.peer_id, _Peer())
            old = state.session
            self._reset_peer(hello.peer_id, state)
        if old is not None:
            old.refuse(Refused(GAP, "replaced by a newer stream of the same peer", 0, state.durable))
        with self._lock:
            if hello.resume_from > state.durable + 1:
                raise Refused(
                    GAP,
                    f"the journal holds stream seqs up to {state.durable}, the peer resumes from "
                    f"{hello.resume_from}: the records between are lost, the VPG needs a sync",
                    0,
                    state.durable,
                )
            session = _Session(self, hello.peer_id, Welcome(state.durable, self.recover_id, journal_epoch=self.journal_epoch), on_ack, on_refusal)
            state.session = session
            return session

    def _reset_peer(self, peer: str, state: _Peer) -> None:
        """Forget what the peer sent but is not durable (it resends from ``durable + 1``)."""
        self._aligner.reset_input(peer)
        state.received = state.durable
        state.pending_bytes = 0
        state.queued.clear()
        state.session = None
        self._lock.notify_all()

    def _close_session(self, session: _Session) -> None:
        with self._lock:
            session.closed = True
            state = self._peers.get(session.peer)
            if state is not None and state.session is session:
                state.session = None
            self._lock.notify_all()

    def _submit(self, session: _Session, batch: Batch) -> None:
        state = self._peers[session.peer]
        with self._lock:
            while (
                not session.closed
                and state.pending_bytes > self.max_pending_bytes
                and not self._loop.stopping
            ):
                self._lock.wait(0.5)
            if session.closed:
                return
        try:
            records = open_batch(batch)
        except PayloadError as exc:
            with self._lock:
                self.counters["bad_checksum"] += 1
                state.bad_batches += 1
                self._reset_peer(session.peer, state)
            log.warning("VPG %s: batch %d..%d from %s refused: %s", self.vpg, batch.first_seq, batch.last_seq, session.peer, exc)
            session.refuse(Refused(BAD_CHECKSUM, str(exc), batch.first_seq, state.durable))
            return
        now = self._clock()
        gap = None
        with self._lock:
            if session.closed:
                return
            expected = state.received + 1
            if batch.first_seq > expected:
                self._reset_peer(session.peer, state)
                gap = Refused(GAP, f"expected stream seq {expected}, got {batch.first_seq}", batch.first_seq, state.durable)
            else:
                self._queue(session.peer, state, records, now)
                self.counters["batches"] += 1
                self.counters["wire_bytes"] += batch.wire_bytes
            durable = state.durable
        if gap is not None:
            session.refuse(gap)
            return
        if batch.last_seq <= durable:
            session.on_ack(Ack(durable))

    def _queue(self, peer: str, state: _Peer, records: list, now: float) -> None:
        """Queue a batch's new records in the aligner (under the lock)."""
        size = 0
        for rec in records:
            if rec.seq <= state.received:
                continue  # resent; already queued or durable
            if isinstance(rec, StreamWrite):
                self._aligner.push(peer, (rec.seq, rec), now)
                nbytes = len(rec.data)
            else:
                self._aligner.push(peer, Mark(rec.checkpoint_id, (rec.seq, rec)), now)
                # Every participant's marker carries the same decision: the first one decides.
                parts = [p for p in rec.participants if p in self.paired] or [peer]
                self._aligner.decide(rec.checkpoint_id, parts)
                nbytes = 64
            state.queued[rec.seq] = nbytes
            size += nbytes
            state.received = rec.seq
        state.pending_bytes += size
        state.batches += 1
        self._lock.notify_all()
        self._loop.wake()

    # -- the committer -----------------------------------------------------------------------------------
    def sync_once(self, limit: int = 4096, max_bytes: int = 4 << 20) -> int:
        """Journal what the aligner lets out (up to ``limit`` items). Returns how many items (writes,
        checkpoints, dropped markers) were taken, 0 when there was nothing to do or the append failed."""
        with self._commit_lock:
            with self._lock:
                now = self._clock()
                abandoned = self._aligner.expire(now, self.align_timeout)
                if abandoned:
                    self.counters["checkpoints_abandoned"] += len(abandoned)
                    log.warning("VPG %s: checkpoints %s abandoned: a participant never reached them", self.vpg, abandoned)
                cap = max_bytes if self._append_cap is None else min(max_bytes, self._append_cap)
                out = self._aligner.pop(now, limit, cost=_item_bytes, max_cost=cap)
                if not out:
                    return 0
                first = self._last_seq + 1
                records, groups, touched = self._build(out, first)
            if not groups:
                return len(out)
            return len(out) if self._append(first, records, groups, touched) else 0

    def _build(self, out, first: int):
        seq = first
        records: list = []
        groups: list = []
        touched: dict[str, list[int]] = {}  # peer -> stream seqs consumed
        for item in out:
            # A peer that reconnected while its records were in the previous append resends them: they
            # are durable now, and must not be journaled twice.
            if isinstance(item, Item):
                sseq, w = item.value
                if sseq <= self._peers[item.input_id].durable:
                    continue
                records.append(WriteRecord(self.vpg, seq, w.timestamp_ns, w.volume, w.offset, w.data))
                seq += 1
                if groups and groups[-1][0] == "w" and groups[-1][1] == item.input_id:
                    groups[-1] = ("w", item.input_id, groups[-1][2] + 1)
                else:
                    groups.append(("w", item.input_id, 1))
                touched.setdefault(item.input_id, []).append(sseq)
            elif isinstance(item, Checkpoint):
                markers: list[StreamMarker] = [m.payload[1] for m in item.marks.values()]
                any_marker = markers[0]
                records.append(
                    CheckpointRecord(
                        self.vpg,
                        seq,
                        max(m.timestamp_ns for m in markers),
                        item.checkpoint_id,
                        any_marker.tag or None,
                        all(m.consistent for m in markers),
                    )
                )
                seq += 1
                peers = tuple(sorted(item.marks))
                groups.append(("c", peers))
                for p in peers:
                    touched.setdefault(p, []).append(item.marks[p].payload[0])
            elif isinstance(item, Dropped):
                if item.mark.payload[0] <= self._peers[item.input_id].durable:
                    continue
                groups.append(("d", item.input_id))
                touched.setdefault(item.input_id, []).append(item.mark.payload[0])
        return records, groups, touched

    def _append(self, first: int, records: list, groups: list, touched: dict[str, list[int]]) -> bool:
        entry = self.positions.begin(first, groups)
        try:
            if records:
                self.journal.append(records)
        except (JournalFullError, JournalGapError) as exc:
            self.positions.abort(entry)
            full = isinstance(exc, JournalFullError)
            refusals = []
            with self._lock:
                self.state, self.error = ("journal-full" if full else "error"), str(exc)
                if full:
                    self.counters["journal_full"] += 1
                    # Record overhead is small against the data; keep a margin for it.
                    self._append_cap = max(0, int((exc.available or 0) * 0.9))
                for peer in touched:
                    state = self._peers[peer]
                    session = state.session
                    self._reset_peer(peer, state)
                    if session is not None:
                        refusals.append((session, Refused(JOURNAL_FULL if full else GAP, str(exc), 0, state.durable)))
            for session, refusal in refusals:
                session.refuse(refusal)
            log.warning("VPG %s: %s", self.vpg, exc)
            return False
        except ApplianceError as exc:
            # The journal's state is unknown (closed after a failed fsync, corrupt): stop taking writes
            # until the VRA is restarted and the journal reopened; the positions entry stays valid.
            refusals = []
            with self._lock:
                self.state, self.error = "journal-error", str(exc)
                for peer, state in self._peers.items():
                    session = state.session
                    self._reset_peer(peer, state)
                    if session is not None:
                        refusals.append((session, Refused(JOURNAL_ERROR, str(exc), 0, state.durable)))
            for session, refusal in refusals:
                session.refuse(refusal)
            log.error("VPG %s: journal failed: %s", self.vpg, exc)
            return False
        acks: list[tuple[_Session, Ack]] = []
        with self._lock:
            self.positions.commit(first, groups)
            self._last_seq = first + len(records) - 1
            self._append_cap = None
            if self.state == "journal-full":
                self.state, self.error = "ok", ""
            self.counters["appends"] += 1
            self.counters["records"] += len(records)
            self.counters["checkpoints"] += sum(1 for g in groups if g[0] == "c")
            self.counters["bytes"] += sum(len(r.data) for r in records if isinstance(r, WriteRecord))
            for peer, seqs in touched.items():
                state = self._peers[peer]
                state.durable = self.positions.positions.get(peer, 0)
                state.received = max(state.received, state.durable)
                for sseq in seqs:
                    state.pending_bytes -= state.queued.pop(sseq, 0)
                if state.session is not None:
                    acks.append((state.session, Ack(state.durable)))
            self._lock.notify_all()
        self.positions.maybe_compact()
        for session, ack in acks:
            session.on_ack(ack)
        return True

    # -- loop ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop.start()

    def _commit_all(self) -> None:
        while self.sync_once():
            pass

    def stop(self) -> None:
        self._loop.stop(timeout=None)
        with self._lock:
            self._lock.notify_all()
            sessions = [p.session for p in self._peers.values() if p.session is not None]
        for s in sessions:
            s.refuse(Refused(UNKNOWN_VPG, f"VPG {self.vpg!r} stopped on this VRA"))
        self.positions.close()

    def status(self) -> dict:
        with self._lock:
            peers = {
                p: {"durable_seq": s.durable, "received_seq": s.received, "pending_bytes": s.pending_bytes,
                    "connected": s.session is not None}
                for p, s in self._peers.items()
            }
            return {
                "vpg": self.vpg,
                "role": "recover",
                "state": self.state,
                "error": self.error,
                "last_seq": self._last_seq,
                "journal_epoch": self.journal_epoch,
                "peers": peers,
                "blocked_on": {str(k): v for k, v in self._aligner.blocked_on().items()},
                "counters": dict(self.counters),
            }


def load_journal_epoch(positions_path) -> str:
    """The journal's epoch, kept in ``<positions log>.epoch`` (docs/FORMAT.md): read it, or make a new random
    one when there is none (the VPG's journal and positions were just created, or discarded: ``DiscardJournal``
    deletes ``<positions log>*``). It is durable before any Welcome carries it, so a restart with the journal
    intact answers with the same epoch, and only a lost journal changes it."""
    path = Path(f"{os.fspath(positions_path)}.epoch")
    try:
        epoch = path.read_text().strip()
        if epoch:
            return epoch
    except FileNotFoundError:
        pass
    epoch = secrets.token_hex(16)
    write_atomic(path, (epoch + "\n").encode())
    log.info("journal epoch %s (new) beside %s", epoch, positions_path)
    return epoch


def _item_bytes(value) -> int:
    return len(value[1].data) if isinstance(value, tuple) else 0


class RecoveryEndpoint:
    """Every recover role of this VRA, as the transports see it (``transport.Endpoint``)."""

    def __init__(self) -> None:
        self._receivers: dict[str, VpgReceiver] = {}
        self._lock = threading.Lock()

    def add(self, receiver: VpgReceiver) -> None:
        with self._lock:
            self._receivers[receiver.vpg] = receiver

    def remove(self, vpg: str) -> VpgReceiver | None:
        with self._lock:
            return self._receivers.pop(vpg, None)

    def get(self, vpg: str) -> VpgReceiver | None:
        with self._lock:
            return self._receivers.get(vpg)

    def receivers(self) -> list[VpgReceiver]:
        with self._lock:
            return list(self._receivers.values())

    def open_session(self, hello: Hello, peer: str | None, on_ack, on_refusal):
        receiver = self.get(hello.vpg)
        if receiver is None:
            raise Refused(UNKNOWN_VPG, f"this VRA has no recover role for VPG {hello.vpg!r}")
        return receiver.open_session(hello, peer, on_ack, on_refusal)


__all__ = ["RecoveryEndpoint", "VpgReceiver"]
