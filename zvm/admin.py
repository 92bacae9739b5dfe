"""The administrator's commands, thin over zvm.client: status, sites, vras, vpgs, checkpoints, tasks, alerts;
and the recovery operations: failover-test, failover-test-stop, failover, failover-commit, failover-rollback,
move, move-commit, move-rollback, recovery-reports; and ``users`` (list, create, set-role, disable,
enable, reset-password; admin only).

Each command logs in to the ZVM given by ``--url`` (or ZVM_URL), as ``--user`` (ZVM_USER, default admin)
with the password from ZVM_PASSWORD (or asked for), prints a table (or ``--json``), and logs out. The ZVM's
HTTPS certificate is verified: by ``--ca-file`` (its site CA, DATA_DIR/pki/ca.pem), by ``--fingerprint``
(pinned, as ``zvm serve`` prints it), else by the system's CAs.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

from zvm.client import TaskFailedError, ZvmClient
from zvm.errors import ConfigError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("ZVM_URL", "https://127.0.0.1:9080"),
                   help="the ZVM's API address (env ZVM_URL)")
    p.add_argument("--user", default=os.environ.get("ZVM_USER", "admin"), help="user name (env ZVM_USER)")
    p.add_argument("--ca-file", default=os.environ.get("ZVM_CA_FILE"),
                   help="CA bundle that signed the ZVM's HTTPS certificate (env ZVM_CA_FILE)")
    p.add_argument("--fingerprint", default=os.environ.get("ZVM_FINGERPRINT"),
                   help="accept only the HTTPS certificate with this SHA-256 fingerprint, as 'zvm serve' "
                        "prints it (env ZVM_FINGERPRINT)")
    p.add_argument("--insecure", action="store_true", help="do not verify the HTTPS certificate (labs only)")
    p.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")


def register(subparsers) -> None:
    commands = {
        "status": ("this site, its peers, and counts of VPGs, VRAs, running tasks and active alerts", _status),
        "sites": ("the local site and paired sites", _sites),
        "vras": ("VRAs of this site and their state", _vras),
        "vpgs": ("VPGs with status, RPO and VM count", _vpgs),
        "checkpoints": ("checkpoints of a VPG, newest first", _checkpoints),
        "tasks": ("recent tasks and their progress", _tasks),
        "alerts": ("alerts (active ones unless --all)", _alerts),
    }
    for name, (text, fn) in commands.items():
        p = subparsers.add_parser(name, help=text, description=f"Show {text}.")
        _common(p)
        if name == "vpgs":
            p.add_argument("--status", help="only VPGs with this status, e.g. MeetingSLA")
        if name == "checkpoints":
            p.add_argument("vpg", help="VPG name or identifier")
            p.add_argument("--tagged", action="store_true", help="only tagged checkpoints")
            p.add_argument("--limit", type=int, default=20)
        if name == "tasks":
            p.add_argument("--state", choices=["Pending", "InProgress", "Completed", "Failed"])
            p.add_argument("--limit", type=int, default=20)
        if name == "alerts":
            p.add_argument("--all", action="store_true", help="also alerts no longer active")
        p.set_defaults(func=_runner(fn))
    _register_recovery(subparsers)
    _register_users(subparsers)


def _register_users(subparsers) -> None:
    users = subparsers.add_parser("users", help="users and their roles (admin only)",
                                  description="List, create and change the ZVM's users. Roles: viewer (read "
                                  "only), operator (also failover tests, failover, move, checkpoints, pause and "
                                  "resume), admin (everything). A new password is read from ZVM_NEW_PASSWORD, "
                                  "else asked for (never an option: options show in ps).")
    sub = users.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions = {
        "list": ("every user, its role and whether it is enabled", lambda z, a: z.users()),
        "create": ("create a user", lambda z, a: z.create_user(a.name, _new_password(a.name), a.role)),
        "set-role": ("change a user's role", lambda z, a: z.update_user(a.name, role=a.role)),
        "disable": ("disable a user (it cannot log in; its sessions end)",
                    lambda z, a: z.update_user(a.name, enabled=False)),
        "enable": ("enable a user again", lambda z, a: z.update_user(a.name, enabled=True)),
        "reset-password": ("set a user's password (its sessions end)",
                           lambda z, a: z.reset_password(a.name, _new_password(a.name))),
    }
    for action, (text, call) in actions.items():
        p = sub.add_parser(action, help=text, description=text[:1].upper() + text[1:] + ".")
        _common(p)
        if action != "list":
            p.add_argument("name", help="the user name")
        if action in ("create", "set-role"):
            p.add_argument("--role", choices=["viewer", "operator", "admin"], required=action == "set-role",
                           default="viewer" if action == "create" else None)
        p.set_defaults(func=_runner(_users_call(call)))


def _users_call(call):
    def run(zvm: ZvmClient, args):
        answer = call(zvm, args)
        users = answer if isinstance(answer, list) else [answer]
        rows = [{"User": u["UserName"], "Role": u["Role"], "Enabled": "yes" if u["Enabled"] else "no",
                 "Sessions": u["ActiveSessions"], "Created": u["CreatedAt"]} for u in users]
        return answer, rows, ["User", "Role", "Enabled", "Sessions", "Created"]

    return run


def _new_password(user: str) -> str:
    password = os.environ.get("ZVM_NEW_PASSWORD")
    if password is not None:
        return password
    if not sys.stdin.isatty():
        raise ConfigError("no new password: set ZVM_NEW_PASSWORD, or run in a terminal to be asked")
    first = getpass.getpass(f"new password of {user}: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("the two passwords differ: run the command again")
    return first


def _register_recovery(subparsers) -> None:
    def vpg_command(name: str, text: str, fn):
        p = subparsers.add_parser(name, help=text, description=text + " Ordered on the ZVM of the site the VPG "
                                  "recovers to; prints the task (with --wait, waits for it to end).")
        _common(p)
        p.add_argument("vpg", help="VPG name or identifier")
        p.add_argument("--wait", action="store_true", help="wait for the task to end and show how it ended")
        p.set_defaults(func=_runner(_order(fn)))
        return p

    p = vpg_command("failover-test", "Start a failover test of a VPG.",
                    lambda z, v, a: z.failover_test(v, checkpoint=a.checkpoint, scratch_limit_mb=a.scratch_limit_mb))
    p.add_argument("--checkpoint", help="checkpoint identifier (default: the newest)")
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
    p.add_argument("--commit-policy", choices=["Commit", "Rollback", "None"])
    p.add_argument("--commit-timeout", type=int, metavar="SECONDS")
    p.add_argument("--reverse-protection", action=argparse.BooleanOptionalAction, default=None)
    for name, verb in (("failover-commit", "failover_commit"), ("move-commit", "move_commit")):
        p = vpg_command(name, f"Commit the {name.split('-')[0]} of a VPG.", lambda z, v, a, verb=verb: getattr(z, verb)(
            v, reverse_protection=a.reverse_protection))
        p.add_argument("--reverse-protection", action=argparse.BooleanOptionalAction, default=None)
    vpg_command("failover-rollback", "Roll the failover of a VPG back.", lambda z, v, a: z.failover_rollback(v))
    vpg_command("move-rollback", "Roll the move of a VPG back.", lambda z, v, a: z.move_rollback(v))
    p = vpg_command("move", "Move a VPG to its recovery site (planned, no data loss).", lambda z, v, a: z.move(
        v, commit_policy=a.commit_policy, commit_timeout=a.commit_timeout, shutdown_timeout=a.shutdown_timeout,
        reverse_protection=a.reverse_protection))
    p.add_argument("--commit-policy", choices=["Commit", "Rollback", "None"])
    p.add_argument("--commit-timeout", type=int, metavar="SECONDS")
    p.add_argument("--shutdown-timeout", type=int, metavar="SECONDS")
    p.add_argument("--reverse-protection", action=argparse.BooleanOptionalAction, default=None)
    p = subparsers.add_parser("recovery-reports", help="failover tests, failovers and moves: results and RTO",
                              description="Show the recovery operations, newest first.")
    _common(p)
    p.add_argument("--vpg", help="only this VPG (name or identifier)")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=_runner(_reports))


def _order(fn):
    def run(zvm: ZvmClient, args):
        vpg = _find_vpg(zvm, args.vpg)
        task = fn(zvm, vpg["VpgIdentifier"], args)
        if args.wait:
            try:
                done = zvm.wait_for_task(task)
            except TaskFailedError as exc:
                done = exc.task
        else:
            done = zvm.task(task)
        row = {"VPG": vpg["VpgName"], "Task": task, "Type": done["Type"], "State": done["Status"]["State"],
               "Progress": f"{done['Status']['Progress']}%", "Step": done["Step"]}
        return done, [row], ["VPG", "Type", "State", "Progress", "Step", "Task"]

    return run


def _reports(zvm: ZvmClient, args):
    vpg = _find_vpg(zvm, args.vpg)["VpgIdentifier"] if args.vpg else None
    reports = zvm.recovery_reports(vpg=vpg, limit=args.limit)
    rows = [{"VPG": r["VpgName"], "Type": r["Type"], "State": r["State"], "Result": r["Result"],
             "Checkpoint": r["CheckpointTime"], "RTO(s)": r["RtoInSeconds"], "Duration(s)": r["DurationInSeconds"],
             "Started": r["StartedAt"], "Identifier": r["OperationIdentifier"]} for r in reports]
    return reports, rows, ["VPG", "Type", "State", "Result", "Checkpoint", "RTO(s)", "Duration(s)", "Started",
                           "Identifier"]


def _password(user: str) -> str:
    password = os.environ.get("ZVM_PASSWORD")
    if password is not None:
        return password
    if not sys.stdin.isatty():
        raise ConfigError("no password: set ZVM_PASSWORD, or run in a terminal to be asked")
    return getpass.getpass(f"password of {user}: ")


def _runner(fn):
    def run(args) -> int:
        verify: bool | str = False if args.insecure else (args.ca_file or True)
        with ZvmClient(args.url, verify=verify, fingerprint=None if args.insecure else args.fingerprint) as zvm:
            zvm.login(args.user, _password(args.user))
            data, rows, columns = fn(zvm, args)
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            print_table(rows, columns)
        return 0

    return run


def print_table(rows: list[dict], columns: list[str], out=None) -> None:
    out = out or sys.stdout
    if not rows:
        print("(none)", file=out)
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


def _status(zvm: ZvmClient, args):
    site = zvm.local_site()
    peers = zvm.peer_sites()
    vpgs = zvm.vpgs()
    vras = zvm.vras()
    running = zvm.tasks(state="InProgress") + zvm.tasks(state="Pending")
    alerts = zvm.alerts(active=True, dismissed=False)
    by_status: dict[str, int] = {}
    for v in vpgs:
        by_status[v["Status"]] = by_status.get(v["Status"], 0) + 1
    data = {"Site": site, "PeerSites": peers, "VpgsByStatus": by_status, "Vras": len(vras),
            "RunningTasks": len(running), "ActiveAlerts": len(alerts)}
    rows = [
        {"What": "site", "Value": f"{site['SiteName']} ({site['SiteIdentifier']}) version {site['Version']}"},
        {"What": "vCenter", "Value": site["VCenterUrl"] or "(not configured)"},
        {"What": "peer sites", "Value": ", ".join(f"{p['PeerSiteName']} ({p['PairingStatus']})" for p in peers)
         or "(none)"},
        {"What": "VPGs", "Value": ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) or "0"},
        {"What": "VRAs", "Value": str(len(vras))},
        {"What": "running tasks", "Value": str(len(running))},
        {"What": "active alerts", "Value": str(len(alerts))},
    ]
    return data, rows, ["What", "Value"]


def _sites(zvm: ZvmClient, args):
    sites = zvm.virtualization_sites()
    peers = {p["SiteIdentifier"]: p for p in zvm.peer_sites()}
    rows = [{"Name": s["VirtualizationSiteName"], "Identifier": s["SiteIdentifier"],
             "Role": "local" if s["IsLocal"] else "peer",
             "Pairing": peers.get(s["SiteIdentifier"], {}).get("PairingStatus", ""),
             "Address": (lambda p: f"{p['HostName']}:{p['Port']}" if p else "")(peers.get(s["SiteIdentifier"])),
             "Inventory": s["InventoryLoadedAt"]} for s in sites]
    return sites, rows, ["Name", "Identifier", "Role", "Pairing", "Address", "Inventory"]


def _vras(zvm: ZvmClient, args):
    vras = zvm.vras()
    rows = [{"Name": v["VraName"], "Host": v["HostName"], "State": v["State"],
             "Reachable": "yes" if v["Reachable"] else "no",
             "IP": v["VraNetworkDataApi"]["VraIPAddress"] or v["VraNetworkDataApi"]["VraIPConfigurationTypeApi"],
             "ProtectedVMs": v["ProtectedVmsCount"]} for v in vras]
    return vras, rows, ["Name", "Host", "State", "Reachable", "IP", "ProtectedVMs"]


def _vpgs(zvm: ZvmClient, args):
    vpgs = zvm.vpgs(status=args.status)
    rows = [{"Name": v["VpgName"], "Status": v["Status"], "SubStatus": v["SubStatus"], "VMs": v["VmsCount"],
             "RPO(s)": v["ActualRPO"], "Threshold(s)": v["ConfiguredRpoSeconds"],
             "Recovery": v["RecoverySite"]["SiteName"], "Priority": v["Priority"]} for v in vpgs]
    return vpgs, rows, ["Name", "Status", "SubStatus", "VMs", "RPO(s)", "Threshold(s)", "Recovery", "Priority"]


def _find_vpg(zvm: ZvmClient, name_or_id: str) -> dict:
    found = zvm.vpgs(name=name_or_id)
    return found[0] if found else zvm.vpg(name_or_id)


def _checkpoints(zvm: ZvmClient, args):
    vpg = _find_vpg(zvm, args.vpg)
    cps = zvm.checkpoints(vpg["VpgIdentifier"], tagged_only=args.tagged or None, limit=args.limit)
    rows = [{"Time": c["TimeStamp"], "Tag": c["Tag"], "Consistent": "yes" if c["IsConsistent"] else "no",
             "Identifier": c["CheckpointIdentifier"]} for c in cps]
    return cps, rows, ["Time", "Tag", "Consistent", "Identifier"]


def _tasks(zvm: ZvmClient, args):
    tasks = zvm.tasks(state=args.state, limit=args.limit)
    rows = [{"Type": t["Type"], "State": t["Status"]["State"], "Progress": f"{t['Status']['Progress']}%",
             "Step": t["Step"], "By": t["InitiatedBy"], "Created": t["Created"],
             "Identifier": t["TaskIdentifier"]} for t in tasks]
    return tasks, rows, ["Type", "State", "Progress", "Step", "By", "Created", "Identifier"]


def _alerts(zvm: ZvmClient, args):
    alerts = zvm.alerts(active=None if args.all else True)
    rows = [{"Level": a["Level"], "Code": a["Code"], "Entity": f"{a['Entity']} {a['EntityIdentifier']}",
             "Since": a["TurnedOn"], "Active": "yes" if a["IsActive"] else "no",
             "Dismissed": "yes" if a["IsDismissed"] else "no", "Description": a["Description"]} for a in alerts]
    return alerts, rows, ["Level", "Code", "Entity", "Since", "Active", "Dismissed", "Description"]
