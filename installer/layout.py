"""Where an installed ZVM's files are, and the record of what was installed.

Paths are the ones the running system sees (``/etc/zvm/zvm.toml``); ``Layout.host(path)`` is where the
installer writes them: the same path on a real install, under ``--root DIR`` for a staging tree (tests,
packaging). The unit finds its directories through systemd's own variables (``$CONFIGURATION_DIRECTORY``,
``$STATE_DIRECTORY``), so a staged tree runs where it is when its command line is started directly.

    /etc/zvm/            0750 root:zvm   configuration
      zvm.toml           0640 root:zvm   the ZVM's configuration (zvm/config.py), no secret in it
      tls/zvm.pem, .key  0644 / 0640     the HTTPS certificate and key
      vcenter-ca.pem     0640 root:zvm   the CA bundle that signed vCenter's certificate, when one was given
      install.toml       0640 root:zvm   the answers of the last run, without secrets, and the version
    /var/lib/zvm/        0700 zvm:zvm    data: SQLite database, secret.key, the site CA
    /etc/systemd/system/zvm.service      the unit
    /var/log/zvm/zvm.log                 the service's output when started without systemd
    /run/zvm/zvm.pid                     its process when started without systemd
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE = "zvm"
USER = "zvm"
CONFIG_DIR = "/etc/zvm"
CONFIG = "/etc/zvm/zvm.toml"
TLS_DIR = "/etc/zvm/tls"
TLS_CERT = "/etc/zvm/tls/zvm.pem"
TLS_KEY = "/etc/zvm/tls/zvm.key"
VCENTER_CA = "/etc/zvm/vcenter-ca.pem"
RECORD = "/etc/zvm/install.toml"
DATA_DIR = "/var/lib/zvm"
UNIT = "/etc/systemd/system/zvm.service"
WANTS = "/etc/systemd/system/multi-user.target.wants/zvm.service"
LOG_DIR = "/var/log/zvm"
LOG = "/var/log/zvm/zvm.log"
RUN_DIR = "/run/zvm"
PID = "/run/zvm/zvm.pid"


@dataclass(frozen=True)
class Layout:
    root: Path = Path("/")

    def host(self, path: str) -> Path:
        """Where ``path`` (as the installed system sees it) is on this machine."""
        return self.root / path.lstrip("/")

    @property
    def staged(self) -> bool:
        return self.root.resolve() != Path("/")

    def installed(self) -> bool:
        return self.host(RECORD).is_file()

    def record(self) -> dict[str, Any]:
        """The last run's record: {"version": ..., "tls_fingerprint": ..., "answers": {key: value}}."""
        data = tomllib.loads(self.host(RECORD).read_text())
        answers = {f"{s}.{k}": v for s, table in data.get("answers", {}).items() for k, v in table.items()}
        return {**{k: v for k, v in data.items() if k != "answers"}, "answers": answers}
