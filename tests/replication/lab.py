"""Processes of the end-to-end replication tests: `vra iofilter`, `vra serve`, a Control client, and a
small NBD client for workloads that need to know when a write completed (dependent writes).

Every process gets its own temp directory and a free port (port 0, read back from --port-file); every
process started is stopped by ``Lab.close``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import grpc

from vra_appliance.iofilter import nbd_proto as p
from vra_appliance.iofilter.control import FilterControl
from vra_appliance.proto.v1 import control_pb2 as cpb
from vra_appliance.proto.v1 import control_pb2_grpc as cpb_grpc
from vra_appliance.trust.auth import SECRET_KEY

ROOT = Path(__file__).resolve().parents[2]
SECRET = "lab-pairing-secret"


def wait_for(cond, timeout: float = 20.0, what: str = "condition"):
    """Poll ``cond`` until it is truthy (for processes and threads the test does not drive)."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Proc:
    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict | None = None,
                 log_mode: str = "wb") -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, log_mode)  # "ab": a restarted process appends to its log
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env=full_env)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._log.close()


class Control:
    """The Control service of one VRA, called as the ZVM would (with the pairing secret)."""

    def __init__(self, port: int, secret: str | None = SECRET) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = cpb_grpc.ControlStub(self.channel)
        self.md = ((SECRET_KEY, secret),) if secret is not None else ()

    def __getattr__(self, name: str):
        method = getattr(self.stub, name)
        return lambda request, timeout=30.0: method(request, metadata=self.md, timeout=timeout)

    def vpg_status(self, vpg: str, role: str | None = None) -> cpb.VpgStatus:
        for st in self.Status(cpb.StatusRequest(vpg=vpg)).vpgs:
            if role is None or st.role == role:
                return st
        raise AssertionError(f"no status for VPG {vpg}")

    def wait_streaming(self, vpg: str, timeout: float = 60.0) -> cpb.VpgStatus:
        """Wait until the protect role of ``vpg`` here has no sync needed or running (substatus empty) and
        its stream is up: the next checkpoint is consistent."""

        def streaming():
            st = self.vpg_status(vpg, "protect")
            return st if st.substatus == "" and st.state == "ok" else None

        return wait_for(streaming, timeout, f"VPG {vpg} to be streaming (no sync pending)")

    def close(self) -> None:
        self.channel.close()


