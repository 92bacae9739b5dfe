#!/usr/bin/env python3
"""Protect every VM of a vCenter folder with one VPG: pyVmomi finds the VMs, zvm.client protects them.

    ZVM_PASSWORD=... VCENTER_PASSWORD=... python docs/protect_folder.py \\
        --zvm-url https://zvm-a.example:9080 --zvm-ca-file /etc/zvm/ca.pem \\
        --vcenter-url https://vc-a.example/sdk --vcenter-user administrator@vsphere.local \\
        --folder "DC0/vm/Finance" --vpg-name finance \\
        --recovery-site "Site B" --recovery-host esx-b1.example --recovery-datastore ds-b1

VMs already protected by another VPG are left out (and listed). The recovery site defaults to this site
(replication to self). The script waits for the VPG's commit task unless --no-wait is given, and exits
non-zero if the task fails.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from urllib.parse import urlsplit

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from zvm.client import TaskFailedError, ZvmClient
from zvm.errors import ZvmError


def folder_vms(vcenter_url: str, user: str, password: str, folder_path: str, insecure: bool) -> list[tuple]:
    """(moid, name) of the VMs in the folder (and its subfolders), by inventory path "DC/vm/Sub"."""
    parts = urlsplit(vcenter_url if "//" in vcenter_url else f"https://{vcenter_url}")
    kwargs = dict(host=parts.hostname, port=parts.port or (443 if parts.scheme == "https" else 80), user=user,
                  pwd=password, protocol=parts.scheme, path=parts.path or "/sdk")
    if parts.scheme == "https" and insecure:
        kwargs["sslContext"] = ssl._create_unverified_context()  # labs only
    si = SmartConnect(**kwargs)
    try:
        folder = si.RetrieveContent().searchIndex.FindByInventoryPath(folder_path)
        if not isinstance(folder, vim.Folder):
            raise SystemExit(f"no VM folder at {folder_path!r}: give the inventory path, e.g. DC0/vm/Finance")
        found, todo = [], [folder]
        while todo:
            for child in todo.pop().childEntity:
                if isinstance(child, vim.VirtualMachine):
                    found.append((child._moId, child.name))
                elif isinstance(child, vim.Folder):
                    todo.append(child)
        return sorted(found, key=lambda vm: vm[1])
    finally:
        Disconnect(si)


def by_name(items: list[dict], key: str, name: str, what: str) -> dict:
    for item in items:
        if item[key] == name:
            return item
    raise SystemExit(f"no {what} named {name!r}; there are: {', '.join(i[key] for i in items)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zvm-url", required=True)
    p.add_argument("--zvm-user", default="admin")
    p.add_argument("--zvm-ca-file", help="CA bundle of the ZVM's HTTPS certificate")
    p.add_argument("--vcenter-url", required=True)
    p.add_argument("--vcenter-user", required=True)
    p.add_argument("--insecure", action="store_true", help="do not verify certificates (labs only)")
    p.add_argument("--folder", required=True, help="inventory path of the VM folder, e.g. DC0/vm/Finance")
    p.add_argument("--vpg-name", required=True)
    p.add_argument("--recovery-site", help="name of the recovery site (default: this site)")
    p.add_argument("--recovery-host", required=True, help="ESXi host name at the recovery site")
    p.add_argument("--recovery-datastore", required=True, help="datastore name at the recovery site")
    p.add_argument("--rpo", type=int, default=300, help="RPO alert threshold in seconds")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the commit task")
    args = p.parse_args(argv)

    vms = folder_vms(args.vcenter_url, args.vcenter_user, os.environ["VCENTER_PASSWORD"], args.folder,
                     args.insecure)
    verify: bool | str = False if args.insecure else (args.zvm_ca_file or True)
    with ZvmClient(args.zvm_url, verify=verify).login(args.zvm_user, os.environ["ZVM_PASSWORD"]) as zvm:
        sites = zvm.virtualization_sites()
        site = (by_name(sites, "VirtualizationSiteName", args.recovery_site, "site") if args.recovery_site
                else next(s for s in sites if s["IsLocal"]))
        sid = site["SiteIdentifier"]
        host = by_name(zvm.hosts(sid), "VirtualizationHostName", args.recovery_host, "host")
        datastore = by_name(zvm.datastores(sid), "DatastoreName", args.recovery_datastore, "datastore")
        protected = {v["VmIdentifier"]: v["VpgName"] for v in zvm.protected_vms()}
        for moid, name in vms:
            if moid in protected:
                print(f"skipping {name}: protected by VPG {protected[moid]} already")
        wanted = [moid for moid, _ in vms if moid not in protected]
        if not wanted:
            print(f"nothing to protect in {args.folder}")
            return 0
        try:
            task = zvm.create_vpg(args.vpg_name, wanted, recovery_site=sid, recovery_host=host["HostIdentifier"],
                                  recovery_datastore=datastore["DatastoreIdentifier"], rpo_seconds=args.rpo)
        except ZvmError as exc:
            print(f"the ZVM refused the VPG: {exc}", file=sys.stderr)
            return 1
        print(f"VPG {args.vpg_name}: {len(wanted)} VM(s) from {args.folder}, task {task}")
        if args.no_wait:
            return 0
        try:
            done = zvm.wait_for_task(task, on_progress=lambda t: print(
                f"  {t['Status']['Progress']:3d}% {t['Step']}"))
        except TaskFailedError as exc:
            print(f"the VPG was not set up: {exc}", file=sys.stderr)
            return 1
        print(f"done: {done['Step']}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
