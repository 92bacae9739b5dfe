"""A checkpoint as its journal holds it: the one timestamp both sites show, stored on both at once.

A tagged checkpoint is taken through the protect VRAs, which answer once the recovery VRA journaled it;
the answer has no time. The time of a checkpoint is the journal's (the recovery VRA's ``ListCheckpoints``),
which the monitoring pass of either site copies later. So that the checkpoint is usable at once, and with
one timestamp, on both sites, the tagging task asks the journal for the entry as soon as the checkpoint is
durable: directly, when this site recovers the VPG; through the peer link (``note_checkpoint``, the
recovery ZVM answers from its VRA and stores the row itself) when a paired site does. Both sites then hold
the same row before the task completes.
"""

from __future__ import annotations

from zvm import db as zdb
from zvm import models as m
from zvm.errors import NotFoundError, ZvmError
from zvm.placement import installed_vras, vra_ref
from zvm.vra_control import CheckpointEntry


def journal_entry(zvm, vpg_identifier: str, checkpoint_id: str) -> CheckpointEntry:
    """The checkpoint as the VPG's recovery journal on this site lists it; NotFoundError if no VRA here
    journals it."""
    for vra in installed_vras(zvm.local_site()):
        try:
            if "recover" not in zvm.vra_control.status(vra_ref(vra)).get(vpg_identifier, {}):
                continue
            listed = zvm.vra_control.list_checkpoints(vra_ref(vra), vpg_identifier)
        except ZvmError:
            continue
        for entry in listed:
            if entry.checkpoint_id == checkpoint_id:
                return entry
    raise NotFoundError(f"no recovery journal of this site holds checkpoint {checkpoint_id} of VPG "
                        f"{vpg_identifier}", code="NotFound")


def store(vpg: m.Vpg, entry: CheckpointEntry) -> None:
    """The checkpoint's row, with the journal's timestamp (a row a monitoring pass added first is corrected)."""
    with zdb.transaction():
        m.Checkpoint.insert(identifier=entry.checkpoint_id, vpg=vpg, timestamp=entry.timestamp_s, tag=entry.tag,
                            consistent=entry.consistent).on_conflict_ignore().execute()
        m.Checkpoint.update(timestamp=entry.timestamp_s, tag=entry.tag, consistent=entry.consistent).where(
            m.Checkpoint.vpg == vpg, m.Checkpoint.identifier == entry.checkpoint_id).execute()
        if vpg.last_checkpoint_at is None or entry.timestamp_s > vpg.last_checkpoint_at:
            m.Vpg.update(last_checkpoint_at=entry.timestamp_s).where(m.Vpg.id == vpg.id).execute()
