"""Managed-object references by id, and the datacenter an entity lives in (shared by the OVF deploy and the
recovery VM code)."""

from __future__ import annotations

from pyVmomi import vim, vmodl

from zvm.errors import NotFoundError


def managed_object(vc, vimtype, moid: str, what: str):
    """The ``vimtype`` object ``moid`` of this vCenter; NotFoundError (naming ``what``) if there is none."""
    obj = vimtype(moid, vc.si._stub)
    try:
        obj.name  # noqa: B018 - a round trip that fails for a wrong moid
    except vmodl.fault.ManagedObjectNotFound as exc:
        raise NotFoundError(f"vCenter has no {what} {moid!r}") from exc
    return obj


def datacenter_of(entity) -> vim.Datacenter:
    node = entity
    while node is not None and not isinstance(node, vim.Datacenter):
        node = node.parent
    if node is None:
        raise NotFoundError(f"{entity} is not in a datacenter")
    return node
