"""Recoverability checks of checkpoints (zvm/orchestration/recoverability.py): ordering one. Its verdict
shows on the checkpoint in GET /v1/vpgs/{id}/checkpoints (the tag "Tested at ...: passed|FAILED"), in the
events (CheckpointVerified) and, when it failed, in the alerts (VpgCheckpointVerifyFailed)."""

from __future__ import annotations

from zvm.api import render, schemas
from zvm.api.context import note_entity, service
from zvm.api.queue import queue_task
from zvm.api.spec import ApiBlueprint
from zvm.api.vpgs import get_vpg
from zvm.orchestration.recoverability import KIND, check_vpg_can_verify

bp = ApiBlueprint("recoverability", __name__, tag="Vpgs", description="Virtual Protection Groups.")


@bp.operation("POST", "/vpgs/{vpgIdentifier}/checkpoints/{checkpointIdentifier}/verify", role="operator",
              summary="Check that a checkpoint recovers: boot its image in an isolated guest", status=202,
              response=schemas.ref("TaskId"), errors=[409])
def verify_checkpoint(vpgIdentifier, checkpointIdentifier):
    """Boots every VM of the VPG at the checkpoint on a scratch overlay, in a guest with no network, and runs
    its checks (file system, database integrity, acknowledged transactions present, none torn); the result
    is tagged on the checkpoint. Needs a guest runner on this (the recovery site's) ZVM: a 409 names the
    setting otherwise."""
    vpg = get_vpg(vpgIdentifier)
    cp = check_vpg_can_verify(vpg, checkpointIdentifier, service().config)
    note_entity(vpg.identifier, f"check checkpoint {cp.identifier} of VPG {vpg.name}")
    return render.task_id(queue_task(KIND, vpg=vpg.identifier,
                                     params={"Vpg": vpg.identifier, "Checkpoint": cp.identifier}))