def free_port() -> int:
    """A TCP port free right now (for a process that must keep its port across restarts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Vra:
    """A `vra serve` process. ``port``: a fixed gRPC port (0: any), kept across ``kill`` and ``start``."""

    def __init__(self, lab: Lab, vra_id: str, *, split: bool = True, nbd: bool = False, extra=(),
                 port: int = 0) -> None:
        self.vra_id = vra_id
        self.dir = lab.tmp / vra_id
        self.dir.mkdir(exist_ok=True)
        self.split = str(self.dir / "split.sock")
        self.nbd = str(self.dir / "images.sock") if nbd else None
        self.lab = lab
        self.extra = list(extra) + (["--listen", f"127.0.0.1:{port}"] if port else [])
        self.proc: Proc | None = None
        self.port = 0
        self.control: Control | None = None
        self._split = split
        self.start(split=split)

    def kill(self) -> None:
        """kill -9: no clean stop of anything."""
        if self.control is not None:
            self.control.close()
            self.control = None
        self.proc.kill()

    def restart(self) -> None:
        self.start(split=self._split)

    def start(self, split: bool = True) -> None:
        port_file = self.dir / "port"
        if port_file.exists():
            port_file.unlink()
        secret_file = self.dir / "secret"
        secret_file.write_text(SECRET)
        argv = [sys.executable, "-m", "vra_appliance.cli", "serve", "--vra-id", self.vra_id,
                "--listen", "127.0.0.1:0", "--port-file", str(port_file), "--state-dir", str(self.dir / "state"),
                "--pairing-secret-file", str(secret_file), "-v", *self.extra]
        argv += ["--split", self.split] if split else ["--no-split"]
        if self.nbd:
            argv += ["--nbd-unix", self.nbd]
        self.proc = Proc(f"vra-{self.vra_id}", argv, self.lab.tmp, log_mode="ab")
        self.lab.procs.append(self.proc)
        wait_for(lambda: port_file.exists() or not self.proc.alive(), 60, f"vra serve {self.vra_id} to listen")
        assert self.proc.alive(), self.proc.log()
        self.port = int(port_file.read_text())
        if self.control is not None:
            self.control.close()
        self.control = Control(self.port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.proc is not None:
            self.proc.stop()


class Filter:
    def __init__(self, lab: Lab, filter_id: str, volumes: dict[str, Path], vra: Vra, extra=()) -> None:
        self.filter_id = filter_id
        self.lab = lab
        self.dir = lab.tmp / filter_id
        self.dir.mkdir(exist_ok=True)
        self.volumes = volumes
        self.nbd = str(self.dir / "nbd.sock")
        self.control_path = str(self.dir / "control.sock")
        self.argv = [sys.executable, "-m", "vra_appliance.cli", "iofilter", "--unix", self.nbd, "--vra", vra.split,
                     "--control", self.control_path, "--filter-id", filter_id, *extra]
        for vid, path in volumes.items():
            self.argv += ["--volume", f"{vid}={path}"]
        self.proc: Proc | None = None
        self.start()

    def start(self) -> None:
        if os.path.exists(self.control_path):
            os.unlink(self.control_path)  # left behind by a kill -9
        self.proc = Proc(f"iofilter-{self.filter_id}", self.argv, self.lab.tmp, log_mode="ab")
        self.lab.procs.append(self.proc)
        wait_for(lambda: os.path.exists(self.control_path) or not self.proc.alive(), 60, f"iofilter {self.filter_id}")
        assert self.proc.alive(), self.proc.log()
        with FilterControl(self.control_path) as ctl:
            wait_for(lambda: ctl.counters()["vra"] == "connected", 30, f"iofilter {self.filter_id} to reach its VRA")

    def kill(self) -> None:
        """kill -9: the dirty map is not saved (the restarted filter reports its volumes unclean)."""
        self.proc.kill()

    def uri(self, volume: str) -> str:
        return f"nbd+unix:///{volume}?socket={self.nbd}"

    def counters(self) -> dict:
        with FilterControl(self.control_path) as ctl:
            return ctl.counters()

    def stop(self) -> None:
        self.proc.stop()


class Lab:
    def __init__(self, tmp: Path) -> None:
        self.tmp = Path(tmp)
        self.procs: list[Proc] = []

    def vra(self, vra_id: str, **kw) -> Vra:
        return Vra(self, vra_id, **kw)

    def filter(self, filter_id: str, volumes: dict[str, Path], vra: Vra, **kw) -> Filter:
        return Filter(self, filter_id, volumes, vra, **kw)

    def volume(self, name: str, size: int) -> Path:
        path = self.tmp / "datastore" / f"{name}-flat.img"
        path.parent.mkdir(exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size)
        return path

    def close(self) -> None:
        # Filters first (they flush to their VRA), then protect VRAs, then the rest.
        for proc in reversed(self.procs):
            proc.stop()


def run(argv: list[str], timeout: float = 120.0) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{argv[0]} failed ({res.returncode}): {res.stdout}\n{res.stderr}"
    return res.stdout


class NbdClient:
    """Just enough NBD (fixed newstyle, OPT_GO, simple replies) to write and read, one request at a time."""

    def __init__(self, socket_path: str, export: str, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(socket_path)
        self._handle = 0
        _magic, _opt, _flags = p.HANDSHAKE.unpack(self._recv(p.HANDSHAKE.size))
        self.sock.sendall(p.CLIENT_FLAGS.pack(p.CLIENT_FLAG_FIXED_NEWSTYLE | p.CLIENT_FLAG_NO_ZEROES))
        name = export.encode()
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        self.sock.sendall(p.OPTION_HEADER.pack(p.IHAVEOPT, p.OPT_GO, len(data)) + data)
        self.size = None
        while True:
            magic, _opt, rtype, length = p.OPTION_REPLY.unpack(self._recv(p.OPTION_REPLY.size))
            body = self._recv(length)
            if rtype == p.REP_INFO and struct.unpack_from(">H", body)[0] == p.INFO_EXPORT:
                _, self.size, _ = p.INFO_EXPORT_BODY.unpack(body)
            if rtype == p.REP_ACK:
                break
            if rtype not in (p.REP_INFO, p.REP_SERVER):
                raise ConnectionError(f"export {export!r} refused: reply type {rtype:#x} {body!r}")

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("NBD server closed the connection")
            buf += chunk
        return bytes(buf)

    def _request(self, cmd: int, offset: int, length: int, data: bytes = b"") -> bytes:
        self._handle += 1
        self.sock.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, cmd, self._handle, offset, length) + data)
        magic, error, handle = p.SIMPLE_REPLY.unpack(self._recv(p.SIMPLE_REPLY.size))
        if error or handle != self._handle:
            raise OSError(error, f"NBD command {cmd} failed")
        return self._recv(length) if cmd == p.CMD_READ else b""

    def write(self, offset: int, data: bytes) -> None:
        self._request(p.CMD_WRITE, offset, len(data), data)

    def read(self, offset: int, length: int) -> bytes:
        return self._request(p.CMD_READ, offset, length)

    def close(self) -> None:
        try:
            self._handle += 1
            self.sock.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_DISC, self._handle, 0, 0))
        except OSError:
            pass
        self.sock.close()


def wait_seconds(seconds: float) -> None:
    """For workloads that must run for a while (not for synchronisation)."""
    time.sleep(seconds)
