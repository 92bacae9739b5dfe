"""Commands that show: status, sites, hosts, vms, vras, vpgs, protected-vms, checkpoints, tasks, alerts,
events, recovery-reports. Enumerations are shown by name (the API answers numbers: zvm/enums.py)."""

from __future__ import annotations

from zvm import enums
from zvm.admin.session import common, runner
from zvm.client import ZvmClient


def name(table: type[enums.ZertoEnum], value) -> str:
    """An enumeration's number as the product's word (what the tables show)."""
    try:
        return table.parse(value).internal
    except ValueError:
        return str(value)


def find_vpg(zvm: ZvmClient, name_or_id: str) -> dict:
    found = zvm.vpgs(name=name_or_id)
    return found[0] if found else zvm.vpg(name_or_id)


def local_site_id(zvm: ZvmClient, site: str | None) -> str:
    """A site given by name or identifier (default: this one)."""
    sites = zvm.virtualization_sites()
    if not site:
        return next(s["SiteIdentifier"] for s in sites if s["IsLocal"])
    for s in sites:
        if site in (s["SiteIdentifier"], s["VirtualizationSiteName"]):
            return s["SiteIdentifier"]
    known = ", ".join(s["VirtualizationSiteName"] for s in sites)
    from zvm.errors import ValidationError

    raise ValidationError(f"no site {site!r}: one of {known} (see 'zvm sites')", field="site")


def register(subparsers) -> None:
    commands = {
        "status": ("this site, its peers, and counts of VPGs, VRAs, running tasks and active alerts", _status),
        "sites": ("the local site and paired sites", _sites),
        "hosts": ("the ESXi hosts of a site, with their datastores and networks", _hosts),
        "vms": ("the VMs of a site that a VPG can protect (VRAs are never listed)", _vms),
        "vras": ("VRAs of this site and their state", _vras),
        "vpgs": ("VPGs with status, RPO and VM count", _vpgs),
        "protected-vms": ("the VMs VPGs protect", _protected_vms),
        "checkpoints": ("checkpoints of a VPG, newest first", _checkpoints),
        "tasks": ("recent tasks and their progress", _tasks),
        "alerts": ("alerts (active ones unless --all)", _alerts),
        "events": ("what was done, by whom, and how it ended, newest first", _events),
        "recovery-reports": ("failover tests, failovers and moves: results and RTO", _reports),
    }
    for cmd, (text, fn) in commands.items():
        p = subparsers.add_parser(cmd, help=text, description=f"Show {text}.")
        common(p)
        if cmd == "vpgs":
            p.add_argument("--status", help="only VPGs with this status, e.g. MeetingSLA (or its number)")
        if cmd in ("hosts", "vms"):
            p.add_argument("--site", help="site name or identifier (default: this site)")
        if cmd == "protected-vms":
            p.add_argument("--vpg", help="only the VMs of this VPG (name or identifier)")
        if cmd == "checkpoints":
            p.add_argument("vpg", help="VPG name or identifier")
            p.add_argument("--tagged", action="store_true", help="only tagged checkpoints")
            p.add_argument("--since", help="only checkpoints at or after this time (2026-12-05, "
                                           "2026-12-05T06:49Z ...)")
        if cmd in ("checkpoints", "tasks", "events", "recovery-reports"):
            p.add_argument("--limit", type=int, default=20)
        if cmd == "tasks":
            p.add_argument("--state", help="Pending, InProgress, Completed, Failed (or Zerto's number)")
        if cmd == "alerts":
            p.add_argument("--all", action="store_true", help="also alerts no longer active")
        if cmd == "recovery-reports":
            p.add_argument("--vpg", help="only this VPG (name or identifier)")
        p.set_defaults(func=runner(fn))


