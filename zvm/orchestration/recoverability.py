"""Recoverability checks: boot a checkpoint's image in an isolated guest and judge what it finds
(the ``VerifyCheckpoint`` task; Zerto tags tested checkpoints "Tested at ...").

The task, run by the ZVM of the VPG's recovery site (it owns the recovery VRA's sessions):

1. opens a recovery session at the checkpoint on the recovery VRA (the failover test's path: point-in-time
   images with scratch overlays, served over NBD; the journal and the replica are never written);
2. boots every VM's first disk, one VM at a time, as a guest of guests/image.py in check mode, on the
   configured guest runner (``guest_runner = "local"``: QEMU on this ZVM's machine, reaching the export by
   the VRA's NBD socket or TCP port; no network in the guest): a read-only fsck after the journal replay,
   the database's ``PRAGMA integrity_check``, every transaction the protected guest acknowledged before the
   checkpoint's time present (from ``guest_reports_dir/<VM name>-reports.log`` when configured; a VM with
   no reports there runs no checked application and is skipped, said so in the findings), none torn;
3. closes the session (the scratch goes with it), whatever happened;
4. records the verdict: the checkpoint's tag gains "Tested at <UTC time>: passed|FAILED", an event
   ``CheckpointVerified`` says what each VM's check found, and the alert ``VpgCheckpointVerifyFailed`` is
   raised while the VPG's latest check failed (cleared by a later one that passes). A failed check also
   fails the task, with the finding.

Without a guest runner the task is refused at once, naming the setting; a VPG recovered elsewhere is
refused naming the site to ask.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from guests.runner import Guest, GuestError, GuestImage, acknowledged_before, available
from zvm import db as zdb
from zvm import models as m
from zvm.errors import ConflictError, NotFoundError, PermanentError, ValidationError, ZvmError
from zvm.monitoring.alerts import VERIFIED_EVENT, VERIFY_FAILED, reconcile_alerts, verdict_alerts
from zvm.orchestration.tasks import TaskContext, handler
from zvm.placement import vra_ref

log = logging.getLogger("zvm.recoverability")

KIND = "VerifyCheckpoint"
SCRATCH_LIMIT = 256 << 20  # what a check may write (journal replay, the database's own recovery)
BOOT_TIMEOUT = 300.0


class GuestRunnerMissing(ConflictError):
    pass


def runner_problem(config) -> str | None:
    """Why this ZVM cannot run a check (a sentence naming what to set or install), or None."""
    if getattr(config, "guest_runner", "") != "local":
        return ("no guest runner is configured: recoverability checks boot the checkpoint in QEMU on the "
                "recovery site's ZVM machine; set guest_runner = \"local\" (ZVM_GUEST_RUNNER=local) there, "
                "with qemu-system-x86 installed (docs/GUESTS.md)")
    return available()


def _image(config) -> GuestImage:
    if config.guest_image_dir:
        image = GuestImage(Path(config.guest_image_dir))
        if not image.kernel.is_file() or not image.initrd.is_file():
            raise PermanentError(f"guest_image_dir = {config.guest_image_dir!r} has no vmlinuz and initrd.gz: "
                                 "point it at the output of `python -m guests.image`")
        return image
    # building needs the source tree's image tooling (ovf/, mmdebstrap), which an installed ZVM lacks
    from guests.image import build

    return build()


def check_vpg_can_verify(vpg: m.Vpg, checkpoint_id: str, config) -> m.Checkpoint:
    """The checkpoint, if this ZVM can check it now; else the error to give (API and task both ask)."""
    problem = runner_problem(config)
    if problem:
        raise GuestRunnerMissing(problem)
    cp = m.Checkpoint.get_or_none(m.Checkpoint.vpg == vpg, m.Checkpoint.identifier == checkpoint_id)
    if cp is None:
        raise NotFoundError(f"VPG {vpg.name} has no checkpoint {checkpoint_id!r}: list them with "
                            f"GET /v1/vpgs/{vpg.identifier}/checkpoints")
    site = m.Site.get_or_none(m.Site.id == vpg.recovery_site_id)
    if site is not None and not site.is_local:
        raise ConflictError(f"VPG {vpg.name} recovers to site {site.name}: ask that site's ZVM to check its "
                            "checkpoints (it holds the journal)")
    if not vpg.recovery_vra:
        raise ConflictError(f"VPG {vpg.name} has no recovery VRA yet: nothing to check")
    return cp


def _tag(old: str | None, passed: bool, when: float) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when))
    note = f"Tested at {stamp} UTC: {'passed' if passed else 'FAILED'}"
    base = (old or "").split(" | Tested at ")[0] if old and not old.startswith("Tested at ") else ""
    return (f"{base} | {note}" if base else note)[:255]


@handler(KIND)
def verify_checkpoint(ctx: TaskContext) -> dict:
    vpg = m.Vpg.get_or_none(m.Vpg.identifier == ctx.param("Vpg"))
    if vpg is None:
        raise NotFoundError(f"VPG {ctx.param('Vpg')} no longer exists")
    config = ctx.zvm.config
    cp = check_vpg_can_verify(vpg, ctx.param("Checkpoint"), config)
    image = _image(config)
    vra = m.Vra.get_or_none(m.Vra.identifier == vpg.recovery_vra)
    if vra is None or not vra.control_address:
        raise PermanentError(f"VPG {vpg.name}: its recovery VRA is not known here")
    ref = vra_ref(vra)
    session = f"verify-{ctx.task.identifier}"
    started = time.time()
    ctx.progress(5, f"Opening the images of VPG {vpg.name} at checkpoint {cp.identifier}")
    info = ctx.zvm.vra_control.open_session(ref, vpg.identifier, session, cp.identifier, SCRATCH_LIMIT)
    if not info.ok:
        if info.code == "UNKNOWN_CHECKPOINT":
            raise ValidationError(info.message, field="CheckpointIdentifier")
        if info.code == "BUSY":
            raise ConflictError(f"VPG {vpg.name}: {info.message} (a recovery operation holds its images: check "
                                "again when it ends)")
        raise PermanentError(f"the recovery VRA refused the images: {info.message}")
    exports = {e.volume: e for e in info.exports}
    vms = list(m.VpgVm.select().where(m.VpgVm.vpg == vpg).order_by(m.VpgVm.id))
    findings: list[dict] = []
    workdir = Path(config.data_dir) / "recoverability" / ctx.task.identifier
    try:
        for i, vm in enumerate(vms):
            volumes = sorted(vm.volumes, key=lambda v: v.disk_key)
            if not volumes or volumes[0].volume_id not in exports:
                findings.append({"Vm": vm.name, "Passed": False, "Summary": "no disk in the checkpoint's images"})
                continue
            expect = 0
            if config.guest_reports_dir:
                reports = Path(config.guest_reports_dir) / f"{vm.name}-reports.log"
                if not reports.exists():  # a VM that runs no checked application (the lab's fio VMs)
                    findings.append({"Vm": vm.name, "Passed": None, "Summary": "not checked: no application "
                                     f"reports in {config.guest_reports_dir}"})
                    continue
                expect = acknowledged_before(reports, cp.timestamp)
            ctx.progress(10 + 80 * i // max(1, len(vms)), f"Booting {vm.name} at the checkpoint and checking it")
            guest = Guest(image, info.uri(exports[volumes[0].volume_id].export_name), workdir, f"vm{i}",
                          mode="check", expect=expect)
            t0 = time.monotonic()
            try:
                result = guest.start().check_result(BOOT_TIMEOUT)
                findings.append({"Vm": vm.name, "Passed": result.passed, "Summary": result.summary,
                                 "ExpectedTransactions": expect, "Seconds": round(time.monotonic() - t0, 1)})
            except GuestError as exc:
                findings.append({"Vm": vm.name, "Passed": False, "Seconds": round(time.monotonic() - t0, 1),
                                 "Summary": f"no verdict: {str(exc).splitlines()[0]}"})
            finally:
                guest.kill()
    finally:
        try:
            ctx.zvm.vra_control.close_session(ref, vpg.identifier, session)
        except ZvmError as exc:  # the VRA closes a session's scratch when it restarts, too
            log.warning("VPG %s: closing the check's session %s: %s", vpg.name, session, exc)
    checked = [f for f in findings if f["Passed"] is not None]
    passed = bool(checked) and all(f["Passed"] for f in checked)
    now = time.time()
    seconds = round(now - started, 1)
    text = (f"VPG {vpg.name}: checkpoint {cp.identifier} "
            f"({time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(cp.timestamp))} UTC) "
            f"{'passed' if passed else 'FAILED'} its recoverability check: "
            + "; ".join(f"{f['Vm']}: {f['Summary']}" for f in findings))
    with zdb.transaction():
        m.Checkpoint.update(tag=_tag(cp.tag, passed, now)).where(m.Checkpoint.id == cp.id).execute()
        m.Event.create(kind=VERIFIED_EVENT, category="Vpg", user="system", description=text, entity_id=vpg.identifier,
                       result="Succeeded" if passed else "Failed",  # not task=: the task's end rewrites those
                       detail=cp.identifier, started_at=started, completed_at=now)
        reconcile_alerts(verdict_alerts(), now, scope={VERIFY_FAILED})
    ctx.progress(100, text[:500])
    if not passed:
        raise PermanentError(text)
    return {"CheckpointIdentifier": cp.identifier, "Passed": passed, "Seconds": seconds, "Vms": findings}
