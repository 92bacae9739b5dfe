"""lab.json: what a lab started and how to reach it, so ``status``, ``down`` and the other lab commands
work from any later shell (and tests read it to find the lab's processes, VRAs and volumes).

Saved after every process the lab starts, before waiting for it, so a lab that fails or is interrupted
half-way can still be stopped completely. The file holds the lab's passwords: it is readable by its owner
only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from zvm.lab.network import LabNetwork
from zvm.lab.processes import LabProcess
from zvm.lab.vcsim import REPO_ROOT, Vcsim

SITES = ("protected", "recovery")
STATE_VERSION = 2


def default_lab_dir() -> Path:
    return Path(os.environ.get("ZVR_LAB_DIR") or REPO_ROOT / "lab-data")


def run_dir_for(lab_dir: Path) -> Path:
    """Where the lab's unix sockets go: inside the lab directory when its path is short enough for them
    (108 bytes, and a socket path adds ~30), else a short directory of its own under the temp dir."""
    lab_dir = lab_dir.resolve()
    if len(str(lab_dir)) <= 60:
        return lab_dir / "run"
    return Path(tempfile.gettempdir()) / f"zvr-lab-{hashlib.sha256(str(lab_dir).encode()).hexdigest()[:10]}"


@dataclass
class LabState:
    lab_dir: Path
    started_at: float = 0.0
    complete: bool = False  # every step of `up` succeeded
    net: int = 0
    run_dir: str = ""
    secret: str = ""  # the VRAs' pairing secret of a lab made before VRAs enrolled (now they use mutual TLS)
    options: dict = field(default_factory=dict)
    vcenters: dict[str, Vcsim] = field(default_factory=dict)
    processes: list[LabProcess] = field(default_factory=list)
    zvms: dict[str, dict] = field(default_factory=dict)  # site -> url, username, password, site_identifier
    vras: dict[str, list[dict]] = field(default_factory=dict)  # site -> one dict per host
    filters: list[dict] = field(default_factory=list)
    wan: dict = field(default_factory=dict)
    vpg: dict = field(default_factory=dict)
    workload: dict = field(default_factory=dict)
    images: list[dict] = field(default_factory=list)  # point-in-time images the lab opened (zvm lab image)

    @property
    def path(self) -> Path:
        return self.lab_dir / "lab.json"

    @property
    def network(self) -> LabNetwork:
        return LabNetwork(self.net)

    @property
    def logs(self) -> Path:
        return self.lab_dir / "logs"

    def vra_channel(self, vra: dict):
        """A gRPC channel to a lab VRA's Control service as its ZVM opens one: mutual TLS with the ZVM's
        Control certificate (DATA_DIR/pki/vra-control.pem, from the site CA the VRA enrolled with)."""
        import grpc

        if not vra.get("tls"):
            return grpc.insecure_channel(vra["listen"])
        pki = self.lab_dir / vra["site"] / "zvm" / "pki"
        creds = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes(),
                                             private_key=(pki / "vra-control.key").read_bytes(),
                                             certificate_chain=(pki / "vra-control.pem").read_bytes())
        return grpc.secure_channel(vra["listen"], creds,
                                   options=[("grpc.ssl_target_name_override", vra["identifier"])])

    def vra_metadata(self, vra: dict) -> tuple:
        """What a Control call to ``vra`` carries: nothing with mutual TLS, the pairing secret otherwise."""
        from vra_appliance.trust.auth import SECRET_KEY

        return () if vra.get("tls") or not self.secret else ((SECRET_KEY, self.secret),)

    def process(self, name: str) -> LabProcess | None:
        return next((p for p in self.processes if p.name == name), None)

    def add(self, proc: LabProcess) -> LabProcess:
        self.processes = [p for p in self.processes if p.name != proc.name] + [proc]
        self.save()
        return proc

    def running(self) -> list[LabProcess]:
        return [p for p in self.processes if p.alive()]

    def save(self) -> None:
        self.lab_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "version": STATE_VERSION, "lab_dir": str(self.lab_dir), "started_at": self.started_at,
            "complete": self.complete, "net": self.net, "run_dir": self.run_dir, "secret": self.secret,
            "options": self.options, "vcenters": {k: v.to_dict() for k, v in self.vcenters.items()},
            "processes": [p.to_dict() for p in self.processes], "zvms": self.zvms, "vras": self.vras,
            "filters": self.filters, "wan": self.wan, "vpg": self.vpg, "workload": self.workload, "images": self.images,
        }
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the lab's passwords
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.chmod(tmp, 0o600)
        tmp.replace(self.path)

    @classmethod
    def load(cls, lab_dir: Path) -> LabState | None:
        path = lab_dir / "lab.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        processes = [LabProcess.from_dict(p) for p in data.get("processes", [])]
        vcenters = {k: Vcsim.from_dict(v) for k, v in data.get("vcenters", {}).items()}
        for site, sim in vcenters.items():  # a lab.json of the first lab version knew only its vcsims
            if not any(p.kind == "vcsim" and p.pid == sim.pid for p in processes):
                processes.append(LabProcess(f"vcsim-{site}", "vcsim", sim.pid, [], sim.log))
        return cls(lab_dir=lab_dir, started_at=data.get("started_at", 0.0), complete=data.get("complete", False),
                   net=data.get("net", 0), run_dir=data.get("run_dir", ""), secret=data.get("secret", ""),
                   options=data.get("options", {}), vcenters=vcenters, processes=processes,
                   zvms=data.get("zvms", {}), vras=data.get("vras", {}), filters=data.get("filters", []),
                   wan=data.get("wan", {}), vpg=data.get("vpg", {}), workload=data.get("workload", {}),
                   images=data.get("images", []))
