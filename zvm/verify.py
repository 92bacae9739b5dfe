"""``zvm verify-checkpoint``: order a recoverability check of a checkpoint (zvm/orchestration/recoverability.py)
and wait for its verdict.

    zvm verify-checkpoint VPG [CHECKPOINT]      (VPG: name or identifier; CHECKPOINT: identifier, default
                                                 the newest consistent one)

Logs in to the ZVM of the VPG's recovery site given by ``--url`` (ZVM_URL) as ``--user`` (ZVM_USER, default
admin) with ZVM_PASSWORD, posts /v1/vpgs/{id}/checkpoints/{cp}/verify, follows the task and prints what each
VM's check found. Exit status 0: passed; 1: the check failed (the alert VpgCheckpointVerifyFailed is up) or
could not run (the message says why, e.g. no guest runner configured on that ZVM).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from zvm.client import TaskFailedError, ZvmClient
from zvm.errors import ConfigError, NotFoundError


def register(subparsers) -> None:
    p = subparsers.add_parser("verify-checkpoint", help="boot a checkpoint in an isolated guest and check it",
                              description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("vpg", help="the VPG's name or identifier")
    p.add_argument("checkpoint", nargs="?", help="checkpoint identifier (default: the newest consistent one)")
    p.add_argument("--url", default=os.environ.get("ZVM_URL"), help="the ZVM (default ZVM_URL)")
    p.add_argument("--user", default=os.environ.get("ZVM_USER", "admin"))
    p.add_argument("--ca-file", help="the ZVM's site CA (DATA_DIR/pki/ca.pem)")
    p.add_argument("--fingerprint", help="the SHA-256 fingerprint of the ZVM's certificate")
    p.add_argument("--insecure", action="store_true", help="do not verify the ZVM's certificate (labs only)")
    p.add_argument("--no-wait", action="store_true", help="print the task identifier and return")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the verdict")
    p.add_argument("--json", action="store_true", help="print the task as JSON")
    p.set_defaults(func=run)


def _vpg(zvm: ZvmClient, wanted: str) -> dict:
    vpgs = zvm.request("GET", "/vpgs") or []
    for v in vpgs:
        if wanted in (v.get("VpgIdentifier"), v.get("VpgName")):
            return v
    raise NotFoundError(f"no VPG named {wanted!r}: list them with `zvm vpgs`")


def run(args) -> int:
    if not args.url:
        raise ConfigError("no ZVM: give --url or set ZVM_URL (`zvm lab env recovery` prints it in a lab)")
    password = os.environ.get("ZVM_PASSWORD")
    if password is None:
        raise ConfigError("no password: set ZVM_PASSWORD")
    verify: bool | str = False if args.insecure else (args.ca_file or True)
    with ZvmClient(args.url, verify=verify, fingerprint=None if args.insecure else args.fingerprint) as zvm:
        zvm.login(args.user, password)
        vpg = _vpg(zvm, args.vpg)
        cp = args.checkpoint
        if not cp:
            listed = zvm.request("GET", f"/vpgs/{vpg['VpgIdentifier']}/checkpoints",
                                 params={"consistentOnly": "true", "limit": 1}) or []
            if not listed:
                raise NotFoundError(f"VPG {vpg['VpgName']} has no consistent checkpoint yet")
            cp = listed[0]["CheckpointIdentifier"]
        task = zvm.request("POST", f"/vpgs/{vpg['VpgIdentifier']}/checkpoints/{cp}/verify")
        task_id = task["TaskIdentifier"] if isinstance(task, dict) else task
        if args.no_wait:
            print(task_id)
            return 0
        try:
            done = zvm.wait_for_task(task_id, timeout=args.timeout)
        except TaskFailedError as exc:
            print(f"FAILED: {exc}", file=sys.stdout)
            return 1
    if args.json:
        print(json.dumps(done, indent=2))
    else:
        result = done.get("Result") or {}
        print(f"checkpoint {cp}: passed in {result.get('Seconds', '?')} s")
        for vm in result.get("Vms", []):
            print(f"  {vm['Vm']}: {vm['Summary']}")
    return 0

