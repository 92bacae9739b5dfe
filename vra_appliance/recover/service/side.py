"""The recover roles of one VRA: file journals, ``RecoveryVPG``s, receivers, and images served over NBD.

For each recover role: a ``FileJournal`` (one per journal directory, shared by the VPGs configured with the
same directory), a ``RecoveryVPG`` (replicas, promoter, images; vra_appliance.recover), and a
``VpgReceiver`` that appends through the RecoveryVPG so that a full journal shows in its status. The
receiver's positions log lives in ``<journal dir>/streams/`` (beside the journal it describes).

Each VPG also answers the delta syncs of its protect VRAs (``checksums``: the checksum service on port 4005,
``vra_appliance.sync.grpc_peer``), over its volumes at the journal's tip.

A journal that fails verification when it is opened (corruption, not a torn tail: FileJournal cuts those)
puts the VPG in the ``journal-corrupt`` state: streams for it are refused with JOURNAL_ERROR and the status
says what to do. A torn tail that was cut is reported in the status too.

``discard_journal`` (the Control RPC DiscardJournal) is that resync's first half: it deletes the VPG's journal
and stream positions, resets the replica's promotion state, and takes the role up again empty. It writes a
``discard`` marker into the VPG's state directory first and removes it last, so a VRA that dies in between
finishes the discard when it takes the role up again (``configure``). The second half is the protect
VRAs' delta sync (docs/OPERATIONS.md, "Recovery journal corrupt").
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vra_appliance import errors
from vra_appliance.config import RecoverRole
from vra_appliance.errors import (
    ApplianceError,
    CorruptionError,
    DiscardRefused,
    ImageError,
    ImageNotOpenError,
    JournalUnusableError,
    UnknownVpgError,
)
from vra_appliance.fileio import fsync_dir, write_atomic
from vra_appliance.recover.filejournal import FileJournal
from vra_appliance.recover.promoter import RetentionPolicy
from vra_appliance.recover.replica import ReplicaVolume, reset_promotion_state
from vra_appliance.recover.segments import vpg_dirname
from vra_appliance.recover.service.receiver import RecoveryEndpoint, VpgReceiver
from vra_appliance.recover.vpg import RecoveryVPG
from vra_appliance.stream.transport import JOURNAL_ERROR, Refused
from vra_appliance.sync.replica_side import JournalTipChecksums

log = logging.getLogger(__name__)

DISCARD_MARKER = "discard"  # in the VPG's state directory while a journal discard is under way
# States in which a journal may be discarded without ``force`` (anything else is a healthy journal).
BROKEN_STATES = ("journal-corrupt", "journal-error")


@dataclass(frozen=True)
class DiscardResult:
    state_before: str
    records: int  # the journal's last seq before (0 when it could not be read)
    checkpoints: int
    message: str


class _ThroughRecoveryVpg:
    """The journal as the receiver sees it: appends go through the RecoveryVPG (full state, promoter)."""

    def __init__(self, rvpg: RecoveryVPG) -> None:
        self.rvpg = rvpg

    def append(self, records):
        return self.rvpg.append(records)

    def last_seq(self, vpg: str) -> int:
        return self.rvpg.last_seq()


class _Refusing:
    """Stands in for the receiver of a VPG whose journal cannot be used."""

    def __init__(self, vpg: str, message: str) -> None:
        self.vpg = vpg
        self.message = message

    def open_session(self, hello, peer, on_ack, on_refusal):
        raise Refused(JOURNAL_ERROR, self.message)


class _Recover:
    def __init__(self, role: RecoverRole) -> None:
        self.role = role
        self.rvpg: RecoveryVPG | None = None
        self.receiver: VpgReceiver | None = None
        self.error = ""
        self.truncated: list[str] = []
        self.checksums: JournalTipChecksums | None = None


class RecoverySide:
    def __init__(self, vra_id: str, state_dir: Path, nbd=None, *, align_timeout: float = 30.0) -> None:
        self.vra_id = vra_id
        self.state_dir = Path(state_dir)
        self.nbd = nbd
        self.align_timeout = align_timeout
        self.endpoint = RecoveryEndpoint()
        self._journals: dict[Path, FileJournal] = {}
        self._vpgs: dict[str, _Recover] = {}
        self._images: dict[str, list] = {}  # export name -> [vpg, image, opens]
        self._lock = threading.RLock()

    def _journal(self, directory: Path) -> FileJournal:
        directory = directory.resolve()
        journal = self._journals.get(directory)
        if journal is None:
            journal = self._journals[directory] = FileJournal(directory)
            for path, length in journal.truncated:
                log.warning("journal %s: torn tail cut at %d bytes", path, length)
        return journal

    def configure(self, role: RecoverRole) -> None:
        with self._lock:
            current = self._vpgs.get(role.vpg)
            if current is not None and current.rvpg is not None and _same_storage(current.role, role):
                self._retune(current, role)
                return
            self.remove(role.vpg)
            rec = _Recover(role)
            self._vpgs[role.vpg] = rec
            journal_dir = Path(role.journal_dir)
            try:
                journal = self._journal(journal_dir)
                if (self._state_dir(role.vpg) / DISCARD_MARKER).exists():
                    log.warning("VPG %s: finishing a journal discard a restart interrupted", role.vpg)
                    self._discard_files(role, journal)
                rec.truncated = [f"{p}: cut to {n} bytes" for p, n in journal.truncated if vpg_dirname(role.vpg) in str(p)]
                corrupt = journal.corruption(role.vpg)
                if corrupt is not None:
                    raise corrupt
                rvpg = RecoveryVPG(
                    role.vpg,
                    journal,
                    {v.volume: ReplicaVolume(Path(v.path), v.size) for v in role.volumes},
                    self.state_dir / "recover" / vpg_dirname(role.vpg),
                    _policy(role),
                )
                receiver = VpgReceiver(
                    role.vpg,
                    _ThroughRecoveryVpg(rvpg),
                    journal_dir / "streams" / f"{vpg_dirname(role.vpg)}.positions",
                    paired=set(role.protect_peers),
                    recover_id=self.vra_id,
                    align_timeout=self.align_timeout,
                )
            except (ApplianceError, OSError) as exc:
                rec.error = str(exc)
                kind = "corrupt" if isinstance(exc, CorruptionError) else "failed to open"
                log.error("VPG %s: journal %s: %s", role.vpg, kind, exc)
                self.endpoint.add(_Refusing(role.vpg, f"the recovery journal of VPG {role.vpg} {kind}: {exc}"))
                return
            rec.rvpg, rec.receiver = rvpg, receiver
            rvpg.start()
            receiver.start()
            self.endpoint.add(receiver)

    def _state_dir(self, vpg: str) -> Path:
        return self.state_dir / "recover" / vpg_dirname(vpg)

    def discard_journal(self, vpg: str, reason: str, force: bool = False) -> DiscardResult:
        """Delete the VPG's journal and stream positions and take its role up again empty (see the module
        docstring). Refused (DiscardRefused, nothing changed) for a healthy journal without ``force``, and for
        a recovery session holding images of the VPG (a delta sync reading the journal's tip is interrupted
        by then: it runs again); UnknownVpgError for a VPG with no recover role here."""
        with self._lock:
            rec = self._vpgs.get(vpg)
            if rec is None:
                raise _unknown(vpg)
            state = self._state_of(rec)
            if state not in BROKEN_STATES and not force:
                raise DiscardRefused(
                    f"the recovery journal of VPG {vpg} is healthy (state {state}): not discarded. Discarding it "
                    "loses every checkpoint of the VPG; ask again with force to do it anyway")
            records = checkpoints = 0
            if rec.rvpg is not None:
                if rec.checksums is not None:  # a delta sync's tip images: it is interrupted and runs again
                    rec.checksums.close_all()
                    rec.checksums = None
                ours = sum(1 for e in self._images.values() if e[0] == vpg)
                held = rec.rvpg.status().open_images - ours
                if held > 0:
                    raise DiscardRefused(
                        f"VPG {vpg} has a recovery session (failover test, failover or move) holding {held} "
                        "image(s) of its journal: close or commit it, then discard the journal")
                try:
                    records = rec.rvpg.last_seq()
                    checkpoints = len(rec.rvpg.checkpoints())
                except ApplianceError:
                    pass
            role = rec.role
            state_dir = self._state_dir(vpg)
            state_dir.mkdir(parents=True, exist_ok=True)
            # 1. the mark: from here on a restart finishes the discard instead of opening the old journal
            write_atomic(state_dir / DISCARD_MARKER, json.dumps(
                {"vpg": vpg, "reason": reason, "state_before": state, "at_ns": time.time_ns()}).encode())
            log.warning("VPG %s: discarding its recovery journal (state %s, %d records, %d checkpoints): %s",
                        vpg, state, records, checkpoints, reason)
            # 2. nothing of the VPG's may use the files any more (images closed, receiver and promoter stopped)
            self.remove(vpg)
            # 3. delete, 4. reopen empty
            self._discard_files(role, self._journal(Path(role.journal_dir)))
            self.configure(role)
            after = self._vpgs[vpg]
            if after.rvpg is None:
                raise JournalUnusableError(f"the journal of VPG {vpg} was discarded but its role did not open again: "
                                   f"{after.error}")
        return DiscardResult(state, records, checkpoints,
                             f"VPG {vpg}: recovery journal discarded ({records} records, {checkpoints} checkpoints); "
                             "streams start again from seq 1; the protect VRAs must run a delta sync")

    def _discard_files(self, role: RecoverRole, journal: FileJournal) -> None:
        """Delete the VPG's journal and stream positions, reset its promotion state, then remove the marker.
        Each step is idempotent: after a crash the whole runs again."""
        vpg = role.vpg
        journal.discard(vpg)
        streams = Path(role.journal_dir) / "streams"
        if streams.is_dir():
            for path in streams.glob(f"{vpg_dirname(vpg)}.positions*"):
                path.unlink(missing_ok=True)
            fsync_dir(streams)
        state_dir = self._state_dir(vpg)
        reset_promotion_state(vpg, state_dir)
        (state_dir / DISCARD_MARKER).unlink(missing_ok=True)
        fsync_dir(state_dir)
        log.warning("VPG %s: recovery journal discarded; the replica is at no checkpoint until a delta sync", vpg)

    def _state_of(self, rec: _Recover) -> str:
        for st in self._status_of([rec]):
            return st["state"]
        return "ok"

    def _retune(self, rec: _Recover, role: RecoverRole) -> None:
        """Same journal and replicas: change retention and pairing in place (images stay open)."""
        policy = _policy(role)
        # RecoveryVPG has no setter for its policy; both it and its promoter read these attributes.
        rec.rvpg.policy = policy
        rec.rvpg.promoter.policy = policy
        rec.rvpg.journal.set_hard_limit(role.vpg, policy.hard_limit_bytes)
        rec.receiver.paired = frozenset(role.protect_peers)
        rec.role = role
        rec.rvpg.promoter.wake()

    def remove(self, vpg: str) -> None:
        with self._lock:
            rec = self._vpgs.pop(vpg, None)
            self.endpoint.remove(vpg)
            if rec is None:
                return
            for name in [n for n, e in self._images.items() if e[0] == vpg]:
                self._images[name][2] = 1
                self.close_image(name)
            if rec.checksums is not None:
                rec.checksums.close_all()
            if rec.receiver is not None:
                rec.receiver.stop()
            if rec.rvpg is not None:
                rec.rvpg.close()

    def stop(self) -> None:
        for vpg in list(self._vpgs):
            self.remove(vpg)
        for journal in self._journals.values():
            journal.close()
        self._journals.clear()

    def get(self, vpg: str) -> _Recover | None:
        return self._vpgs.get(vpg)

    def checkpoints(self, vpg: str):
        rec = self._vpgs.get(vpg)
        if rec is None:
            raise _unknown(vpg)
        if rec.rvpg is None:
            raise JournalUnusableError(rec.error)
        return rec.rvpg.checkpoints()

    # -- delta syncs ----------------------------------------------------------------------------------------------
    def checksums(self, vpg: str) -> JournalTipChecksums | None:
        """The checksum side of the VPG's delta syncs (None: no recover role for it here)."""
        with self._lock:
            rec = self._vpgs.get(vpg)
            if rec is None:
                return None
            if rec.rvpg is None:
                raise errors.PermanentError(
                    f"the recovery journal of VPG {vpg} cannot be used ({rec.error}); fix it before a delta sync")
            if rec.checksums is None:
                rvpg = rec.rvpg
                rec.checksums = JournalTipChecksums({v.volume: v.size for v in rec.role.volumes},
                                                    lambda volume: _open_tip(rvpg, volume),
                                                    advance_tip=rvpg.advance_tip)
            return rec.checksums

    def protect_peers(self, vpg: str) -> frozenset[str] | None:
        rec = self._vpgs.get(vpg)
        return None if rec is None else frozenset(rec.role.protect_peers)

    # -- images ---------------------------------------------------------------------------------------------------
    def open_image(self, vpg: str, volume: str, checkpoint_id: str, writable: bool = False):
        if self.nbd is None:
            raise ImageError("this VRA serves no NBD (start it with --nbd-unix or --nbd-tcp)")
        with self._lock:
            rec = self._vpgs.get(vpg)
            if rec is None:
                raise _unknown(vpg)
            if rec.rvpg is None:
                raise JournalUnusableError(f"this VRA has no working recover role for VPG {vpg}: {rec.error}")
            name = f"{volume}@{checkpoint_id}"
            if name in self._images:
                if writable or not self._images[name][1].read_only:
                    raise ImageError(f"image {name} is already open; close it before opening it writable")
                self._images[name][2] += 1  # read-only: the same export, closed by its last user
                return name, self._images[name][1]
            scratch = None
            try:
                if writable:
                    scratch_dir = self.state_dir / "scratch"
                    scratch_dir.mkdir(parents=True, exist_ok=True)
                    scratch = scratch_dir / f"{vpg_dirname(vpg)}-{volume}@{checkpoint_id}.scratch"
                image = rec.rvpg.image(volume, checkpoint_id, scratch_path=scratch)
            except OSError as exc:  # the scratch file or the replica cannot be opened
                raise ImageError(str(exc)) from exc
            self.nbd.add_export(image, name)
            self._images[name] = [vpg, image, 1]
            return name, image

    def close_image(self, name: str) -> None:
        with self._lock:
            entry = self._images.get(name)
            if entry is None:
                raise ImageNotOpenError(f"no open image {name}")
            entry[2] -= 1
            if entry[2] > 0:
                return
            del self._images[name]
        self.nbd.remove_export(name, close=True)

    # -- status -------------------------------------------------------------------------------------------------
    def status(self) -> list[dict]:
        with self._lock:
            recs = list(self._vpgs.values())
        return self._status_of(recs)

    @staticmethod
    def _status_of(recs: list[_Recover]) -> list[dict]:
        out = []
        for rec in recs:
            if rec.rvpg is None or rec.receiver is None:
                out.append({"vpg": rec.role.vpg, "role": "recover", "state": "journal-corrupt", "error": rec.error,
                            "counters": {}})
                continue
            st = rec.receiver.status()
            js = rec.rvpg.status()
            counters = dict(st["counters"])
            listed = rec.rvpg.checkpoints() if js.state != "corrupt" else []
            consistent = [c.timestamp_ns for c in listed if c.consistent]
            counters.update(
                journal_bytes=js.journal_bytes,
                last_seq=js.last_seq,
                promoted_seq=js.promoted_seq,
                open_images=js.open_images,
                history_covered_s=js.history_covered_s,
                checkpoints_listed=len(listed),
                # the ZVM's RPO: the protect side's time of the newest consistent checkpoint durable here
                newest_consistent_checkpoint_s=max(consistent) / 1e9 if consistent else 0.0,
            )
            for peer, p in st["peers"].items():
                counters[f"peer_{peer}_durable_seq"] = p["durable_seq"]
            state = st["state"]
            if state == "ok" and js.state != "ok":
                state = f"journal-{js.state}"
            error = st["error"] or (js.promoter_error or "")
            if rec.truncated and state == "ok":
                error = "torn journal tail cut on start: " + "; ".join(rec.truncated)
            out.append({"vpg": rec.role.vpg, "role": "recover", "state": state, "error": error,
                        "needs_bitmap_sync": False, "counters": counters})
        return out


def _open_tip(rvpg: RecoveryVPG, volume: str):
    try:
        return rvpg.tip_image(volume)
    except CorruptionError as exc:
        raise errors.PermanentError(f"the recovery journal of VPG {rvpg.vpg} is corrupt: {exc}") from exc
    except (ApplianceError, OSError) as exc:
        raise errors.TransientError(f"cannot read VPG {rvpg.vpg} volume {volume} on the recovery side: "
                                         f"{exc}; the sync runs again") from exc


def _unknown(vpg: str) -> UnknownVpgError:
    return UnknownVpgError(vpg, "recover", "configure its recover role (ConfigureRecover), or fix the VPG id")


def _policy(role: RecoverRole) -> RetentionPolicy:
    return RetentionPolicy(
        history_s=role.history_s,
        hard_limit_bytes=role.hard_limit_bytes or None,
        warning_bytes=role.warning_bytes or None,
    )


def _same_storage(a: RecoverRole, b: RecoverRole) -> bool:
    return a.journal_dir == b.journal_dir and a.volumes == b.volumes
