"""Datastore paths as vSphere writes them (``"[datastore] dir/file.vmdk"``): parsing only, no I/O, so that
both the vCenter layer and the placement queries use one definition without importing pyVmomi."""

from __future__ import annotations


def split_datastore_path(path: str) -> tuple[str | None, str]:
    """``"[ds1] vm/disk.vmdk"`` -> ``("ds1", "vm/disk.vmdk")``."""
    path = path.strip()
    if path.startswith("[") and "]" in path:
        end = path.index("]")
        return path[1:end], path[end + 1:].strip()
    return None, path
