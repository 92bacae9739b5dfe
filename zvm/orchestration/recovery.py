"""Recovery operations: failover test, failover and move, with their commit, rollback and stop.

They are run by the ZVM of the VPG's recovery site (the site the VMs recover to), which owns what they
need: the recovery VRA (its sessions of point-in-time images with scratch overlays, served over NBD:
vra_appliance/recovery_ops.py) and the recovery vCenter. The protected site's ZVM does its part when asked
(zvm.orchestration.protected_side: mark the VPG, shut the source VMs down, take a move's final checkpoint,
power them on again on rollback, hand the VPG over on commit), over the peer service. Which operations may
start or follow, and their recording (admission), is zvm.orchestration.operations'; this module runs them.

Each operation is a ``RecoveryOperation`` row, and each of its tasks records there what it did as it goes
(the session and its checkpoint, every VM created, every VM powered on, the boot schedule), so a task that
a restart of the ZVM interrupted runs again and picks up where it was (``RESUMABLE`` tasks); a VM created
just before a crash is found again by its ``zvr.operation`` extraConfig. A start that fails, or cannot be
resumed, is rolled back: the recovery VMs deleted (never their replica disks), the session closed, the
source VMs powered on again, the VPG protecting as before.

    FailoverTest  Starting -> Running       -> (failoverTestStop) Stopping -> Stopped
    Failover      Starting -> BeforeCommit  -> (FailoverCommit) Committing -> Committed
    Move                                    -> (FailoverRollback) RollingBack -> RolledBack
    any start that fails                    -> RollingBack -> Failed

Phases of a start (their seconds are kept in ``phases``; the RTO is ready_at - started_at):
``Prepare`` (the protected site: begin, shutdown by policy, a move's final checkpoint), ``OpenImages``
(the recovery VRA's session at the checkpoint), ``CreateVms`` (with re-IP), ``PowerOn`` (by boot group,
each group's delay after it), ``Verify`` (every export is served).
"""

from __future__ import annotations

import logging
import time

from zvm import db as zdb
from zvm import models as m
from zvm.errors import (
    ConflictError,
    NotFoundError,
    PermanentError,
    TransientError,
    ValidationError,
    ZvmError,
)
from zvm.monitoring.alerts import refresh_alerts
from zvm.orchestration import protected_side
from zvm.orchestration.operations import SUBSTATUS, order_next
from zvm.orchestration.reverse import commit_operation
from zvm.orchestration.tasks import TaskContext, handler
from zvm.placement import peer_client, vra_ref
from zvm.vcenter.recovery import IpSettings, RecoveryDisk, RecoveryVmSpec

log = logging.getLogger("zvm.recovery")

PING_TIMEOUT = 5.0
OPERATION_KEY = "zvr.operation"


# --- running --------------------------------------------------------------------------------------------

def _op(ctx: TaskContext) -> m.RecoveryOperation:
    op = m.RecoveryOperation.get_or_none(m.RecoveryOperation.identifier == ctx.param("Operation"))
    if op is None:
        raise NotFoundError(f"recovery operation {ctx.param('Operation')} no longer exists")
    return op


