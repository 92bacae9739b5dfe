"""The step runner: every check before any change; a failure (or Ctrl-C) undoes, newest first, what the run
applied, the failing step too, and names the step; Files puts back exactly what was there."""

from __future__ import annotations

import pytest

from installer.errors import Invalid, StepError
from installer.steps import Files, Step, run


def recorder():
    log: list[str] = []

    def step(name: str, fail: BaseException | None = None, check_fails: bool = False) -> Step:
        def apply():
            log.append(f"apply {name}")
            if fail is not None:
                raise fail

        def check():
            log.append(f"check {name}")
            if check_fails:
                raise Invalid(f"{name} cannot be done")

        return Step(name, apply, lambda: log.append(f"undo {name}"), check, fix=f"fix {name}.")

    return log, step


def test_all_checks_come_before_any_change():
    log, step = recorder()
    with pytest.raises(StepError) as exc:
        run([step("a"), step("b", check_fails=True), step("c")], lambda _: None)
    assert log == ["check a", "check b"]
    assert exc.value.step == "b" and "nothing was changed" in exc.value.message


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failure_undoes_the_run_newest_first_and_names_the_step(failure):
    log, step = recorder()
    with pytest.raises(StepError) as exc:
        run([step("a"), step("b"), step("c", fail=failure), step("d")], lambda _: None)
    assert log[4:] == ["apply a", "apply b", "apply c", "undo c", "undo b", "undo a"]
    assert exc.value.step == "c" and "What this run changed was undone" in exc.value.message
    assert ("disk full. fix c." in exc.value.message) if isinstance(failure, OSError) else "interrupted" in str(exc.value)


def test_files_undo_restores_replaced_content_and_removes_what_it_made(tmp_path):
    kept = tmp_path / "etc" / "kept.conf"
    kept.parent.mkdir()
    kept.write_text("before\n")
    kept.chmod(0o600)
    files = Files()
    files.mkdir(tmp_path / "etc" / "new" / "deeper", 0o750)
    files.write(tmp_path / "etc" / "new" / "deeper" / "a.toml", "x = 1\n", 0o640)
    files.write(kept, "after\n", 0o644)
    assert kept.read_text() == "after\n" and oct(kept.stat().st_mode & 0o777) == "0o644"
    files.undo()
    assert kept.read_text() == "before\n" and oct(kept.stat().st_mode & 0o777) == "0o600"
    assert not (tmp_path / "etc" / "new").exists()
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == ["kept.conf"]
