"""The task handlers: what each kind of task does. Registered with ``zvm.orchestration.tasks.handler``."""

from __future__ import annotations

from zvm import db as zdb
from zvm import models as m
from zvm.errors import NotFoundError
from zvm.orchestration import peers, vras  # noqa: F401 - register PairSite, UnpairSite, InstallVra, ...
from zvm.orchestration.tasks import TaskContext, handler


def _vpg(ctx: TaskContext) -> m.Vpg:
    vpg = m.Vpg.get_or_none(m.Vpg.identifier == ctx.task.vpg)
    if vpg is None:
        raise NotFoundError(f"VPG {ctx.task.vpg} no longer exists", code="VpgNotFound")
    return vpg


@handler("DeleteVpg")
def delete_vpg(ctx: TaskContext) -> dict:
    vpg = _vpg(ctx)
    ctx.progress(50, f"Removing VPG {vpg.name}")
    with zdb.transaction():
        vpg.delete_instance()
    ctx.progress(100, f"VPG {vpg.name} deleted")
    return {"VpgIdentifier": vpg.identifier}
