"""Simulated vCenters (vcsim) for the lab and the tests.

The simulator is a small Go main kept in ``tests/vcsim/`` and built from Debian's govmomi library in GOPATH
mode. It is built once into a cache folder keyed by a hash of its source, and rebuilt when the source
changes. ``Vcsim`` starts one simulator process and knows its URL, credentials and datastore directories.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from zvm.errors import ConfigError, TransientError

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIR = REPO_ROOT / "tests" / "vcsim"
GOPATH = "/usr/share/gocode"
GOVMOMI_SIMULATOR = Path(GOPATH) / "src/github.com/vmware/govmomi/simulator"


def cache_dir() -> Path:
    return Path(os.environ.get("ZVR_CACHE_DIR") or REPO_ROOT / ".cache")


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCE_DIR.glob("*.go")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build(force: bool = False) -> Path:
    """Return the path of the vcsim binary, building it first if its source changed."""
    if shutil.which("go") is None or not GOVMOMI_SIMULATOR.is_dir():
        raise ConfigError(
            "building vcsim needs Debian's golang-go and golang-github-vmware-govmomi-dev: "
            "run 'apt-get install golang-go golang-github-vmware-govmomi-dev' (./run does this for you)"
        )
    out_dir = cache_dir() / "vcsim" / _source_hash()
    binary = out_dir / "vcsim"
    if binary.exists() and not force:
        return binary
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # tests and the lab may build at once
        if binary.exists() and not force:
            return binary
        env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOFLAGS="",
                   GOCACHE=str(cache_dir() / "gocache"))
        tmp = out_dir / "vcsim.tmp"
        proc = subprocess.run(["go", "build", "-o", str(tmp), "."], cwd=SOURCE_DIR, env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise ConfigError(f"building vcsim from {SOURCE_DIR} failed:\n{proc.stderr.strip()}")
        tmp.rename(binary)
    return binary


@dataclass
class VcsimSpec:
    """The inventory a simulated vCenter starts with."""

    datacenters: int = 1
    clusters: int = 1
    hosts_per_cluster: int = 3
    standalone_hosts: int = 0
    vms_per_pool: int = 2
    datastores: int = 1
    portgroups: int = 1
    disk_mb: int = 64
    username: str = "administrator@vsphere.local"
    password: str = "vmware"
    listen: str = "127.0.0.1:0"
    tls: bool = False  # https with a self-signed certificate, as a real vCenter (pin it by fingerprint)
    tls_cert: str = ""  # with tls: this PEM certificate and key instead (e.g. signed by a test CA)
    tls_key: str = ""

    def args(self, data_dir: Path) -> list[str]:
        return [
            f"-listen={self.listen}", f"-dc={self.datacenters}", f"-cluster={self.clusters}",
            f"-host={self.hosts_per_cluster}", f"-standalone-host={self.standalone_hosts}",
            f"-vm={self.vms_per_pool}", f"-ds={self.datastores}", f"-pg={self.portgroups}",
            f"-disk-mb={self.disk_mb}", f"-dir={data_dir}", f"-username={self.username}",
            f"-password={self.password}", f"-tls={'true' if self.tls else 'false'}",
            *([f"-tls-cert={self.tls_cert}", f"-tls-key={self.tls_key}"] if self.tls_cert else []),
        ]


@dataclass
class Vcsim:
    """One running simulated vCenter."""

    name: str
    url: str
    username: str
    password: str
    datastores: dict[str, str]
    pid: int
    data_dir: str
    log: str = ""
    process: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @classmethod
    def start(cls, name: str, data_dir: Path, spec: VcsimSpec | None = None, *,
              detach: bool = False, timeout: float = 60.0) -> Vcsim:
        """Start a simulator; with ``detach`` it outlives this process (the lab), else it is a child."""
        spec = spec or VcsimSpec()
        binary = build()
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = data_dir / "vcsim.log"
        log = open(log_path, "ab")
        proc = subprocess.Popen([str(binary), *spec.args(data_dir)], stdout=subprocess.PIPE, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=detach)
        log.close()
        deadline = time.monotonic() + timeout
        line = b""
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line or proc.poll() is not None:
                break
        if not line.startswith(b"{"):
            proc.kill()
            proc.wait()
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise TransientError(f"vcsim '{name}' did not start: {tail[0]} (log: {log_path})")
        info = json.loads(line)
        if detach:
            proc.stdout.close()
        return cls(name=name, url=info["url"], username=spec.username, password=spec.password,
                   datastores=info["datastores"], pid=info["pid"], data_dir=str(data_dir),
                   log=str(log_path), process=None if detach else proc)

    @property
    def host_port(self) -> str:
        return self.url.split("//", 1)[1].split("/", 1)[0]

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the simulator; it removes its datastore directories on the way out."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            if self.process.stdout:
                self.process.stdout.close()
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            time.sleep(0.05)
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)

    def to_dict(self) -> dict:
        return {"name": self.name, "url": self.url, "username": self.username, "password": self.password,
                "datastores": self.datastores, "pid": self.pid, "data_dir": self.data_dir, "log": self.log}

    @classmethod
    def from_dict(cls, data: dict) -> Vcsim:
        return cls(**data)
