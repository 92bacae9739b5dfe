"""The systemd unit ``zvm.service``, and its command line as systemd would run it.

The unit runs ``zvm serve`` of the Python environment the installer runs from, as the ``zvm`` user,
hardened (read-only system, private /tmp, no new privileges, no devices, only IP and unix sockets). It
finds the configuration and the data through systemd's ``$CONFIGURATION_DIRECTORY`` and
``$STATE_DIRECTORY``, and passes the HTTPS certificate explicitly, so it serves HTTPS whatever
``zvm serve``'s own default is. ``command_line`` expands ExecStart the way systemd does, for the
installer's direct start where systemd is not PID 1, and for the tests.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from installer.layout import CONFIG_DIR, DATA_DIR, RUN_DIR, USER

EXEC_ARGS = ("serve --config ${CONFIGURATION_DIRECTORY}/zvm.toml --data-dir ${STATE_DIRECTORY} "
             "--tls-certificate ${CONFIGURATION_DIRECTORY}/tls/zvm.pem "
             "--tls-key ${CONFIGURATION_DIRECTORY}/tls/zvm.key")


def zvm_executable() -> Path:
    """The ``zvm`` command of the environment this installer runs in (what the service will run)."""
    candidate = Path(sys.executable).parent / "zvm"
    return candidate if candidate.is_file() else Path(sys.executable)


def blocked_for_others(path: Path, need: int = 0o005) -> Path | None:
    """The first directory on the way to ``path`` (links followed) that other users cannot enter, or the
    path itself if they lack ``need`` on it (read and execute: to run it): where the service's user would
    be refused."""
    real = path.resolve()
    for parent in reversed(real.parents):
        if not parent.stat().st_mode & 0o001:
            return parent
    return None if real.stat().st_mode & need == need else real


def check_runnable() -> None:
    """The service's user must be able to run this Python environment: refuse one it cannot reach."""
    for path in (Path(sys.executable), zvm_executable()):
        blocked = blocked_for_others(path)
        if blocked is not None:
            raise OSError(f"the zvm user could not run {path}: {blocked} is closed to other users (mode "
                          f"{blocked.stat().st_mode & 0o777:o}). Install the ZVM into an environment they can "
                          "read (e.g. /usr/bin/python3 -m venv /opt/zvm), and run that environment's zvm-install")


def exec_start(executable: Path | None = None, vcenter_ca: bool = False) -> str:
    executable = executable or zvm_executable()
    prefix = shlex.quote(str(executable)) + (" -m zvm.cli" if executable.name.startswith("python") else "")
    ca = " --vcenter-verify ${CONFIGURATION_DIRECTORY}/vcenter-ca.pem" if vcenter_ca else ""
    return f"{prefix} {EXEC_ARGS}{ca}"


def render(api_port: int, peer_port: int, executable: Path | None = None, vcenter_ca: bool = False) -> str:
    executable = executable or zvm_executable()
    # ProtectHome hides /home and /root: an environment there must stay readable.
    home = "read-only" if str(executable).startswith(("/home/", "/root/")) else "yes"
    privileged = min(api_port, peer_port) < 1024
    caps = "CAP_NET_BIND_SERVICE" if privileged else ""
    return f"""\
# zvm.service: the ZVR manager (ZVM). Written by zvm-install; run it again to change it.
[Unit]
Description=ZVR manager (ZVM): API and UI on {api_port}, peer site on {peer_port}
{_documentation()}After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={USER}
Group={USER}
ExecStart={exec_start(executable, vcenter_ca)}
ConfigurationDirectory={Path(CONFIG_DIR).name}
ConfigurationDirectoryMode=0750
StateDirectory={Path(DATA_DIR).name}
StateDirectoryMode=0700
RuntimeDirectory={Path(RUN_DIR).name}
StandardOutput=journal
StandardError=journal
SyslogIdentifier=zvm
Restart=on-failure
RestartSec=5s
TimeoutStopSec=30s
KillMode=mixed
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome={home}
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
SystemCallArchitectures=native
CapabilityBoundingSet={caps}
AmbientCapabilities={caps}

[Install]
WantedBy=multi-user.target
"""


def _documentation() -> str:
    docs = Path(__file__).resolve().parents[1] / "docs" / "INSTALL.md"
    return f"Documentation=file://{docs}\n" if docs.is_file() else ""


def directives(text: str) -> dict[str, str]:
    """The unit's ``Key=value`` lines (the last one of a key wins, as in systemd for these keys)."""
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def command_line(text: str, env: dict[str, str]) -> list[str]:
    """ExecStart split into words with ``${NAME}`` expanded from ``env``, as systemd does."""
    words = shlex.split(directives(text)["ExecStart"])

    def expand(word: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word)

    return [expand(w) for w in words]
