"""Driving `zvm lab` as a user does (a separate process), and looking into the lab it started."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from vra_appliance.proto.v1 import control_pb2 as cpb
from vra_appliance.proto.v1 import control_pb2_grpc as cpb_grpc

ZVM = [sys.executable, "-m", "zvm.cli"]


def zvm_lab(lab_dir: Path, *args: str, timeout: float = 240, **env_extra) -> subprocess.CompletedProcess:
    env = dict(os.environ, ZVR_LAB_DIR=str(lab_dir), **env_extra)
    return subprocess.run([*ZVM, "lab", *args], env=env, capture_output=True, text=True, timeout=timeout)


def pid_alive(pid: int) -> bool:
    """Running, and not a zombie (the lab's processes are not our children, but be exact anyway)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text`` (this test process excluded)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and pid_alive(int(entry.name)):
            found.append(f"{entry.name}: {cmdline}")
    return found


def wait_for(cond, timeout: float, what: str, poll: float = 0.2):
    """Poll ``cond`` (processes the test does not drive) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def vra_status(state, vra: dict) -> list[cpb.VpgStatus]:
    """The Status of a lab VRA, asked as its ZVM does (mutual TLS with the ZVM's Control certificate)."""
    with state.vra_channel(vra) as channel:
        reply = cpb_grpc.ControlStub(channel).Status(cpb.StatusRequest(), metadata=state.vra_metadata(vra),
                                                     timeout=15)
    return list(reply.vpgs)
