"""Starting and stopping the installed service: through systemd where it runs the machine, otherwise by
running the unit's own command line directly, as its user, the way systemd would.

``Systemd`` drives ``systemctl`` (daemon-reload, enable, start, stop, disable). ``Direct`` is for machines
where systemd is not PID 1 (containers, build machines) and for staging trees: "enable" makes the symlink
``systemctl enable`` would, "start" runs ExecStart with systemd's directory variables set (pointing into the
tree), as the unit's user, in a new session, its output in /var/log/zvm/zvm.log and its process id in
/run/zvm/zvm.pid; "stop" sends it SIGTERM, as systemd does, and waits for it to end. ``wait_for_api`` waits until the
started service answers over HTTPS with the installed certificate.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from installer import accounts, unit
from installer.layout import CONFIG_DIR, DATA_DIR, LOG, PID, RUN_DIR, SERVICE, UNIT, WANTS, Layout


def systemd_running() -> bool:
    """sd_booted(): systemd is PID 1 when /run/systemd/system exists."""
    return Path("/run/systemd/system").is_dir()


def manager(layout: Layout):
    return Systemd(layout) if not layout.staged and systemd_running() else Direct(layout)


class Systemd:
    direct = False

    def __init__(self, layout: Layout):
        self.layout = layout

    def _ctl(self, *args: str) -> None:
        proc = subprocess.run(["systemctl", *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise OSError(f"systemctl {' '.join(args)}: {proc.stderr.strip()} (see 'journalctl -u {SERVICE}')")

    def reload(self) -> None:
        self._ctl("daemon-reload")

    def enable(self) -> None:
        self._ctl("enable", SERVICE)

    def disable(self) -> None:
        self._ctl("disable", SERVICE)

    def start(self) -> None:
        self._ctl("start", SERVICE)

    def stop(self) -> None:
        self._ctl("stop", SERVICE)

    def running(self) -> bool:
        return subprocess.run(["systemctl", "is-active", "--quiet", SERVICE]).returncode == 0

    def log_hint(self) -> str:
        return f"journalctl -u {SERVICE}"


class Direct:
    direct = True

    def __init__(self, layout: Layout):
        self.layout = layout

    def reload(self) -> None:
        pass

    def enable(self) -> None:
        link = self.layout.host(WANTS)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(UNIT)

    def disable(self) -> None:
        link = self.layout.host(WANTS)
        if link.is_symlink():
            link.unlink()

    def environment(self) -> dict[str, str]:
        home = str(self.layout.host(DATA_DIR))
        return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                "HOME": home, "USER": "zvm", "LOGNAME": "zvm",
                "CONFIGURATION_DIRECTORY": str(self.layout.host(CONFIG_DIR)), "STATE_DIRECTORY": home,
                "RUNTIME_DIRECTORY": str(self.layout.host(RUN_DIR))}

    def command(self) -> list[str]:
        return unit.command_line(self.layout.host(UNIT).read_text(), self.environment())

    def pid(self) -> int | None:
        try:
            pid = int(self.layout.host(PID).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        # A stale file may name a process id reused by another program: only ours is "the service".
        try:
            ours = b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            ours = False
        return pid if ours and _alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self) -> None:
        if self.running():
            return
        ids = accounts.lookup(self.layout)
        if ids is None:
            raise OSError("the zvm user does not exist")
        uid, gid = ids
        run_dir, log = self.layout.host(RUN_DIR), self.layout.host(LOG)
        for d in (run_dir, log.parent):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, uid, gid)
            d.chmod(0o750)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.fchown(fd, uid, gid)
        try:
            proc = subprocess.Popen(self.command(), env=self.environment(), cwd="/", user=uid, group=gid,
                                    extra_groups=[], umask=0o077, stdin=subprocess.DEVNULL, stdout=fd,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            os.close(fd)
        self.layout.host(PID).write_text(f"{proc.pid}\n")

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.pid()
        if pid is None:
            self.layout.host(PID).unlink(missing_ok=True)
            return
        try:
            os.killpg(pid, signal.SIGTERM)  # the unit's KillMode=mixed: SIGTERM to the main process group
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        self.layout.host(PID).unlink(missing_ok=True)

    def log_hint(self) -> str:
        return str(self.layout.host(LOG))


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (no one may reap it once the installer has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def wait_for_api(services, cert: Path, answers: dict[str, Any], admin_password: str | None,
                 timeout: float = 180.0) -> None:
    """Until the API answers over HTTPS with the installed certificate (and, given a password, admin logs in)."""
    import requests

    host = answers["network.listen_address"]
    host = "127.0.0.1" if host == "0.0.0.0" else ("::1" if host == "::" else host)
    netloc = f"[{host}]" if ":" in host else host
    url = f"https://{netloc}:{answers['network.api_port']}"
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with requests.Session() as s:
        while time.monotonic() < deadline:
            if not services.running():
                raise OSError(f"the service stopped while starting (last: {last})")
            try:
                resp = s.get(f"{url}/v1/session", verify=str(cert), timeout=5)
                if resp.status_code in (200, 401):  # 401: it answers, and wants a login
                    break
                last = f"HTTP {resp.status_code}"
            except requests.exceptions.SSLError as exc:
                raise OSError(f"{url} does not present the installed certificate: {exc}") from None
            except requests.RequestException as exc:
                last = type(exc).__name__
            time.sleep(0.5)
        else:
            raise OSError(f"{url} did not answer in {int(timeout)} s (last: {last})")
        if admin_password:
            resp = s.post(f"{url}/v1/session/add", auth=("admin", admin_password), verify=str(cert), timeout=30)
            if resp.status_code != 200:
                raise OSError(f"the API answers but refused the admin's login (HTTP {resp.status_code})")
            s.delete(f"{url}/v1/session", headers={"x-zerto-session": resp.headers.get("x-zerto-session", "")},
                   verify=str(cert), timeout=30)
