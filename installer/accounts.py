"""The service's system user (``zvm``, its own group, no login, home = the data directory).

Created with the system's ``useradd`` (``--prefix`` for a staging tree, so that the tree's own
/etc/passwd gets it) and read back from that tree's /etc/passwd, so a staged install's files are owned
by the uid the installed system will have.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from installer.layout import DATA_DIR, USER, Layout


def lookup(layout: Layout, name: str = USER) -> tuple[int, int] | None:
    """(uid, gid) of ``name`` in the tree's /etc/passwd, or None."""
    try:
        lines = layout.host("/etc/passwd").read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == name:
            return int(fields[2]), int(fields[3])
    return None


def tools_missing() -> list[str]:
    return [t for t in ("useradd", "userdel", "groupdel") if shutil.which(t) is None]


def _prefix(layout: Layout) -> list[str]:
    return ["--prefix", str(layout.root)] if layout.staged else []


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise OSError(f"{' '.join(argv[:1])} failed: {proc.stderr.strip() or proc.returncode}")


def create(layout: Layout, name: str = USER) -> tuple[int, int]:
    if layout.staged:
        Path(layout.host("/etc")).mkdir(parents=True, exist_ok=True)
    _run(["useradd", *_prefix(layout), "--system", "--user-group", "--home-dir", DATA_DIR, "--no-create-home",
          "--shell", "/usr/sbin/nologin", "--comment", "ZVR manager (ZVM)", name])
    found = lookup(layout, name)
    if found is None:
        raise OSError(f"useradd reported success but {name} is not in {layout.host('/etc/passwd')}")
    return found


def remove(layout: Layout, name: str = USER) -> None:
    if lookup(layout, name) is None:
        return
    _run(["userdel", *_prefix(layout), name])
    group = layout.host("/etc/group")
    if group.is_file() and any(line.split(":")[0] == name for line in group.read_text().splitlines()):
        _run(["groupdel", *_prefix(layout), name])
