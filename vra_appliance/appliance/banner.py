"""The appliance's console banner: its address, enrollment state and last error, on the serial console and
the screen (written to both at each change, and kept as the login prompt's ``/etc/issue``), plus the same
as JSON in ``/run/zvr-appliance/status.json`` for tools."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vra_appliance import __version__

RUN_DIR = Path("/run/zvr-appliance")
CONSOLES = ("/dev/ttyS0", "/dev/tty1")


@dataclass
class Status:
    vra_id: str = ""
    addresses: list[str] = field(default_factory=list)
    ip_mode: str = ""
    zvm: str = ""
    env_source: str = ""
    enrollment: str = "not started"  # not started | waiting for the OVF environment | enrolling | enrolled
    attempt: int = 0
    retry_in_s: float = 0.0
    last_error: str = ""
    open_ports: list[str] = field(default_factory=list)


def render(s: Status) -> str:
    state = s.enrollment
    if s.retry_in_s and state != "enrolled":
        state += f" (attempt {s.attempt}, next in {s.retry_in_s:.0f} s)"
    rows = [("VRA id", s.vra_id or "-"),
            ("Address", ", ".join(s.addresses) + (f" ({s.ip_mode})" if s.ip_mode else "") if s.addresses else "none yet"),
            ("ZVM", s.zvm or "-"), ("Enrollment", state), ("Open ports", ", ".join(s.open_ports) or "-"),
            ("Last error", s.last_error or "none")]
    head = f"ZVR Virtual Replication Appliance {__version__}"
    return "\n".join([head, "=" * len(head), *(f"  {k + ':':<12} {v}" for k, v in rows)]) + "\n\n"


def show(s: Status, run_dir: Path = RUN_DIR, consoles: tuple[str, ...] = CONSOLES) -> None:
    text = render(s)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, data in (("issue", text), ("status.json", json.dumps(asdict(s), indent=1) + "\n")):
        tmp = run_dir / f".{name}.tmp"
        tmp.write_text(data)
        os.replace(tmp, run_dir / name)
    for dev in consoles:
        try:
            fd = os.open(dev, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            os.write(fd, ("\r\n" + text).replace("\n", "\r\n").encode())
        except OSError:
            pass
        finally:
            os.close(fd)
