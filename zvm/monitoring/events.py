"""The events monitoring records, each once, even for what happened between two passes:

- ``VpgStatusChanged``: a VPG's status or substatus changed (whoever changed it: monitoring, a task, the
  user), with the reason monitoring knows;
- ``VpgSync``: a sync a protect VRA ran (InitialSync, BitmapSync, DeltaSync), from the VRA's own reports,
  which carry its start and end times: a sync of a few milliseconds that no pass saw running is still one
  event, with its real times (the VRA keeps its last 16 reports; the ZVM reads them every pass);
- ``RecoveryJournalLost``: the recovery side lost records it had acknowledged (the protect VRA's counter
  ``recovery_journal_lost`` grew: it saw a lower durable position and delta-syncs; or the recovery VRA cut a
  torn journal tail when it started).

Each event's ``detail`` is its key (kind, volume, start); a key already in the database is not recorded again,
so a restarted ZVM reading the same VRA reports adds nothing.
"""

from __future__ import annotations

import time

from zvm import models as m

KINDS = ("VpgStatusChanged", "VpgSync", "RecoveryJournalLost")


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


class EventLog:
    """Keys already recorded, per VPG (loaded from the database on first sight); writes go into the caller's
    transaction through ``pending``."""

    def __init__(self) -> None:
        self._keys: dict[str, set[str]] = {}
        self._lost: dict[tuple[str, str], float] = {}  # (VRA, VPG) -> recovery_journal_lost last seen
        self.pending: list[dict] = []

    def _known(self, vpg: str) -> set[str]:
        keys = self._keys.get(vpg)
        if keys is None:
            since = time.time() - 2 * 86400
            keys = self._keys[vpg] = {e.detail for e in m.Event.select(m.Event.detail).where(
                m.Event.entity_id == vpg, m.Event.kind.in_(KINDS[1:]), m.Event.started_at >= since)}
        return keys

    def _add(self, vpg: str, key: str, **fields) -> None:
        known = self._known(vpg)
        if key in known:
            return
        known.add(key)
        if len(known) > 4096:
            known.clear()  # reloaded from the database on next use
            del self._keys[vpg]
        self.pending.append({"category": "Vpg", "user": "system", "entity_id": vpg, "detail": key, **fields})

    def syncs(self, vpg: m.Vpg, vra_name: str, reports: list[dict]) -> None:
        for r in reports:
            started = r.get("started_s") or 0.0
            if not started:
                continue
            finished = r.get("finished_s")
            key = f"{r['kind']} {r['volume']} {int(started * 1e6)}" + ("" if finished else " running")
            if finished:
                what = (f"ran from {clock(started)} to {clock(finished)} ({finished - started:.2f} s, "
                        f"{r.get('bytes', 0) / (1 << 20):.1f} MB)")
                if r.get("error"):
                    what += f"; it stopped: {r['error'][:200]}"
            else:
                what = f"started at {clock(started)}"
            self._add(vpg.identifier, key, kind="VpgSync", description=f"VPG {vpg.name}: {r['kind']} of volume "
                      f"{r['volume']} on VRA {vra_name} {what}", started_at=started, completed_at=finished,
                      result=("Failed" if r.get("error") else "Succeeded") if finished else "InProgress")

    def journal_lost(self, vpg: m.Vpg, vra_id: str, vra_name: str, count: float, now: float) -> None:
        last = self._lost.get((vra_id, vpg.identifier))
        self._lost[(vra_id, vpg.identifier)] = count
        if count <= 0 or (last is not None and count <= last):
            return  # nothing new (a lower count: the VRA restarted and counts again from 0)
        key = f"RecoveryJournalLost {vra_id} {int(count)} at {int(now)}"
        if last is None and any(k.startswith(f"RecoveryJournalLost {vra_id} ") for k in self._known(vpg.identifier)):
            return  # a ZVM restart: the loss was recorded before
        self._add(vpg.identifier, key, kind="RecoveryJournalLost", result="Failed", started_at=now,
                  completed_at=now, description=f"VPG {vpg.name}: the recovery side lost records it had "
                  f"acknowledged; the protect VRA {vra_name} saw it and sends them again (delta sync)")

    def torn_tail(self, vpg: m.Vpg, error: str, now: float) -> None:
        self._add(vpg.identifier, f"RecoveryJournalLost {error[:200]}", kind="RecoveryJournalLost", result="Failed",
                  started_at=now, completed_at=now,
                  description=f"VPG {vpg.name}: the recovery VRA {error[:300]}; what was lost is sent again")

    def status_changed(self, vpg: m.Vpg, before: tuple[str, str], after: tuple[str, str], reason: str,
                       now: float) -> None:
        self.pending.append({
            "kind": "VpgStatusChanged", "category": "Vpg", "user": "system", "entity_id": vpg.identifier,
            "detail": "/".join(after), "started_at": now, "completed_at": now, "result": "Succeeded",
            "description": f"VPG {vpg.name}: {'/'.join(before)} -> {'/'.join(after)}"
                           + (f" ({reason})" if reason else "")})

    def write(self) -> None:
        """Inside the pass's transaction; ``pending`` is emptied by the caller once it committed."""
        for fields in self.pending:
            m.Event.create(**fields)