class Recovery:
    """One task's work on one operation (see the module docstring)."""

    def __init__(self, ctx: TaskContext, op: m.RecoveryOperation):
        self.ctx = ctx
        self.zvm = ctx.zvm
        self.op = op
        self.vpg = m.Vpg.get_or_none(m.Vpg.identifier == op.vpg)
        self._vc = None
        self._rv = None

    # -- bookkeeping ----------------------------------------------------------------------------------
    def save(self, **fields) -> None:
        for key, value in fields.items():
            setattr(self.op, key, value)
        names = list(fields) or ["vms", "phases", "params", "sources", "nbd"]
        values = {name: getattr(self.op, name) for name in names}
        with zdb.transaction():
            m.RecoveryOperation.update(**values).where(m.RecoveryOperation.id == self.op.id).execute()

    def timed(self, phase: str, started: float) -> None:
        phases = dict(self.op.phases or {})
        phases[phase] = round(phases.get(phase, 0.0) + time.time() - started, 3)
        self.save(phases=phases)

    def set_vpg(self, **fields) -> None:
        if self.vpg is not None:
            with zdb.transaction():
                m.Vpg.update(updated_at=time.time(), **fields).where(m.Vpg.id == self.vpg.id).execute()

    def progress(self, percent: int, step: str) -> None:
        self.ctx.progress(percent, step)

    # -- the two sites' services ----------------------------------------------------------------------
    @property
    def rv(self):
        """The recovery vCenter's recovery functions (zvm.vcenter.recovery), one session per task."""
        if self._rv is None:
            self._vc = self.zvm.vcenter_factory(self.zvm.local_site())
            self._rv = self._vc.recovery()
        return self._rv

    def close(self) -> None:
        if self._vc is not None:
            self._vc.close()
            self._vc = self._rv = None

    def vra(self):
        ident = self.op.recovery_vra or (self.vpg.recovery_vra if self.vpg else None)
        vra = m.Vra.get_or_none(m.Vra.identifier == ident) if ident else None
        if vra is None or not vra.control_address:
            raise PermanentError(f"VPG {self.op.vpg_name}: the recovery VRA holding its journal is not known here "
                                 "(commit the VPG's settings again on its protected site)")
        return vra_ref(vra)

    def protected(self, action: str, body: dict | None = None, timeout: float = 30.0) -> dict:
        """The protected site's part (zvm.orchestration.protected_side), here or over the peer service."""
        site = m.Site.get_or_none(m.Site.identifier == self.op.protected_site)
        body = {**(body or {}), "Action": action, "Kind": self.op.kind}
        if site is None:
            raise NotFoundError(f"the protected site of VPG {self.op.vpg_name} is no longer known")
        if site.is_local:
            return protected_side.handle(self.zvm, None, self.op.vpg, body)
        # a site that does not answer is found out in seconds, not after the long call's timeout
        peer_client(self.zvm, site, timeout=PING_TIMEOUT).ping()
        return peer_client(self.zvm, site, timeout=timeout).vpg_recovery(self.op.vpg, action, body)

    # -- start ----------------------------------------------------------------------------------------
    def start(self) -> dict:
        op = self.op
        if self.vpg is None:
            raise NotFoundError(f"VPG {op.vpg_name} no longer exists", code="VpgNotFound")
        if self.ctx.resumed:
            self.progress(self.ctx.task.progress, f"Resuming the {op.kind} of VPG {op.vpg_name} after a restart")
        if op.kind == "FailoverTest":
            if "Prepare" not in (op.phases or {}):
                started = time.time()
                try:
                    self.protected("begin")
                except ZvmError as exc:  # a test needs nothing of the protected site
                    log.info("VPG %s: the protected site was not told of the test: %s", op.vpg_name, exc)
                self.timed("Prepare", started)
        else:
            self.prepare()
        self.open_images()
        self.create_vms()
        self.power_on()
        self.verify()
        now = time.time()
        policy = op.params.get("CommitPolicy", "None") if op.kind != "FailoverTest" else None
        deadline = None
        if policy in ("Commit", "Rollback"):
            deadline = now + float(op.params.get("CommitPolicyTimeoutInSeconds", 3600))
        state = "Running" if op.kind == "FailoverTest" else "BeforeCommit"
        self.save(state=state, ready_at=op.ready_at or now, commit_deadline=deadline)
        self.set_vpg(substatus=SUBSTATUS[op.kind][1])
        rto = op.ready_at - op.started_at
        after = {"Commit": "commits", "Rollback": "rolls back"}.get(policy or "", "")
        tail = (f"; it {after} in {deadline - now:.0f} s unless ordered before" if deadline else
                "; commit or roll it back" if op.kind != "FailoverTest" else "; stop the test when done")
        self.progress(100, f"{len(op.vms)} VMs of VPG {op.vpg_name} up at checkpoint {op.checkpoint} in "
                           f"{rto:.1f} s{tail}")
        return self.result(RtoSeconds=round(rto, 3))

    def result(self, **extra) -> dict:
        op = self.op
        return {"OperationIdentifier": op.identifier, "VpgIdentifier": op.vpg, "CheckpointIdentifier": op.checkpoint,
                "Phases": {k: v for k, v in (op.phases or {}).items() if isinstance(v, float | int)},
                "Vms": [{"SourceVm": v["Source"], "RecoveryVm": v["RecoveryVm"], "Name": v["RecoveryName"],
                         "Disks": [{"Volume": d["Volume"], "Export": d["Export"], "Uri": d["Uri"]} for d in v["Disks"]]}
                        for v in op.vms], **extra}

    def prepare(self) -> None:
        """The protected site: the VPG shows the operation; the source VMs shut down by the policy; a move's
        final checkpoint. A failover goes on without the protected site when it does not answer."""
        op = self.op
        if "Prepare" in (op.phases or {}):
            return
        started = time.time()
        params = op.params
        self.progress(5, f"Asking site of VPG {op.vpg_name}'s VMs to prepare the {op.kind.lower()}")
        try:
            answer = self.protected("begin")
            self.save(sources=answer.get("PowerStates") or {})
            if op.kind == "Move":
                policy = "ForceShutdown" if params.get("ForceShutdown", True) else "Shutdown"
                self.progress(10, "Shutting the source VMs down, then a final checkpoint after their last writes")
                timeout = float(params.get("ShutdownTimeoutInSeconds", 300))
                answer = self.protected("shutdown", {"Policy": policy, "TimeoutSeconds": timeout,
                                                     "FinalCheckpoint": True}, timeout=timeout + 120)
                cp = answer["Checkpoint"]
                self.save(checkpoint=cp["Identifier"], checkpoint_time=cp["Time"])
            elif params.get("ShutdownPolicy", "None") != "None":
                timeout = float(params.get("ShutdownTimeoutInSeconds", 300))
                self.progress(10, f"Shutting the source VMs down ({params['ShutdownPolicy']})")
                self.protected("shutdown", {"Policy": params["ShutdownPolicy"], "TimeoutSeconds": timeout},
                               timeout=timeout + 60)
        except TransientError as exc:
            if op.kind == "Move":
                raise ConflictError(f"the protected site does not answer ({exc}): a move needs both sites; "
                                    "fail over instead") from exc
            self.save(params={**params, "ProtectedSiteReached": False})
            log.warning("VPG %s: failing over without the protected site: %s", op.vpg_name, exc)
        self.timed("Prepare", started)

    def open_images(self) -> None:
        op = self.op
        if op.nbd:
            info = self.zvm.vra_control.get_session(self.vra(), op.vpg, op.session)
            if not info.ok or info.state != "open":
                raise PermanentError(f"the recovery VRA no longer serves the session of this {op.kind} "
                                     f"({info.message or info.state}): it is rolled back")
            return
        started = time.time()
        self.progress(20, f"Opening the images of VPG {op.vpg_name} at checkpoint "
                          f"{op.checkpoint or '(the newest)'} with scratch overlays")
        limit = int(op.params.get("ScratchLimitInMB") or 0) << 20
        info = self.zvm.vra_control.open_session(self.vra(), op.vpg, op.session, op.checkpoint or "", limit)
        if not info.ok:
            if info.code == "UNKNOWN_CHECKPOINT":
                raise ValidationError(info.message, field="CheckpointIdentifier")
            if info.code == "BUSY":
                raise ConflictError(info.message)
            raise PermanentError(f"the recovery VRA refused the images: {info.message}")
        exports = {e.volume: e for e in info.exports}
        vms = [dict(v) for v in op.vms]
        for vm in vms:
            vm["Disks"] = [{**d, "Export": exports[d["Volume"]].export_name,
                            "Uri": info.uri(exports[d["Volume"]].export_name)} for d in vm["Disks"]]
        self.save(checkpoint=info.checkpoint_id, checkpoint_time=info.checkpoint_time,
                  checkpoint_consistent=info.checkpoint_consistent, vms=vms,
                  nbd={"unix": info.nbd_unix, "tcp": info.nbd_tcp})
        self.timed("OpenImages", started)

    def _network(self) -> str | None:
        return self.vpg.test_network if self.op.kind == "FailoverTest" else self.vpg.failover_network

    def create_vms(self) -> None:
        op = self.op
        todo = [v for v in op.vms if not v["RecoveryVm"]]
        if not todo and all(v["Customized"] or not self._ips(v) for v in op.vms):
            return
        started = time.time()
        found = self.rv.find_vms(OPERATION_KEY, op.identifier) if self.ctx.resumed else {}
        vra = m.Vra.get_or_none(m.Vra.identifier == op.recovery_vra) if op.recovery_vra else None
        network = self._network()
        vms = [dict(v) for v in op.vms]
        for i, vm in enumerate(vms):
            if not vm["RecoveryVm"]:
                self.progress(30 + 40 * i // len(vms), f"Creating VM {vm['RecoveryName']}")
                moid = found.get(vm["RecoveryName"])
                if moid is None:
                    disks = []
                    for d in vm["Disks"]:
                        if op.kind != "FailoverTest" and not d["File"]:
                            raise PermanentError(f"VPG {op.vpg_name}: where the replica of volume {d['Volume']} "
                                                 "lives is unknown here: commit the VPG's settings again")
                        disks.append(RecoveryDisk(d["Capacity"], None if op.kind == "FailoverTest" else d["File"]))
                    extra = {OPERATION_KEY: op.identifier, "zvr.vpg": op.vpg}
                    for n, d in enumerate(vm["Disks"]):
                        extra[f"zvr.disk{n}.volume"] = d["Volume"]
                        extra[f"zvr.disk{n}.nbd"] = d["Uri"] or ""
                    nics = max(1, len(vm["Nics"])) if network else 0
                    spec = RecoveryVmSpec(
                        name=vm["RecoveryName"], host=vm["Host"] or self.vpg.recovery_host or (vra.host_moid if vra else ""),
                        datastore=vm["Datastore"] or self.vpg.recovery_datastore, folder=self.vpg.recovery_folder,
                        networks=[network] * nics, disks=disks, extra_config=extra,
                        annotation=f"{op.kind} of VPG {op.vpg_name} at checkpoint {op.checkpoint} "
                                   f"(operation {op.identifier})")
                    moid = self.rv.create_vm(spec)
                vm["RecoveryVm"] = moid
                vms[i] = vm
                self.save(vms=vms)
            ips = self._ips(vm)
            if ips and not vm["Customized"]:
                self.progress(30 + 40 * i // len(vms), f"Re-IP of VM {vm['RecoveryName']} (guest customization)")
                self.rv.customize_ip(vm["RecoveryVm"], [IpSettings(ip["IpAddress"], ip["SubnetMask"],
                                                                   ip.get("Gateway") or "", ip.get("DnsServers") or [])
                                                        if ip else None for ip in ips], vm["Name"])
                vm["Customized"] = True
                vms[i] = vm
                self.save(vms=vms)
        self.timed("CreateVms", started)

    def _ips(self, vm: dict) -> list[dict | None]:
        if not self._network():
            return []
        key = "FailoverTestIp" if self.op.kind == "FailoverTest" else "FailoverIp"
        ips = [n.get(key) for n in vm["Nics"]] or [None]
        return ips if any(ips) else []

    def boot_order(self) -> list[tuple[str, float]]:
        """(group, delay after it) in boot order; VMs without a group boot first."""
        groups = [("", 0.0)] + [(g["Name"], float(g.get("BootDelayInSeconds", 0))) for g in self.vpg.boot_groups or []]
        used = {v["BootGroup"] for v in self.op.vms}
        return [(g, d) for g, d in groups if g in used] + [(g, 0.0) for g in sorted(used - {n for n, _ in groups})]

    def power_on(self) -> None:
        op = self.op
        if all(v["PoweredOn"] for v in op.vms):
            return
        started = time.time()
        order = self.boot_order()
        boot = dict((op.phases or {}).get("Boot") or {})
        for k, (group, _delay) in enumerate(order):
            members = [i for i, v in enumerate(op.vms) if v["BootGroup"] == group]
            if all(op.vms[i]["PoweredOn"] for i in members) and group in boot:
                continue
            if k > 0:
                prev, delay = order[k - 1]
                wait = boot.get(prev, time.time()) + delay - time.time()
                if wait > 0:
                    self.progress(75, f"Waiting {wait:.0f} s (boot delay of group {prev or '(none)'}) before boot "
                                      f"group {group}")
                    time.sleep(wait)
            vms = [dict(v) for v in op.vms]
            for i in members:
                if not vms[i]["PoweredOn"]:
                    self.progress(75 + 20 * k // len(order), f"Powering on {vms[i]['RecoveryName']}"
                                  + (f" (boot group {group})" if group else ""))
                    self.rv.power_on(vms[i]["RecoveryVm"])
                    vms[i]["PoweredOn"] = True
                    self.save(vms=vms)
            boot.setdefault(group, time.time())
            self.save(phases={**(self.op.phases or {}), "Boot": boot})
        self.timed("PowerOn", started)

    def verify(self) -> None:
        """Every VM's disks are served by the recovery VRA's session."""
        started = time.time()
        info = self.zvm.vra_control.get_session(self.vra(), self.op.vpg, self.op.session)
        served = {e.export_name for e in info.exports} if info.ok and info.state == "open" else set()
        missing = [d["Export"] for v in self.op.vms for d in v["Disks"] if d["Export"] not in served]
        if missing:
            raise PermanentError(f"the recovery VRA does not serve {', '.join(missing)} ({info.message or info.state})")
        self.timed("Verify", started)

    # -- undo ----------------------------------------------------------------------------------------
    def remove_vms(self) -> int:
        removed = 0
        vms = [dict(v) for v in self.op.vms]
        found = {}
        try:
            found = self.rv.find_vms(OPERATION_KEY, self.op.identifier)
        except ZvmError as exc:
            log.warning("operation %s: looking for its VMs failed: %s", self.op.identifier, exc)
        for i, vm in enumerate(vms):
            moid = vm["RecoveryVm"] or found.get(vm["RecoveryName"])
            if moid:
                self.progress(self.ctx.task.progress, f"Deleting VM {vm['RecoveryName']}")
                removed += bool(self.rv.delete_vm(moid, keep_disks=True))
            vms[i] = {**vm, "RecoveryVm": None, "PoweredOn": False, "Customized": False}
            self.save(vms=vms)
        return removed

    def close_session(self) -> None:
        info = self.zvm.vra_control.close_session(self.vra(), self.op.vpg, self.op.session)
        if not info.ok:
            raise PermanentError(f"the recovery VRA did not close the session: {info.message}")

    def sources_to_power_on(self) -> list[str]:
        return [moid for moid, state in (self.op.sources or {}).items() if state == "poweredOn"]

    def roll_back(self, why: str, *, final_state: str = "RolledBack", result: str = "RolledBack") -> dict:
        """Undo a start (or a before-commit operation): recovery VMs, session, source VMs, VPG status."""
        op = self.op
        self.save(state="RollingBack")
        problems = []
        for what, step in (("deleting the recovery VMs", self.remove_vms), ("closing the session", self.close_session)):
            try:
                step()
            except ZvmError as exc:
                problems.append(f"{what}: {exc}")
        if op.kind == "FailoverTest":
            try:
                self.protected("end")
            except ZvmError:
                pass
            self.set_vpg(substatus="None")
        else:
            try:
                self.protected("rollback", {"PowerOn": self.sources_to_power_on()}, timeout=120)
            except TransientError as exc:
                self.save(peer_pending="rollback")
                problems.append(f"the protected site was not reached ({exc}); its VMs are powered on again when "
                                "it answers")
            except ZvmError as exc:
                problems.append(f"the protected site: {exc}")
            self.set_vpg(status="MeetingSLA", substatus="None")
        summary = why + (f" ({'; '.join(problems)})" if problems else "")
        self.save(state=final_state, result=result, summary=summary[:4000], ended_at=time.time(), commit_deadline=None)
        return self.result(Result=result, Summary=summary)


# --- task handlers ------------------------------------------------------------------------------------------

def _run(ctx: TaskContext, work) -> dict:
    op = _op(ctx)
    rec = Recovery(ctx, op)
    try:
        return work(rec)
    finally:
        rec.close()
        refresh_alerts()


@handler("FailoverTest", resumable=True)
@handler("Failover", resumable=True)
@handler("Move", resumable=True)
def start(ctx: TaskContext) -> dict:
    def work(rec: Recovery) -> dict:
        if rec.op.state in ("Running", "BeforeCommit") and ctx.resumed:  # done just before the restart
            return rec.result(RtoSeconds=round(rec.op.ready_at - rec.op.started_at, 3))
        if rec.op.state != "Starting":
            raise ConflictError(f"the {rec.op.kind} of VPG {rec.op.vpg_name} is {rec.op.state} already")
        try:
            out = rec.start()
        except ZvmError as exc:
            log.warning("VPG %s: %s failed, rolling back: %s", rec.op.vpg_name, rec.op.kind, exc)
            rec.progress(rec.ctx.task.progress, f"Failed ({exc}); rolling back")
            rec.roll_back(f"failed: {exc}", final_state="Failed", result="Failed")
            raise
        op = rec.op
        if op.commit_deadline is not None and op.commit_deadline <= time.time():  # no wait: act at once
            kind = ("Move" if op.kind == "Move" else "Failover") + op.params.get("CommitPolicy", "Commit")
            with zdb.transaction():
                vpg = m.Vpg.get(m.Vpg.identifier == op.vpg)
                next_task = order_next(vpg, kind, {}, ctx.zvm.local_site(), by="commit policy")
            out["NextTaskIdentifier"] = next_task.identifier
        return out

    return _run(ctx, work)


@handler("FailoverTestStop", resumable=True)
def stop_test(ctx: TaskContext) -> dict:
    def work(rec: Recovery) -> dict:
        op = rec.op
        if op.state == "Stopped":  # done just before a restart
            return rec.result(Result=op.result, Summary=op.summary,
                              DurationInSeconds=round(op.ended_at - op.started_at, 3))
        rec.progress(10, f"Stopping the failover test of VPG {op.vpg_name}: powering off and deleting its VMs")
        removed = rec.remove_vms()
        rec.progress(70, "Discarding the scratch")
        rec.close_session()
        try:
            rec.protected("end")
        except ZvmError:
            pass
        rec.set_vpg(substatus="None")
        reason = ctx.param("Reason")
        if reason == "ScratchLimit":
            result, summary = "ScratchLimit", "stopped: the scratch reached its limit"
        elif reason == "SessionLost":
            result, summary = "Failed", "stopped: the recovery VRA lost the test's images"
        else:
            ok = ctx.param("FailoverTestSuccess", True)
            result, summary = ("Succeeded" if ok else "Failed"), str(ctx.param("FailoverTestSummary") or "")
        now = time.time()
        rec.save(state="Stopped", result=result, summary=summary[:4000], ended_at=now)
        duration = now - op.started_at
        rec.progress(100, f"Failover test of VPG {op.vpg_name} stopped after {duration:.0f} s ({result}); "
                          f"{removed} test VMs deleted, scratch discarded")
        return rec.result(Result=result, Summary=summary, DurationInSeconds=round(duration, 3))

    return _run(ctx, work)


@handler("FailoverRollback", resumable=True)
@handler("MoveRollback", resumable=True)
def rollback(ctx: TaskContext) -> dict:
    def work(rec: Recovery) -> dict:
        if rec.op.state == "RolledBack":  # done just before a restart
            return rec.result(Result="RolledBack", Summary=rec.op.summary)
        rec.progress(10, f"Rolling back the {rec.op.kind.lower()} of VPG {rec.op.vpg_name}")
        out = rec.roll_back("rolled back" + (f" ({rec.op.params['OrderedBy']})" if rec.op.params.get("OrderedBy") else ""))
        rec.progress(100, f"{rec.op.kind} of VPG {rec.op.vpg_name} rolled back: recovery VMs deleted, scratch "
                          "discarded, the journal kept; the VPG protects again")
        return out

    return _run(ctx, work)


@handler("FailoverCommit", resumable=True)
@handler("MoveCommit", resumable=True)
def commit(ctx: TaskContext) -> dict:
    return _run(ctx, lambda rec: commit_operation(rec, ctx))
