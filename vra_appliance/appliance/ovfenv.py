"""The appliance's OVF environment: where it is found, and the settings it holds, checked property by property.

vCenter gives a VM its vApp properties as an OVF environment document (``ovf-env.xml``), through one of the
transports the descriptor names: ``iso`` (a CD-ROM labelled "OVF ENV" holding the file) or
``com.vmware.guestInfo`` (the guestinfo key ``guestinfo.ovfEnv``, read with open-vm-tools). ``parse`` reads
the document into ``Settings``; every problem is an ``EnvError`` naming the property to fix, so the console
and the log can say exactly that. ``render`` writes such a document (tests and the build use it).
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

OE = "http://schemas.dmtf.org/ovf/environment/1"
VE = "http://www.vmware.com/schema/ovfenv"
ISO_LABEL = "OVF ENV"
FILE_NAME = "ovf-env.xml"
HOSTNAME_RE = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")
VRA_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
DNS_NAME_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")
SSH_KEY_RE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com)"
                        r" [A-Za-z0-9+/]+={0,3}( [^\n\r]*)?$")


class EnvError(Exception):
    """The OVF environment is unusable; ``prop`` names the property to fix (None: the document itself)."""

    def __init__(self, prop: str | None, message: str) -> None:
        self.prop = prop
        where = f"OVF property '{prop}'" if prop else "the OVF environment"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Settings:
    zvm_address: str
    zvm_port: int
    zvm_scheme: str
    vra_id: str
    enroll_token: str
    zvm_ca_fingerprint: str
    ip_mode: str  # "dhcp" or "static"
    ip_address: str = ""
    prefix: int = 0
    gateway: str = ""
    dns: tuple[str, ...] = ()
    hostname: str = ""
    ssh_public_key: str = ""
    control_port: int = 4005
    nbd_port: int = 0  # 0: point-in-time images only on the appliance's unix socket
    host_id: str = ""

    @property
    def zvm_url(self) -> str:
        host = f"[{self.zvm_address}]" if ":" in self.zvm_address else self.zvm_address
        return f"{self.zvm_scheme}://{host}:{self.zvm_port}"

    def redacted(self) -> dict:
        """For logs and the status file: everything but the token."""
        d = dict(self.__dict__)
        d["enroll_token"] = "(set)" if self.enroll_token else "(empty)"
        return d


def properties_of(xml_text: str) -> dict[str, str]:
    """The key -> value pairs of an OVF environment document's PropertySection."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise EnvError(None, f"{FILE_NAME} is not valid XML ({exc}): redeploy, or fix the vApp options") from None
    if root.tag != f"{{{OE}}}Environment":
        raise EnvError(None, f"{FILE_NAME} is not an OVF environment (root element {root.tag})")
    props: dict[str, str] = {}
    for p in root.iter(f"{{{OE}}}Property"):
        key = p.get(f"{{{OE}}}key")
        if key:
            props[key] = p.get(f"{{{OE}}}value", "")
    return props


