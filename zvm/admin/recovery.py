"""The recovery commands: failover-test, failover-test-stop, failover, failover-commit, failover-rollback,
move, move-commit, move-rollback. Each orders the operation (on either site's ZVM: the protected site's
forwards it) and prints its task.

With ``--wait`` a command returns when what it started is over: a failover test or a failover with commit
policy None when its VMs are up (before commit); a move, or a failover with a commit policy Commit or
Rollback, only when that commit (MoveCommit / FailoverCommit) or rollback task completed, so that the next
command sees the committed layout. A task that failed exits 5.
"""

from __future__ import annotations

import argparse
import time

from zvm import enums
from zvm.admin.session import common, runner
from zvm.admin.show import find_vpg, task_row
from zvm.client import TaskFailedError, ZvmClient
from zvm.errors import NotFoundError, TransientError

# a recovery operation's states once nothing more will happen without an order
ENDED = ("Stopped", "Committed", "RolledBack", "Failed")


def register(subparsers) -> None:
    def vpg_command(cmd: str, text: str, fn):
        p = subparsers.add_parser(cmd, help=text, description=text + " Ordered on either site's ZVM; prints "
                                  "the task (with --wait, waits for the operation as the module says).")
        common(p)
        p.add_argument("vpg", help="VPG name or identifier")
        p.add_argument("--wait", action="store_true", help="wait until it is over (a move: until committed)")
        p.add_argument("--timeout", type=float, default=3600, metavar="SECONDS", help="how long --wait waits")
        p.set_defaults(func=runner(_order(fn)))
        return p

    p = vpg_command("failover-test", "Start a failover test of a VPG (all its VMs, or --vm ones).",
                    lambda z, v, a: z.failover_test(v, checkpoint=a.checkpoint, scratch_limit_mb=a.scratch_limit_mb,
                                                    vms=a.vm or None))
    p.add_argument("--checkpoint", help="checkpoint identifier (default: the newest)")
    p.add_argument("--vm", action="append", help="test only this VM of the VPG (its identifier; repeat)")
    p.add_argument("--scratch-limit-mb", type=int, help="what the test VMs may write in all (0: no limit)")
    p = vpg_command("failover-test-stop", "Stop the failover test of a VPG and record its result.",
                    lambda z, v, a: z.failover_test_stop(v, success=not a.failed, summary=a.summary))
    p.add_argument("--failed", action="store_true", help="record the test as failed")
    p.add_argument("--summary", help="notes kept with the result")
    p = vpg_command("failover", "Fail a VPG over to its recovery site.", lambda z, v, a: z.failover(
        v, checkpoint=a.checkpoint, shutdown_policy=a.shutdown_policy, shutdown_timeout=a.shutdown_timeout,
        commit_policy=a.commit_policy, commit_timeout=a.commit_timeout, reverse_protection=a.reverse_protection))
    p.add_argument("--checkpoint", help="checkpoint identifier (default: the newest)")
    p.add_argument("--shutdown-policy", choices=["None", "Shutdown", "ForceShutdown"])
    p.add_argument("--shutdown-timeout", type=int, metavar="SECONDS")
    p.add_argument("--commit-policy", choices=["Commit", "Rollback", "None"], default=None,
                   help="after the VMs are up (default None: wait for failover-commit or failover-rollback)")
    p.add_argument("--commit-timeout", type=int, metavar="SECONDS")
    p.add_argument("--reverse-protection", action=argparse.BooleanOptionalAction, default=None)
    for cmd, verb in (("failover-commit", "failover_commit"), ("move-commit", "move_commit")):
        p = vpg_command(cmd, f"Commit the {cmd.split('-')[0]} of a VPG.",
                        lambda z, v, a, verb=verb: getattr(z, verb)(v, reverse_protection=a.reverse_protection))
        p.add_argument("--reverse-protection", action=argparse.BooleanOptionalAction, default=None)
    vpg_command("failover-rollback", "Roll the failover of a VPG back.", lambda z, v, a: z.failover_rollback(v))
    vpg_command("move-rollback", "Roll the move of a VPG back.", lambda z, v, a: z.move_rollback(v))
    p = vpg_command("move", "Move a VPG to its recovery site (planned, no data loss).", lambda z, v, a: z.move(
        v, commit_policy=a.commit_policy, commit_timeout=a.commit_timeout, shutdown_timeout=a.shutdown_timeout,
        reverse_protection=a.reverse_protection))
    p.add_argument("--commit-policy", choices=["Commit", "Rollback", "None"],
                   help="after the VMs are up (default Commit)")
    p.add_argument("--commit-timeout", type=int, metavar="SECONDS")
    p.add_argument("--shutdown-timeout", type=int, metavar="SECONDS")
    p.add_argument("--reverse-protection", action=argparse.BooleanOptionalAction, default=None)


def _order(fn):
    def run(zvm: ZvmClient, args):
        vpg = find_vpg(zvm, args.vpg)
        task = fn(zvm, vpg["VpgIdentifier"], args)
        done = wait_for_operation(zvm, vpg["VpgIdentifier"], task, args) if args.wait else zvm.task(task)
        if args.wait and enums.TaskState.parse(done["Status"]["State"]) == enums.TaskState.Failed:
            args.exit_code = 5
        row = {"VPG": vpg["VpgName"], **task_row(done)}
        return done, [row], ["VPG", "Type", "State", "Progress", "Step", "Identifier"]

    return run


def wait_for_operation(zvm: ZvmClient, vpg: str, task: str, args) -> dict:
    """The last task of what ``task`` started, once it is over (see the module docstring)."""
    deadline = time.monotonic() + args.timeout
    try:
        done = zvm.wait_for_task(task, timeout=args.timeout)
    except TaskFailedError as exc:
        return exc.task
    policy = getattr(args, "commit_policy", None)
    follows = args.command == "move" and policy != "None" or args.command == "failover" and policy in (
        "Commit", "Rollback")
    if not follows:
        return done
    operation = _operation_of(zvm, vpg)
    if operation is None:
        return done  # a peer's operation (forwarded): its report is there
    while True:
        report = zvm.recovery_report(operation)
        if report["State"] in ENDED:
            break
        if time.monotonic() >= deadline:
            raise TransientError(f"the {report['Type']} of VPG {report['VpgName']} is still {report['State']} "
                                 f"after {args.timeout:.0f} s: follow it with 'zvm recovery-reports'")
        time.sleep(1.0)
    last = report["TaskIdentifier"] or task
    try:
        return zvm.wait_for_task(last, timeout=max(1.0, deadline - time.monotonic()))
    except TaskFailedError as exc:
        return exc.task


def _operation_of(zvm: ZvmClient, vpg: str) -> str | None:
    """The VPG's newest operation here (one runs at a time: the one just ordered); None when it runs on the
    peer (ordered here, forwarded)."""
    try:
        reports = zvm.recovery_reports(vpg=vpg, limit=1)
    except NotFoundError:
        return None
    return reports[0]["OperationIdentifier"] if reports else None