def _status(zvm: ZvmClient, args):
    site = zvm.local_site()
    peers = zvm.peer_sites()
    vpgs = zvm.vpgs()
    vras = zvm.vras()
    running = zvm.tasks(state=enums.TaskState.InProgress) + zvm.tasks(state=enums.TaskState.Pending)
    alerts = zvm.alerts(active=True, dismissed=False)
    by_status: dict[str, int] = {}
    for v in vpgs:
        word = name(enums.VpgStatus, v["Status"])
        by_status[word] = by_status.get(word, 0) + 1
    data = {"Site": site, "PeerSites": peers, "VpgsByStatus": by_status, "Vras": len(vras),
            "RunningTasks": len(running), "ActiveAlerts": len(alerts)}
    rows = [
        {"What": "site", "Value": f"{site['SiteName']} ({site['SiteIdentifier']}) version {site['Version']}"},
        {"What": "vCenter", "Value": site["VCenterUrl"] or "(not configured)"},
        {"What": "peer sites", "Value": ", ".join(
            f"{p['PeerSiteName']} ({name(enums.PairingStatus, p['PairingStatus'])})" for p in peers) or "(none)"},
        {"What": "VPGs", "Value": ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) or "0"},
        {"What": "VRAs", "Value": str(len(vras))},
        {"What": "running tasks", "Value": str(len(running))},
        {"What": "active alerts", "Value": str(len(alerts))},
    ]
    return data, rows, ["What", "Value"]


def _sites(zvm: ZvmClient, args):
    sites = zvm.virtualization_sites()
    peers = {p["SiteIdentifier"]: p for p in zvm.peer_sites()}
    rows = []
    for s in sites:
        peer = peers.get(s["SiteIdentifier"])
        rows.append({"Name": s["VirtualizationSiteName"], "Identifier": s["SiteIdentifier"],
                     "Role": "local" if s["IsLocal"] else "peer",
                     "Pairing": name(enums.PairingStatus, peer["PairingStatus"]) if peer else "",
                     "Address": f"{peer['HostName']}:{peer['Port']}" if peer else "",
                     "Inventory": s["InventoryLoadedAt"]})
    return sites, rows, ["Name", "Identifier", "Role", "Pairing", "Address", "Inventory"]


def _hosts(zvm: ZvmClient, args):
    hosts = zvm.hosts(local_site_id(zvm, args.site))
    rows = [{"Name": h["VirtualizationHostName"], "Identifier": h["HostIdentifier"], "State": h["ConnectionState"],
             "Datastores": ",".join(h["DatastoreIdentifiers"]), "Networks": ",".join(h["NetworkIdentifiers"])}
            for h in hosts]
    return hosts, rows, ["Name", "Identifier", "State", "Datastores", "Networks"]


def _vms(zvm: ZvmClient, args):
    vms = zvm.vms(local_site_id(zvm, args.site))
    rows = [{"Name": v["VmName"], "Identifier": v["VmIdentifier"], "Power": v["PowerState"],
             "SizeGiB": round(v["ProvisionedStorageInBytes"] / (1 << 30), 1), "VPG": v["VpgIdentifier"] or ""}
            for v in vms]
    return vms, rows, ["Name", "Identifier", "Power", "SizeGiB", "VPG"]


def _vras(zvm: ZvmClient, args):
    vras = zvm.vras()
    rows = [{"Name": v["VraName"], "Identifier": v["VraIdentifier"], "Host": v["HostName"],
             "State": name(enums.VraStatus, v["State"]), "Reachable": "yes" if v["Reachable"] else "no",
             "IP": v["VraNetworkDataApi"]["VraIPAddress"] or v["VraNetworkDataApi"]["VraIPConfigurationTypeApi"],
             "ProtectedVMs": v["ProtectedVmsCount"]} for v in vras]
    return vras, rows, ["Name", "Identifier", "Host", "State", "Reachable", "IP", "ProtectedVMs"]


