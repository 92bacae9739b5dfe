"""Commands that change the site: ``vpg`` (create, edit, delete, pause, resume, force-sync, tag), ``vra``
(install, uninstall), ``pair``, ``pair-token``, ``unpair`` and ``users``.

A VPG is created or edited from flags, from a JSON or YAML file in Zerto's vpgSettings document shape (the
flags then change the file's values), or both: ``zvm vpg create web --vm vm-42 --vm vm-43 --recovery-site B
--recovery-datastore datastore-3``. Secrets never come as options (they show in ps): a pairing token from
ZVM_PAIRING_TOKEN or standard input, a new password from ZVM_NEW_PASSWORD or asked for.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path

import yaml

from zvm import enums
from zvm.admin.session import common, runner
from zvm.admin.show import find_vpg, local_site_id, task_row
from zvm.client import TaskFailedError, ZvmClient
from zvm.errors import ConfigError, ValidationError


def register(subparsers) -> None:
    _register_vpg(subparsers)
    _register_vra(subparsers)
    _register_pairing(subparsers)
    _register_users(subparsers)


def _with_wait(p) -> None:
    p.add_argument("--wait", action="store_true", help="wait for the task to end (a failed task exits 5)")
    p.add_argument("--timeout", type=float, default=3600, metavar="SECONDS", help="how long --wait waits")


def _task_answer(zvm: ZvmClient, args, task: str, what: str):
    if args.wait:
        try:
            done = zvm.wait_for_task(task, timeout=args.timeout)
        except TaskFailedError as exc:
            done = exc.task
    else:
        done = zvm.task(task)
    if args.wait and enums.TaskState.parse(done["Status"]["State"]) == enums.TaskState.Failed:
        args.exit_code = 5  # without --wait the order was taken: how the task ends is for later
    return done, [{"Of": what, **task_row(done)}], ["Of", "Type", "State", "Progress", "Step", "Identifier"]


# --- VPGs -------------------------------------------------------------------------------------------------

def _register_vpg(subparsers) -> None:
    vpg = subparsers.add_parser("vpg", help="create, edit, delete, pause, resume, force-sync a VPG; tag a "
                                "checkpoint", description="Change VPGs. 'zvm vpgs' lists them.")
    sub = vpg.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (("create", "Create a VPG from flags and/or a settings file."),
                         ("edit", "Change a VPG: its settings from flags and/or a file, VMs added or removed.")):
        p = sub.add_parser(action, help=text.split(":")[0].rstrip("."), description=text + " The file is JSON "
                           "or YAML in the shape of GET /v1/vpgSettings/{id} (only the parts to set); flags "
                           "override it.")
        common(p)
        _with_wait(p)
        p.add_argument("vpg", help="the new VPG's name" if action == "create" else "VPG name or identifier")
        p.add_argument("--file", "-f", type=Path, help="settings document (JSON or YAML)")
        if action == "create":
            p.add_argument("--vm", action="append", default=[], help="a VM to protect (identifier or name; repeat)")
        else:
            p.add_argument("--name", help="rename the VPG")
            p.add_argument("--add-vm", action="append", default=[], help="protect this VM too (repeat)")
            p.add_argument("--remove-vm", action="append", default=[], help="stop protecting this VM (repeat)")
        p.add_argument("--recovery-site", help="the site it recovers to (name or identifier)")
        p.add_argument("--recovery-host", help="host of the recovery site the VMs recover on (identifier)")
        p.add_argument("--recovery-cluster", help="or a host cluster (identifier)")
        p.add_argument("--recovery-datastore", help="datastore of the recovery site for the replica disks")
        p.add_argument("--recovery-folder", help="VM folder of the recovered VMs")
        p.add_argument("--failover-network", help="network of the recovered VMs (failover, move)")
        p.add_argument("--test-network", help="network of the failover test VMs")
        p.add_argument("--rpo", type=int, metavar="SECONDS", help="alert when the RPO exceeds this")
        p.add_argument("--history-hours", type=int, help="journal history")
        p.add_argument("--priority", choices=["Low", "Medium", "High"])
        p.add_argument("--journal-hard-limit-mb", type=int, help="0: no limit")
        p.add_argument("--journal-warning-mb", type=int, help="0: no warning")
        p.add_argument("--wan-compression", action="store_true", default=None)
        p.add_argument("--no-wan-compression", dest="wan_compression", action="store_false")
        p.set_defaults(func=runner(_create if action == "create" else _edit))
    p = sub.add_parser("delete", help="delete a VPG", description="Stop protecting the VMs of a VPG and delete "
                       "it.")
    common(p)
    _with_wait(p)
    p.add_argument("vpg", help="VPG name or identifier")
    p.add_argument("--keep-recovery-volumes", action="store_true", help="leave the replica disks (to pre-seed)")
    p.add_argument("--force", action="store_true", help="delete even if the VRAs cannot be reached")
    p.set_defaults(func=runner(lambda z, a: _vpg_task(z, a, lambda v: z.delete_vpg(
        v, keep_recovery_volumes=a.keep_recovery_volumes, force=a.force))))
    for action, text, call in (
            ("pause", "pause replication (writes are tracked, sent on resume)", "pause_vpg"),
            ("resume", "resume replication", "resume_vpg"),
            ("force-sync", "compare every block with the recovery side and send what differs", "force_sync_vpg")):
        p = sub.add_parser(action, help=text, description=text[:1].upper() + text[1:] + ".")
        common(p)
        _with_wait(p)
        p.add_argument("vpg", help="VPG name or identifier")
        p.set_defaults(func=runner(lambda z, a, call=call: _vpg_task(z, a, getattr(z, call))))
    p = sub.add_parser("tag", help="take a tagged checkpoint", description="Take a checkpoint named TAG; "
                       "with --wait, returns when it is journaled on the recovery site and usable on both.")
    common(p)
    _with_wait(p)
    p.add_argument("vpg", help="VPG name or identifier")
    p.add_argument("tag", help="the checkpoint's name")
    p.set_defaults(func=runner(lambda z, a: _vpg_task(z, a, lambda v: z.take_checkpoint(v, a.tag))))


def _vpg_task(zvm: ZvmClient, args, call):
    vpg = find_vpg(zvm, args.vpg)
    return _task_answer(zvm, args, call(vpg["VpgIdentifier"]), vpg["VpgName"])


def read_settings_file(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}: give a readable JSON or YAML file") from None
    try:
        doc = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the settings document must be an object (Basic, Journal, Vms ...)")
    return doc


def _vm_ids(zvm: ZvmClient, site: str, given: list[str]) -> list[str]:
    """VMs given by identifier or name -> identifiers (a name must be unique)."""
    if not given:
        return []
    vms = zvm.vms(site)
    out = []
    for want in given:
        match = [v["VmIdentifier"] for v in vms if want in (v["VmIdentifier"], v["VmName"])]
        if len(match) != 1:
            raise ValidationError(f"--vm {want}: {'no' if not match else 'more than one'} VM of this site has "
                                  "that identifier or name: see 'zvm vms'", field="vm")
        out.append(match[0])
    return out


def _apply_flags(zvm: ZvmClient, doc: dict, args) -> dict:
    basic = doc.setdefault("Basic", {})
    if getattr(args, "name", None):
        basic["Name"] = args.name
    if args.recovery_site:
        basic["RecoverySiteIdentifier"] = local_site_id(zvm, args.recovery_site)
    for flag, key in (("rpo", "RpoInSeconds"), ("history_hours", "JournalHistoryInHours"), ("priority", "Priority"),
                      ("wan_compression", "UseWanCompression")):
        if getattr(args, flag) is not None:
            basic[key] = getattr(args, flag)
    limits = doc.setdefault("Journal", {}).setdefault("Limitation", {})
    if args.journal_hard_limit_mb is not None:
        limits["HardLimitInMB"] = args.journal_hard_limit_mb
    if args.journal_warning_mb is not None:
        limits["WarningThresholdInMB"] = args.journal_warning_mb
    recovery = doc.setdefault("Recovery", {})
    for flag, key in (("recovery_host", "DefaultHostIdentifier"), ("recovery_cluster", "DefaultHostClusterIdentifier"),
                      ("recovery_datastore", "DefaultDatastoreIdentifier"), ("recovery_folder", "DefaultFolderIdentifier")):
        if getattr(args, flag):
            recovery[key] = getattr(args, flag)
    networks = doc.setdefault("Networks", {})
    for flag, key in (("failover_network", "Failover"), ("test_network", "FailoverTest")):
        if getattr(args, flag):
            networks[key] = {"Hypervisor": {"DefaultNetworkIdentifier": getattr(args, flag)}}
    return {k: v for k, v in doc.items() if v != {}}


def _commit(zvm: ZvmClient, args, sid: str, doc: dict, what: str):
    try:
        zvm.request("PUT", f"/vpgSettings/{sid}", json=doc)
        task = zvm.commit_vpg_settings(sid)
    except Exception:
        zvm.delete_vpg_settings(sid)  # a refused draft is not left behind
        raise
    return _task_answer(zvm, args, task, what)


def _create(zvm: ZvmClient, args):
    doc = read_settings_file(args.file)
    doc.setdefault("Basic", {})["Name"] = args.vpg
    doc = _apply_flags(zvm, doc, args)
    local = local_site_id(zvm, None)
    doc["Vms"] = [*(doc.get("Vms") or []), *({"VmIdentifier": v} for v in _vm_ids(zvm, local, args.vm))]
    if not doc["Vms"]:
        raise ValidationError("a VPG needs VMs: give them with --vm (see 'zvm vms') or in the file's Vms",
                              field="vm")
    sid = zvm.create_vpg_settings()
    return _commit(zvm, args, sid, doc, args.vpg)


def _edit(zvm: ZvmClient, args):
    vpg = find_vpg(zvm, args.vpg)
    sid = zvm.create_vpg_settings(vpg["VpgIdentifier"])
    try:
        current = zvm.vpg_settings(sid)
        doc = _apply_flags(zvm, read_settings_file(args.file), args)
        local = local_site_id(zvm, None)
        remove = set(_vm_ids(zvm, local, args.remove_vm)) if args.remove_vm else set()
        vms = [v for v in doc.get("Vms") or current["Vms"] if v["VmIdentifier"] not in remove]
        vms += [{"VmIdentifier": v} for v in _vm_ids(zvm, local, args.add_vm)]
        doc["Vms"] = vms
    except Exception:
        zvm.delete_vpg_settings(sid)
        raise
    return _commit(zvm, args, sid, doc, vpg["VpgName"])


# --- VRAs -------------------------------------------------------------------------------------------------

def _register_vra(subparsers) -> None:
    vra = subparsers.add_parser("vra", help="install or uninstall a VRA", description="Install or uninstall "
                                "the VRA of a host. 'zvm vras' lists them; 'zvm hosts' the hosts.")
    sub = vra.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("install", help="deploy the VRA to a host", description="Deploy the VRA appliance to a "
                       "host, on a datastore and network of that host (see 'zvm hosts'); DHCP unless --ip.")
    common(p)
    _with_wait(p)
    p.add_argument("--host", required=True, help="host identifier or name")
    p.add_argument("--datastore", required=True, help="datastore identifier")
    p.add_argument("--network", required=True, help="network identifier")
    p.add_argument("--memory-gb", type=int)
    p.add_argument("--ip", help="static IP address")
    p.add_argument("--subnet-mask")
    p.add_argument("--gateway")
    p.set_defaults(func=runner(_install))
    p = sub.add_parser("uninstall", help="remove a host's VRA", description="Remove the VRA of a host (refused "
                       "while VPGs use it).")
    common(p)
    _with_wait(p)
    p.add_argument("vra", help="VRA identifier, name or host name")
    p.set_defaults(func=runner(_uninstall))


def _install(zvm: ZvmClient, args):
    hosts = zvm.hosts(local_site_id(zvm, None))
    match = [h["HostIdentifier"] for h in hosts if args.host in (h["HostIdentifier"], h["VirtualizationHostName"])]
    if len(match) != 1:
        raise ValidationError(f"--host {args.host}: no host of this site has that identifier or name: see "
                              "'zvm hosts'", field="host")
    task = zvm.install_vra(match[0], args.datastore, args.network, memory_gb=args.memory_gb, ip_address=args.ip,
                           subnet_mask=args.subnet_mask, gateway=args.gateway)
    return _task_answer(zvm, args, task, args.host)


def _uninstall(zvm: ZvmClient, args):
    match = [v for v in zvm.vras() if args.vra in (v["VraIdentifier"], v["VraName"], v["HostName"])]
    if len(match) != 1:
        raise ValidationError(f"{args.vra}: no VRA of this site has that identifier, name or host: see "
                              "'zvm vras'", field="vra")
    return _task_answer(zvm, args, zvm.uninstall_vra(match[0]["VraIdentifier"]), match[0]["VraName"])


# --- pairing ----------------------------------------------------------------------------------------------

def _register_pairing(subparsers) -> None:
    p = subparsers.add_parser("pair-token", help="make a token another site pairs with",
                              description="Make a pairing token; give it to the other site's 'zvm pair'.")
    common(p)
    p.add_argument("--minutes", type=int, help="how long it is valid")
    p.set_defaults(func=runner(lambda z, a: (lambda t: (t, [t], ["Token", "ExpiresAt"]))(
        z.generate_pairing_token(a.minutes))))
    p = subparsers.add_parser("pair", help="pair with another site", description="Pair this site with the ZVM "
                              "at --host, with the token its 'zvm pair-token' made, read from ZVM_PAIRING_TOKEN "
                              "or standard input (never an option: options show in ps).")
    common(p)
    _with_wait(p)
    p.add_argument("--host", required=True, help="the other ZVM's address")
    p.add_argument("--port", type=int, default=9081, help="its peer port (default: 9081)")
    p.set_defaults(func=runner(lambda z, a: _task_answer(z, a, z.pair(a.host, _pairing_token(), a.port),
                                                         a.host)))
    p = subparsers.add_parser("unpair", help="unpair a site", description="Unpair a site (refused while VPGs "
                              "replicate between the two).")
    common(p)
    _with_wait(p)
    p.add_argument("site", help="site name or identifier")
    p.set_defaults(func=runner(lambda z, a: _task_answer(z, a, z.unpair(local_site_id(z, a.site)), a.site)))


def _pairing_token() -> str:
    token = os.environ.get("ZVM_PAIRING_TOKEN")
    if token is None:
        token = getpass.getpass("pairing token: ") if sys.stdin.isatty() else sys.stdin.readline()
    token = token.strip()
    if not token:
        raise ConfigError("no pairing token: set ZVM_PAIRING_TOKEN or give it on standard input")
    return token


# --- users ------------------------------------------------------------------------------------------------

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
        common(p)
        if action != "list":
            p.add_argument("name", help="the user name")
        if action in ("create", "set-role"):
            p.add_argument("--role", choices=["viewer", "operator", "admin"], required=action == "set-role",
                           default="viewer" if action == "create" else None)
        p.set_defaults(func=runner(_users_call(call)))


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

