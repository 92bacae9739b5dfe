"""The dirty map's sidecar file per volume (``PATH.zdirty``): saved on clean stop, a generation marker while
running, so a restart after a crash is detected.

``open_volume`` reads the sidecar and at once replaces it with ``state: "running"`` and the next
generation. ``save_clean`` writes ``state: "clean"`` with the extents. Finding ``running`` at open means
the filter that had the volume did not stop cleanly: the volume is *unclean* (its dirty map is unknown,
so a delta sync must follow) and any extents in the file are ignored. Files are replaced atomically:
write a temporary file, fsync, rename, fsync the directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from vra_appliance.errors import DirtyStoreError
from vra_appliance.fileio import write_atomic

FORMAT = 1
SUFFIX = ".zdirty"


@dataclass
class VolumeRecord:
    volume: str
    path: Path  # the sidecar
    generation: int
    unclean: bool  # the previous run did not stop cleanly (or its sidecar is unreadable)
    first_start: bool  # no sidecar: the volume was never served by a filter
    state: dict = field(default_factory=dict)  # DirtyMap.volume_state() saved by the last clean stop


def sidecar_for(volume_path: str | os.PathLike) -> Path:
    return Path(os.fspath(volume_path) + SUFFIX)


def _write_atomic(path: Path, doc: dict) -> None:
    try:
        write_atomic(path, json.dumps(doc, separators=(",", ":")).encode())
    except OSError as exc:
        raise DirtyStoreError(f"cannot write dirty map sidecar {path}: {exc.strerror}; the volume's "
                              "directory must be writable by the filter") from exc


def open_volume(volume: str, volume_path: str | os.PathLike, size: int) -> VolumeRecord:
    """Read the sidecar of ``volume`` and mark it running with the next generation."""
    path = sidecar_for(volume_path)
    first_start = not path.exists()
    generation, unclean, state = 0, False, {}
    if not first_start:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            generation = int(doc.get("generation", 0))
            if doc.get("format") != FORMAT or doc.get("volume") != volume or doc.get("size") != size:
                unclean = True  # another volume's, or the volume was resized: nothing in it can be trusted
            elif doc.get("state") != "clean":
                unclean = True
            else:
                state = {"extents": doc.get("extents", []), "over_coverage": doc.get("over_coverage", 0)}
                unclean = bool(doc.get("unclean", False))  # not yet resynced since an earlier crash
        except (OSError, ValueError, TypeError, AttributeError):
            unclean = True
    generation += 1
    _write_atomic(path, {"format": FORMAT, "volume": volume, "size": size, "state": "running",
                         "generation": generation})
    return VolumeRecord(volume, path, generation, unclean, first_start, state)


def save_clean(record: VolumeRecord, size: int, state: dict, unclean: bool) -> None:
    """Clean stop: the extents and the generation; ``unclean`` carries a crash not yet resynced."""
    _write_atomic(record.path, {"format": FORMAT, "volume": record.volume, "size": size, "state": "clean",
                                "generation": record.generation, "unclean": unclean, **state})