def _vpgs(zvm: ZvmClient, args):
    vpgs = zvm.vpgs(status=args.status)
    rows = [{"Name": v["VpgName"], "Status": name(enums.VpgStatus, v["Status"]),
             "SubStatus": name(enums.VpgSubStatus, v["SubStatus"]), "VMs": v["VmsCount"],
             "RPO(s)": v["ActualRPO"], "Threshold(s)": v["ConfiguredRpoSeconds"],
             "Recovery": v["RecoverySite"]["SiteName"], "Priority": name(enums.VpgPriority, v["Priority"])}
            for v in vpgs]
    return vpgs, rows, ["Name", "Status", "SubStatus", "VMs", "RPO(s)", "Threshold(s)", "Recovery", "Priority"]


def _protected_vms(zvm: ZvmClient, args):
    vpg = find_vpg(zvm, args.vpg)["VpgIdentifier"] if args.vpg else None
    vms = zvm.protected_vms(vpg=vpg)
    rows = [{"VM": v["VmName"], "Identifier": v["VmIdentifier"], "VPG": v["VpgName"],
             "Status": name(enums.VpgStatus, v["Status"]), "RPO(s)": v["ActualRPO"]} for v in vms]
    return vms, rows, ["VM", "Identifier", "VPG", "Status", "RPO(s)"]


def _checkpoints(zvm: ZvmClient, args):
    vpg = find_vpg(zvm, args.vpg)
    cps = zvm.checkpoints(vpg["VpgIdentifier"], tagged_only=args.tagged or None, limit=args.limit, start=args.since)
    rows = [{"Time": c["TimeStamp"], "Tag": c["Tag"], "Consistent": "yes" if c["IsConsistent"] else "no",
             "Identifier": c["CheckpointIdentifier"]} for c in cps]
    return cps, rows, ["Time", "Tag", "Consistent", "Identifier"]


def _tasks(zvm: ZvmClient, args):
    tasks = zvm.tasks(state=args.state, limit=args.limit)
    return tasks, [task_row(t) for t in tasks], ["Type", "State", "Progress", "Step", "By", "Created", "Identifier"]


def task_row(t: dict) -> dict:
    return {"Type": name(enums.TaskType, t["Type"]), "State": name(enums.TaskState, t["Status"]["State"]),
            "Progress": f"{t['Status']['Progress']}%", "Step": t["Step"], "By": t["InitiatedBy"],
            "Created": t["Created"], "Identifier": t["TaskIdentifier"]}


def _alerts(zvm: ZvmClient, args):
    alerts = zvm.alerts(active=None if args.all else True)
    rows = [{"Level": name(enums.AlertLevel, a["Level"]), "Code": a["Code"],
             "Entity": f"{name(enums.AlertEntity, a['Entity'])} {a['EntityIdentifier']}", "Since": a["TurnedOn"],
             "Active": "yes" if a["IsActive"] else "no", "Dismissed": "yes" if a["IsDismissed"] else "no",
             "Description": a["Description"]} for a in alerts]
    return alerts, rows, ["Level", "Code", "Entity", "Since", "Active", "Dismissed", "Description"]


def _events(zvm: ZvmClient, args):
    events = zvm.events(limit=args.limit)
    rows = [{"When": e["Started"], "Event": e["EventKind"], "User": e["User"], "Result": e["Result"],
             "Description": e["Description"]} for e in events]
    return events, rows, ["When", "Event", "User", "Result", "Description"]


def _reports(zvm: ZvmClient, args):
    vpg = find_vpg(zvm, args.vpg)["VpgIdentifier"] if args.vpg else None
    reports = zvm.recovery_reports(vpg=vpg, limit=args.limit)
    rows = [{"VPG": r["VpgName"], "Type": r["Type"], "State": r["State"], "Result": r["Result"],
             "Checkpoint": r["CheckpointTime"], "RTO(s)": r["RtoInSeconds"], "Duration(s)": r["DurationInSeconds"],
             "Started": r["StartedAt"], "Identifier": r["OperationIdentifier"]} for r in reports]
    return reports, rows, ["VPG", "Type", "State", "Result", "Checkpoint", "RTO(s)", "Duration(s)", "Started",
                           "Identifier"]
