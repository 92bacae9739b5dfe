"""`vra appliance firstboot`: the appliance's boot-time unit (zvr-firstboot.service), run before `vra serve`.

At every boot: read the OVF environment (CD-ROM, else guestinfo), check it, set the host name, network,
firewall and SSH from it, then enroll with the ZVM (vra_appliance.trust.enroll: the key is made here and never
leaves the appliance; an appliance enrolled before keeps its certificate and needs no token). Then it writes
the arguments of `vra serve` (``/run/zvr-appliance/vra.env``) and exits, and zvr-vra.service starts.

Any failure (no or bad environment, unreachable ZVM, refused token) is shown on the console banner and
logged naming the property to fix, and everything is tried again with exponential backoff (2 s doubling to
60 s), re-reading the environment each time. Nothing is configured from an environment that does not check
out: the image's default firewall (4005 only) stays, and no network file is written.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from vra_appliance.appliance import banner, ovfenv, system
from vra_appliance.errors import EnrollmentError
from vra_appliance.trust.enroll import enroll

log = logging.getLogger("zvr-firstboot")

STATE_DIR = Path("/var/lib/zvr/vra")
SERVICE_USER = "zvr"
BACKOFF_START_S = 2.0
BACKOFF_MAX_S = 60.0
ADDRESS_WAIT_S = 30.0


def failing_property(message: str) -> str | None:
    """The vApp property an enrollment failure points at (EnrollmentError's messages, vra_appliance.trust.enroll)."""
    if "cannot reach the ZVM" in message:
        return "zvm_address"
    if "not the one this VRA was installed with" in message:
        return "zvm_ca_fingerprint"
    if "not for this VRA's id" in message:
        return "vra_id"
    if "token" in message.lower() or "refused the enrollment" in message:
        return "enroll_token"
    return None


def vra_args(s: ovfenv.Settings, state_dir: Path) -> list[str]:
    args = ["--vra-id", s.vra_id, "--listen", f"0.0.0.0:{s.control_port}", "--state-dir", str(state_dir),
            "--enroll-url", s.zvm_url, "--zvm-ca-fingerprint", s.zvm_ca_fingerprint,
            "--split", "/run/zvr/split.sock", "--nbd-unix", "/run/zvr/images.sock"]
    if s.nbd_port:
        args += ["--nbd-tcp", f"0.0.0.0:{s.nbd_port}"]
    return args


class FirstBoot:
    """One pass is ``attempt()``; ``run()`` repeats it with backoff until the appliance is enrolled."""

    def __init__(self, state_dir: Path = STATE_DIR, run_dir: Path = banner.RUN_DIR, configure: bool = True,
                 read_env=None, consoles: tuple[str, ...] = banner.CONSOLES) -> None:
        self.state_dir = state_dir
        self.run_dir = run_dir
        self.configure = configure  # False: check and enroll only (tests off the appliance)
        self.read_env = read_env or (lambda: ovfenv.find(self.run_dir / "ovfenv-mnt"))
        self.consoles = consoles
        self.status = banner.Status()
        self.applied: ovfenv.Settings | None = None

    def attempt(self) -> bool:
        """One pass; True once enrolled. Failures are recorded in ``self.status`` (and logged)."""
        st = self.status
        st.attempt += 1
        try:
            text, source = self.read_env()
            st.env_source = source
            settings = ovfenv.parse(text)
        except ovfenv.EnvError as exc:
            st.enrollment = "waiting for a valid OVF environment"
            return self._failed(str(exc))
        st.vra_id, st.zvm, st.ip_mode = settings.vra_id, settings.zvm_url, settings.ip_mode
        st.open_ports = [f"{p}/tcp ({what})" for p, what in system.open_ports(settings)]
        if self.configure and settings != self.applied:
            try:
                system.apply_firewall(settings)
                system.apply_hostname(settings)
                system.apply_network(settings)
                system.apply_ssh(settings)
            except OSError as exc:
                st.enrollment = "configuring the system"
                return self._failed(f"configuring the network from the OVF environment failed: {exc}")
            self.applied = settings
        if self.configure:
            st.addresses = system.wait_for_address(settings, ADDRESS_WAIT_S)
        st.enrollment = "enrolling"
        self._show()
        try:
            enroll(self.state_dir, settings.vra_id, settings.zvm_url, settings.enroll_token,
                   settings.zvm_ca_fingerprint)
        except EnrollmentError as exc:
            prop = failing_property(str(exc))
            return self._failed(f"OVF property '{prop}': {exc}" if prop else str(exc))
        if self.configure:
            shutil.chown(self.state_dir.parent, SERVICE_USER, SERVICE_USER)
            for dirpath, dirnames, filenames in os.walk(self.state_dir.parent):
                for name in dirnames + filenames:
                    shutil.chown(os.path.join(dirpath, name), SERVICE_USER, SERVICE_USER)
        env = self.run_dir / "vra.env"
        env.write_text("VRA_ARGS=" + " ".join(vra_args(settings, self.state_dir)) + "\n")
        st.enrollment, st.last_error, st.retry_in_s = "enrolled", "", 0.0
        log.info("zvr-vra: enrolled as %s with the ZVM at %s; starting vra serve on port %d",
                 settings.vra_id, settings.zvm_url, settings.control_port)
        self._show()
        return True

    def _show(self) -> None:
        banner.show(self.status, self.run_dir, self.consoles)

    def _failed(self, message: str) -> bool:
        self.status.last_error = message
        log.error("zvr-vra: ERROR %s", message)
        return False

    def run(self, sleep=time.sleep) -> int:
        delay = BACKOFF_START_S
        while not self.attempt():
            self.status.retry_in_s = delay
            self._show()
            sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
        return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("firstboot", help="the appliance's boot-time setup and enrollment (systemd unit)",
                              description=__doc__.split("\n\n")[1])
    p.add_argument("--state-dir", type=Path, default=STATE_DIR)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    return FirstBoot(state_dir=args.state_dir).run()
