"""The appliance's operating-system settings made from its OVF environment: host name, network
(systemd-networkd), firewall (nftables) and SSH. The texts are pure functions of ``Settings`` (tested off the
appliance); ``apply`` writes them and makes the system take them.

Everything derived from the environment is written under ``/run`` (networkd's runtime directory, the
firewall ruleset) and made again at every boot, so a changed environment leaves nothing of the old one
behind. The firewall drops every incoming connection but to the VRA's port (4005), SSH only when the
``ssh_public_key`` property is set, and NBD images only when ``nbd_port`` is; the ruleset of the image
(``/etc/nftables.conf``, loaded before the network is up) is the same default with 4005 alone.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import time
from pathlib import Path

from vra_appliance.appliance.ovfenv import Settings

NETWORK_FILE = Path("/run/systemd/network/10-zvr-vra.network")
RULESET_FILE = Path("/run/zvr-appliance/nftables.conf")
AUTHORIZED_KEYS = Path("/root/.ssh/authorized_keys")


def network_unit(s: Settings) -> str:
    lines = ["# written at boot by the appliance from its OVF environment (vra appliance firstboot)",
             "[Match]", "Type=ether", "Name=en* eth*", "", "[Network]"]
    if s.ip_mode == "dhcp":
        lines.append("DHCP=yes")
    else:
        lines.append(f"Address={s.ip_address}/{s.prefix}")
        if s.gateway:
            lines.append(f"Gateway={s.gateway}")
    lines += [f"DNS={d}" for d in s.dns]
    lines += ["IPv6AcceptRA=no", "LinkLocalAddressing=no"]
    if s.ip_mode == "dhcp":
        lines += ["", "[DHCPv4]", f"Hostname={s.hostname}"]
    return "\n".join(lines) + "\n"


def open_ports(s: Settings) -> list[tuple[int, str]]:
    ports = [(s.control_port, "VRA gRPC")]
    if s.ssh_public_key:
        ports.append((22, "SSH (a public key is set)"))
    if s.nbd_port:
        ports.append((s.nbd_port, "NBD point-in-time images"))
    return ports


def ruleset(s: Settings | None) -> str:
    """The nftables ruleset; None: the image's default (4005 alone)."""
    ports = sorted({p for p, _ in open_ports(s)}) if s else [4005]
    return f"""#!/usr/sbin/nft -f
# ZVR VRA appliance: every incoming connection is dropped but to these ports
flush ruleset
table inet zvr {{
  chain input {{
    type filter hook input priority filter; policy drop;
    iif lo accept
    ct state established,related accept
    ct state invalid drop
    ip protocol icmp accept
    ip6 nexthdr icmpv6 accept
    udp sport 67 udp dport 68 accept
    tcp dport {{ {", ".join(map(str, ports))} }} accept
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
  }}
}}
"""


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise OSError(f"{' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip()}")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def apply_firewall(s: Settings | None) -> None:
    _write(RULESET_FILE, ruleset(s))
    _run(["nft", "-f", str(RULESET_FILE)])


def apply_hostname(s: Settings) -> None:
    _write(Path("/etc/hostname"), s.hostname + "\n")
    socket.sethostname(s.hostname)


def apply_ssh(s: Settings) -> None:
    """SSH for root with the given key only (no passwords); without a key, no SSH at all."""
    if s.ssh_public_key:
        AUTHORIZED_KEYS.parent.mkdir(mode=0o700, exist_ok=True)
        _write(AUTHORIZED_KEYS, s.ssh_public_key + "\n", 0o600)
        if not list(Path("/etc/ssh").glob("ssh_host_*_key")):
            _run(["ssh-keygen", "-A"])  # this appliance's own host keys, never the image's
        _run(["systemctl", "start", "ssh.service"])
    else:
        AUTHORIZED_KEYS.unlink(missing_ok=True)
        subprocess.run(["systemctl", "stop", "ssh.service"], capture_output=True)


def apply_network(s: Settings) -> None:
    if not NETWORK_FILE.exists() or NETWORK_FILE.read_text() != network_unit(s):
        _write(NETWORK_FILE, network_unit(s))
        _run(["networkctl", "reload"])
        subprocess.run(["networkctl", "reconfigure", *interfaces()], capture_output=True)


def interfaces() -> list[str]:
    return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(("en", "eth")))


def addresses() -> list[str]:
    """This appliance's global addresses (``ip -j addr``), as ADDRESS/PREFIX."""
    proc = subprocess.run(["ip", "-j", "addr", "show", "scope", "global"], capture_output=True, text=True)
    if proc.returncode != 0:
        return []
    out = []
    for link in json.loads(proc.stdout or "[]"):
        for a in link.get("addr_info", []):
            out.append(f"{a['local']}/{a['prefixlen']}")
    return out


def wait_for_address(s: Settings, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        have = addresses()
        if s.ip_mode == "static":
            want = ipaddress.ip_interface(f"{s.ip_address}/{s.prefix}")
            if any(ipaddress.ip_interface(a) == want for a in have):
                return have
        elif have:
            return have
        if time.monotonic() >= deadline:
            return have
        time.sleep(0.5)
