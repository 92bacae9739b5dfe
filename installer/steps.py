"""Steps that check, change, and undo, and the run that keeps an install from ever being half done.

A ``Step`` has a name (what the user reads), ``check()`` (run for every step before any step changes
anything), ``apply()`` and ``undo()``. ``run`` checks all, then applies in order; when one fails it undoes,
newest first, every step this run applied (the failing one too: its undo copes with a partial apply), and
raises ``StepError`` naming the step, the cause, and what to fix. ``Files`` records what the file steps
change (new files and directories, the former content of replaced ones) so undoing them is exact.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from installer.errors import Invalid, StepError
from zvm.errors import ZvmError


def _nothing() -> None:
    pass


@dataclass
class Step:
    name: str
    apply: Callable[[], None]
    undo: Callable[[], None] = _nothing
    check: Callable[[], None] = _nothing
    fix: str = ""  # what to do when apply fails, beyond what the error says


def run(steps: list[Step], out: Callable[[str], None]) -> None:
    for step in steps:
        try:
            step.check()
        except (OSError, ZvmError, Invalid) as exc:
            raise StepError(step.name, f"{exc}{' ' + step.fix if step.fix else ''} (nothing was changed)") from None
    done: list[Step] = []
    for i, step in enumerate(steps, 1):
        out(f"[{i}/{len(steps)}] {step.name}")
        try:
            step.apply()
        except BaseException as exc:  # noqa: BLE001 - any failure, Ctrl-C too, undoes the run before it is reported
            failures = undo(done + [step], out)
            if isinstance(exc, KeyboardInterrupt):
                text = "interrupted."
            else:
                text = f"{_reason(exc)}.{' ' + step.fix if step.fix else ''}"
            text += (" What this run changed was undone." if not failures else
                     " Undoing left: " + "; ".join(failures))
            raise StepError(step.name, text) from exc
        done.append(step)


def undo(steps: list[Step], out: Callable[[str], None]) -> list[str]:
    failures = []
    for step in reversed(steps):
        try:
            step.undo()
        except Exception as exc:  # noqa: BLE001 - keep undoing the others, then report what is left
            failures.append(f"{step.name}: {_reason(exc)}")
    if steps:
        out(f"undone: {', '.join(s.name for s in reversed(steps))}")
    return failures


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Invalid):
        return exc.message
    return str(exc).rstrip(".") or type(exc).__name__


@dataclass
class Files:
    """File changes of one run, undone exactly: created paths removed, replaced files restored."""

    created: list[Path] = field(default_factory=list)
    replaced: list[tuple[Path, bytes, int, int, int]] = field(default_factory=list)

    def mkdir(self, path: Path, mode: int, uid: int = 0, gid: int = 0) -> None:
        missing = []
        p = path
        while not p.exists():
            missing.append(p)
            p = p.parent
        path.mkdir(parents=True, exist_ok=True)
        self.created += reversed(missing)
        os.chown(path, uid, gid)
        path.chmod(mode)

    def write(self, path: Path, data: bytes | str, mode: int, uid: int = 0, gid: int = 0) -> None:
        data = data.encode() if isinstance(data, str) else data
        if path.exists():
            st = path.stat()
            self.replaced.append((path, path.read_bytes(), st.st_mode & 0o7777, st.st_uid, st.st_gid))
        else:
            self.created.append(path)
        tmp = path.with_name(f".{path.name}.zvm-install")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chown(tmp, uid, gid)
        tmp.chmod(mode)
        tmp.replace(path)

    def remove(self, path: Path) -> None:
        """Remove a file, keeping its content to put back."""
        if path.is_file() or path.is_symlink():
            st = path.lstat()
            data = path.read_bytes() if path.is_file() else b""
            self.replaced.append((path, data, st.st_mode & 0o7777, st.st_uid, st.st_gid))
            path.unlink()

    def undo(self) -> None:
        for path, data, mode, uid, gid in reversed(self.replaced):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.chown(path, uid, gid)
            path.chmod(mode)
        for path in reversed(self.created):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.created.clear()
        self.replaced.clear()