def _port(props: dict[str, str], key: str, default: int, allow_zero: bool = False) -> int:
    raw = props.get(key, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not (0 if allow_zero else 1) <= int(raw) <= 65535:
        raise EnvError(key, f"{raw!r} is not a TCP port (1-65535)")
    return int(raw)


def _ip(props: dict[str, str], key: str) -> str:
    raw = props.get(key, "").strip()
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise EnvError(key, f"{raw!r} is not an IP address" if raw else "is empty; static IP configuration "
                       "needs it") from None


def _prefix(props: dict[str, str], ip: str) -> int:
    """``prefix`` (a length) or ``netmask`` (dotted, or a length too), whichever is set."""
    key = "prefix" if props.get("prefix", "").strip() else "netmask"
    raw = props.get(key, "").strip()
    if not raw:
        raise EnvError("netmask", "is empty; static IP configuration needs it (or 'prefix')")
    try:
        return ipaddress.ip_interface(f"{ip}/{raw}").network.prefixlen
    except ValueError:
        raise EnvError(key, f"{raw!r} is not a subnet mask or prefix length") from None


def parse(xml_text: str) -> Settings:
    """``Settings`` from an OVF environment document, or the ``EnvError`` of the first bad property."""
    props = properties_of(xml_text)

    def required(key: str) -> str:
        value = props.get(key, "").strip()
        if not value:
            raise EnvError(key, "is missing or empty: set it in the VM's vApp options (the ZVM sets it at install)")
        return value

    address = required("zvm_address")
    try:
        address = str(ipaddress.ip_address(address))
    except ValueError:
        if not DNS_NAME_RE.match(address):
            raise EnvError("zvm_address", f"{address!r} is neither an IP address nor a host name") from None
    scheme = props.get("zvm_scheme", "").strip() or "https"
    if scheme not in ("https", "http"):
        raise EnvError("zvm_scheme", f"{scheme!r} is not https or http")
    vra_id = required("vra_id")
    if not VRA_ID_RE.match(vra_id):
        raise EnvError("vra_id", f"{vra_id!r} is not a VRA id (letters, digits, '.', '_', ':', '-')")
    fp = props.get("zvm_ca_fingerprint", "").strip().lower().replace(":", "")
    if not re.fullmatch(r"[0-9a-f]{64}", fp):
        raise EnvError("zvm_ca_fingerprint", "is not a SHA-256 fingerprint (64 hexadecimal digits)"
                       if fp else "is missing: the ZVM sets it at install")
    token = props.get("enroll_token", "").strip()
    if any(c.isspace() for c in token):
        raise EnvError("enroll_token", "contains white space: copy the token again")
    mode = (props.get("ip_mode", "").strip() or "dhcp").lower()
    if mode not in ("dhcp", "static"):
        raise EnvError("ip_mode", f"{mode!r} is not dhcp or static")
    ip, prefix, gateway = "", 0, ""
    if mode == "static":
        ip = _ip(props, "ip_address")
        prefix = _prefix(props, ip)
        if props.get("gateway", "").strip():
            gateway = _ip(props, "gateway")
    dns: list[str] = []
    for raw in re.split(r"[,\s]+", props.get("dns", "").strip()):
        if raw:
            try:
                dns.append(str(ipaddress.ip_address(raw)))
            except ValueError:
                raise EnvError("dns", f"{raw!r} is not an IP address") from None
    hostname = props.get("hostname", "").strip()
    if hostname and not HOSTNAME_RE.match(hostname):
        raise EnvError("hostname", f"{hostname!r} is not a host name (letters, digits and '-', 63 at most)")
    if not hostname:  # the VRA id, made a valid host name
        hostname = re.sub(r"[^A-Za-z0-9-]", "-", f"zvra-{vra_id}")[:63].strip("-")
    key = props.get("ssh_public_key", "").strip()
    if key and not SSH_KEY_RE.match(key):
        raise EnvError("ssh_public_key", "is not one OpenSSH public key line ('ssh-ed25519 AAAA... comment')")
    return Settings(zvm_address=address, zvm_port=_port(props, "zvm_port", 9080), zvm_scheme=scheme,
                    vra_id=vra_id, enroll_token=token, zvm_ca_fingerprint=fp, ip_mode=mode, ip_address=ip,
                    prefix=prefix, gateway=gateway, dns=tuple(dns), hostname=hostname, ssh_public_key=key,
                    control_port=_port(props, "control_port", 4005),
                    nbd_port=_port(props, "nbd_port", 0, allow_zero=True),
                    host_id=props.get("host_id", "").strip())


def render(properties: dict[str, str], vm_id: str = "") -> str:
    """An OVF environment document as vCenter writes it (PlatformSection left out)."""
    ET.register_namespace("oe", OE)
    ET.register_namespace("ve", VE)
    root = ET.Element(f"{{{OE}}}Environment", {f"{{{OE}}}id": "", f"{{{VE}}}vCenterId": vm_id})
    section = ET.SubElement(root, f"{{{OE}}}PropertySection")
    for key, value in properties.items():
        ET.SubElement(section, f"{{{OE}}}Property", {f"{{{OE}}}key": key, f"{{{OE}}}value": str(value)})
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# -- finding it in the guest ---------------------------------------------------------------------------------
def read_from_cdrom(mount_dir: Path, devices: tuple[str, ...] = ()) -> str | None:
    """The document on the "OVF ENV" CD-ROM (mounted read-only, then unmounted), or None if there is none."""
    label = Path("/dev/disk/by-label/OVF\\x20ENV")
    candidates = [str(label)] if label.exists() else []
    candidates += [d for d in (devices or ("/dev/sr0", "/dev/sr1", "/dev/cdrom")) if Path(d).exists()]
    mount_dir.mkdir(parents=True, exist_ok=True)
    for dev in candidates:
        if subprocess.run(["mount", "-o", "ro", "-t", "iso9660", dev, str(mount_dir)],
                          capture_output=True).returncode != 0:
            continue
        try:
            f = mount_dir / FILE_NAME
            return f.read_text(encoding="utf-8", errors="replace") if f.exists() else None
        finally:
            subprocess.run(["umount", str(mount_dir)], capture_output=True)
    return None


def read_from_guestinfo() -> str | None:
    """``guestinfo.ovfEnv`` through open-vm-tools (on ESXi), or None off VMware or without it."""
    for argv in (["vmware-rpctool", "info-get guestinfo.ovfEnv"],
                 ["vmtoolsd", "--cmd", "info-get guestinfo.ovfEnv"]):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout
    return None


def find(mount_dir: Path) -> tuple[str, str]:
    """(document, where it came from); EnvError if neither transport has one."""
    text = read_from_cdrom(mount_dir)
    if text is not None:
        return text, "iso"
    text = read_from_guestinfo()
    if text is not None:
        return text, "com.vmware.guestInfo"
    raise EnvError(None, "not found: no CD-ROM labelled 'OVF ENV' holding ovf-env.xml and no guestinfo.ovfEnv; "
                   "deploy the appliance from its OVF with vApp options enabled")
