"""The ZVM's configuration: defaults, then a TOML file, then ``ZVM_*`` environment variables, then options.

Every key is checked for its type and range when loaded, and an unknown key is refused with the list of
known ones, so a typo never passes silently. Secrets (the vCenter and admin passwords, a database URL with
a password) may come from the environment or from a file of their own (``admin_password_file``,
``database_url_file``, ``vcenter_password_file``: the file's first line), so they stay out of process
listings (``ps``) and of the configuration file.

    data_dir = "/var/lib/zvm"          # SQLite database, secret.key, certificates
    database_url = ""                  # empty: sqlite:///<data_dir>/zvm.db; or postgresql://...
    database_password_encrypted = ""   # the PostgreSQL password, encrypted with <data_dir>/secret.key
    host = "0.0.0.0"
    port = 9080
    peer_port = 9081
    public_address = ""                # how peers and VRAs reach this ZVM; empty: the host name
    site_name = "Site A"
    tls_certificate = ""               # PEM files for HTTPS; empty: a certificate signed by the site CA is
    tls_key = ""                       #   made at first start (DATA_DIR/pki/api.pem) and its fingerprint printed
    insecure_http = false              # true: plain HTTP, passwords in clear (labs on loopback only)
    login_free_failures = 5            # failed logins per user name / client address before throttling
    login_max_delay = 300              # seconds: the longest a throttled user name or address waits
    session_idle_timeout = 1800        # seconds
    vcenter_url = "https://vc.example/sdk"
    vcenter_username = "administrator@vsphere.local"
    vcenter_password = ""              # better: ZVM_VCENTER_PASSWORD
    vcenter_verify = "true"            # "true", "false" (labs only) or a CA bundle path
    vcenter_thumbprint = ""
    vra_pairing_secret = ""            # better: ZVM_VRA_PAIRING_SECRET (what `vra serve` checks)
    filter_control_template = "/run/zvr/filter.ctl"   # a host's IO filter control socket, seen by its VRA
    workers = 2                        # gunicorn worker processes
    threads = 8                        # threads per worker
    task_workers = 4                   # tasks run at once (those of one VPG or VRA always one at a time)
    metrics_listen = ""                # "HOST:PORT": /metrics without authentication there too (empty: only
                                       #   on the API port, for a session or HTTP Basic of a viewer)
    guest_runner = ""                  # recoverability checks: "local" (QEMU on this machine) or "" (none)
    guest_image_dir = ""               #   the guest's vmlinuz + initrd.gz (guests/image.py); empty: built here
    guest_reports_dir = ""             #   <VM name>-reports.log of protected guests (what they acknowledged)
    verify_every_minutes = 0           #   check each VPG recovered here this often (0: only when asked;
                                       #   fractions allowed, e.g. 0.5); needs guest_runner
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from zvm.errors import ConfigError

ENV_PREFIX = "ZVM_"


@dataclass
class ZvmConfig:
    data_dir: Path = Path("/var/lib/zvm")
    database_url: str = ""
    # The PostgreSQL password kept out of database_url, encrypted with the data directory's secret.key
    # (zvm/db.py SecretBox) as the installer writes it, so the configuration file holds no password in clear.
    database_password_encrypted: str = ""
    host: str = "0.0.0.0"
    port: int = 9080
    peer_port: int = 9081
    public_address: str = ""
    site_name: str = ""  # empty: keep the stored name (the host name at first start)
    site_location: str = ""
    site_contact: str = ""
    tls_certificate: str = ""
    tls_key: str = ""
    insecure_http: bool = False
    session_idle_timeout: int = 1800
    login_free_failures: int = 5
    login_max_delay: int = 300
    admin_username: str = "admin"
    admin_password: str = ""
    admin_password_file: str = ""
    database_url_file: str = ""
    vcenter_password_file: str = ""
    vcenter_url: str = ""
    vcenter_username: str = ""
    vcenter_password: str = ""
    vcenter_verify: str = "true"
    vcenter_thumbprint: str = ""
    # Fallback for VRAs that did not enroll (no certificate): what `vra serve` checks without TLS. Enrolled
    # VRAs are called with mutual TLS (zvm/peer/enrollment.py).
    vra_pairing_secret: str = ""
    # The control socket of a host's IO filter, as its VRA sees it ({vra_id}, {host}, {host_name} filled in)
    filter_control_template: str = "/run/zvr/filter.ctl"
    workers: int = 2
    threads: int = 8
    task_workers: int = 4
    metrics_listen: str = ""
    # Recoverability checks (zvm/orchestration/recoverability.py, docs/GUESTS.md): where the checked guest boots
    guest_runner: str = ""
    guest_image_dir: str = ""
    guest_reports_dir: str = ""
    verify_every_minutes: float = 0.0  # scheduled checks (zvm/orchestration/verify_schedule.py); 0: off
    engine: bool = True  # run the background loops (tasks, inventory, monitoring)
    log_level: str = "info"

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                 if f.name not in ("vcenter_password", "admin_password", "vra_pairing_secret")}
        from zvm.db import redact

        shown["database_url"] = redact(self.database_url)
        return f"ZvmConfig({shown})"

    @property
    def database(self) -> str:
        from zvm.db import SecretBox, default_url, with_password

        if self.database_url and self.database_password_encrypted:
            password = SecretBox.in_dir(self.data_dir).decrypt(self.database_password_encrypted)
            return with_password(self.database_url, password)
        return self.database_url or default_url(self.data_dir)

    @property
    def address(self) -> str:
        return self.public_address or socket.gethostname()

    @property
    def tls(self) -> bool:
        return bool(self.tls_certificate and self.tls_key)

    def validate(self) -> ZvmConfig:
        for name in ("port", "peer_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ConfigError(f"{name} = {value}: give a TCP port between 1 and 65535 (0: any free one)")
        if self.session_idle_timeout < 60:
            raise ConfigError(f"session_idle_timeout = {self.session_idle_timeout}: give at least 60 seconds")
        if not 1 <= self.workers <= 64 or not 1 <= self.threads <= 256:
            raise ConfigError("workers must be 1..64 and threads 1..256")
        if not 1 <= self.task_workers <= 32:
            raise ConfigError(f"task_workers = {self.task_workers}: give 1..32 (tasks the ZVM runs at once)")
        if bool(self.tls_certificate) != bool(self.tls_key):
            raise ConfigError("HTTPS needs both tls_certificate and tls_key (PEM files): set both or neither")
        if self.insecure_http and self.tls_certificate:
            raise ConfigError("insecure_http (--insecure-http) and tls_certificate both set: choose HTTPS or "
                              "plain HTTP")
        if not 1 <= self.login_free_failures <= 1000 or not 1 <= self.login_max_delay <= 86400:
            raise ConfigError("login_free_failures must be 1..1000 and login_max_delay 1..86400 seconds")
        for name in ("tls_certificate", "tls_key"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"{name} = {path!r}: no such file")
        if self.vcenter_url and not self.vcenter_username:
            raise ConfigError("vcenter_url is set but vcenter_username is not: set both")
        if self.vcenter_verify.lower() not in ("true", "false") and not Path(self.vcenter_verify).is_file():
            raise ConfigError(f"vcenter_verify = {self.vcenter_verify!r}: use true, false or a CA bundle file")
        if self.guest_runner not in ("", "local"):
            raise ConfigError(f"guest_runner = {self.guest_runner!r}: use \"local\" (QEMU on this machine) or \"\"")
        if not math.isfinite(self.verify_every_minutes) or self.verify_every_minutes < 0:
            raise ConfigError(f"verify_every_minutes = {self.verify_every_minutes!r}: give a number of minutes "
                              "(0: no scheduled recoverability checks; fractions allowed, e.g. 0.5)")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level = {self.log_level!r}: use debug, info, warning or error")
        try:
            self.filter_control_template.format(vra_id="v", host="h", host_name="n")
        except (KeyError, IndexError, ValueError):
            raise ConfigError(f"filter_control_template = {self.filter_control_template!r}: use only {{vra_id}}, "
                              "{host} and {host_name}") from None
        if self.metrics_listen:
            host, _, port = self.metrics_listen.rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ConfigError(f"metrics_listen = {self.metrics_listen!r}: give HOST:PORT (e.g. 127.0.0.1:9464, "
                                  "or the address of a monitoring network), or leave it empty")
        if self.database_url and not self.database_url.startswith(("sqlite:", "postgres")):
            raise ConfigError("database_url must start with sqlite:/// or postgresql://")
        return self


_FIELDS = {f.name: f for f in dataclasses.fields(ZvmConfig)}


def _coerce(name: str, value, source: str):
    kind = _FIELDS[name].type
    try:
        if kind == "Path":
            if not isinstance(value, str) or not value:
                raise ValueError
            return Path(value).expanduser()
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} = {value!r} is not a valid {kind}") from None


def load_config(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                **overrides) -> ZvmConfig:
    """Defaults < file < environment (``ZVM_PORT`` ...) < overrides (None values are ignored)."""
    values: dict = {}
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
        data = data.get("zvm", data)
        for key, value in data.items():
            if key not in _FIELDS:
                raise ConfigError(f"{path}: unknown key {key!r}; known keys: {', '.join(_FIELDS)}")
            values[key] = _coerce(key, value, str(path))
    env = os.environ if env is None else env
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name in _FIELDS:
            values[name] = _coerce(name, value, f"environment {key}")
    for key, value in overrides.items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown option {key!r}")
        if value is not None:
            values[key] = _coerce(key, value, "option") if not isinstance(value, Path) else value
    for name in SECRET_FILES:
        if values.get(f"{name}_file"):
            values[name] = read_secret_file(values[f"{name}_file"], f"{name}_file")
    return ZvmConfig(**values).validate()


SECRET_FILES = ("admin_password", "database_url", "vcenter_password")


def read_secret_file(path: str, what: str) -> str:
    """The first line of a secret's file, without its line end."""
    try:
        with open(path, encoding="utf-8") as f:
            value = f.readline().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{what} = {path!r}: cannot read it ({exc.strerror})") from None
    if not value:
        raise ConfigError(f"{what} = {path!r}: the file is empty (its first line is the secret)")
    return value
