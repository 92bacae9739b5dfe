"""Install, reconfigure, upgrade and uninstall: each a list of steps (steps.py) built from the answers.

Install: the zvm user, the directories, the HTTPS certificate, the configuration, the database (as the zvm
user: migrations, the site, the vCenter password encrypted, the admin), the unit, enable, start, wait for
the API (and log in as admin), register the plugin, record the answers. Reconfigure is the same on an
installed ZVM, between a stop and a start, keeping the data. Upgrade keeps everything but the unit's
command line: stop, migrate, start, update the plugin registration. Uninstall: unregister the plugin,
stop, disable, remove the unit and the configuration; the data and the user stay unless ``purge``.
"""

from __future__ import annotations

import os
import platform
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from installer import accounts, content, dbstep, service, unit
from installer import plugin as zplugin
from installer.checks import colon_hex
from installer.errors import InstallerError, UnsupportedError
from installer.layout import (
    CONFIG,
    CONFIG_DIR,
    DATA_DIR,
    LOG_DIR,
    RECORD,
    TLS_CERT,
    TLS_DIR,
    TLS_KEY,
    UNIT,
    VCENTER_CA,
    Layout,
)
from installer.steps import Files, Step, run
from zvm import __version__


@dataclass
class Outcome:
    url: str = ""
    fingerprint: str = ""
    admin_password: str = ""  # only when generated: shown once
    plugin: str = ""
    started: str = ""  # "systemd", "directly (no systemd)", "" (--no-start)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def preflight(layout: Layout, system: str | None = None) -> None:
    """What must hold before any question is worth asking."""
    system = system or platform.system()
    if system != "Linux":
        raise UnsupportedError(
            f"zvm-install installs the ZVM as a systemd service on Linux; {system} is not supported "
            "yet (a Windows service backend is planned). On Windows, run the ZVM by hand: 'zvm serve --config "
            "zvm.toml' (see docs/INSTALL.md), or install it on a Linux machine.")
    if os.geteuid() != 0:
        raise InstallerError("zvm-install creates a system user and owns files for it: run it as root (sudo)")
    missing = accounts.tools_missing()
    if missing:
        raise InstallerError(f"{', '.join(missing)} not found: install Debian's 'passwd' package")
    if layout.staged and not layout.root.is_dir():
        raise InstallerError(f"--root {layout.root}: no such directory")


class Installer:
    def __init__(self, layout: Layout, out: Callable[[str], None] = print, start: bool = True):
        self.layout = layout
        self.out = out
        self.start = start
        self.services = service.manager(layout)

    def h(self, path: str) -> Path:
        return self.layout.host(path)

    # --- install and reconfigure --------------------------------------------------------------------------

    def install(self, answers: dict[str, Any]) -> Outcome:
        began = time.monotonic()
        reconfigure = self.layout.installed()
        previous = self.layout.record() if reconfigure else {}
        outcome = Outcome()
        ids: dict[str, int] = {}
        steps: list[Step] = []
        if reconfigure:
            steps.append(self._stop_step())
        steps += [self._user_step(ids), self._directories_step(ids), self._tls_step(answers, ids, outcome),
                  self._config_step(answers, ids), self._database_step(answers, ids, outcome, reconfigure),
                  self._unit_step(answers), self._enable_step()]
        if self.start:
            steps += [self._start_step(), self._wait_step(answers, outcome)]
        if answers.get("plugin.register"):
            steps.append(self._plugin_step(answers, outcome, "register"))
        elif previous.get("plugin") == "registered":
            steps.append(self._plugin_step(answers, outcome, "unregister"))
        steps.append(self._record_step(answers, outcome))
        if self.services.direct and self.start:
            outcome.notes.append(
                "systemd is not PID 1 here (a container or a build machine): the unit is installed and "
                "enabled for when it is, and its command line was started directly as user zvm"
                f" (output in {self.services.log_hint()}).")
        run(steps, self.out)
        outcome.url = f"https://{answers['network.public_address']}:{answers['network.api_port']}/"
        outcome.started = "" if not self.start else ("directly (no systemd)" if self.services.direct else "systemd")
        outcome.seconds = time.monotonic() - began
        return outcome

    def _stop_step(self) -> Step:
        was_running = self.services.running()

        def apply():
            self.services.stop()

        def undo():
            if was_running:
                self.services.start()

        return Step("stop the running ZVM", apply, undo)

    def _user_step(self, ids: dict[str, int]) -> Step:
        created = []

        def apply():
            found = accounts.lookup(self.layout)
            if found is None:
                found = accounts.create(self.layout)
                created.append(True)
            ids["uid"], ids["gid"] = found

        def undo():
            if created:
                accounts.remove(self.layout)

        return Step("create the zvm system user", apply, undo, fix="Check /etc/passwd and /etc/group.")

    def _directories_step(self, ids: dict[str, int]) -> Step:
        files = Files()

        def apply():
            files.mkdir(self.h(CONFIG_DIR), 0o750, 0, ids["gid"])
            files.mkdir(self.h(TLS_DIR), 0o750, 0, ids["gid"])
            files.mkdir(self.h(DATA_DIR), 0o700, ids["uid"], ids["gid"])

        return Step(f"create {CONFIG_DIR} and {DATA_DIR}", apply, files.undo)

    def _tls_step(self, answers, ids, outcome: Outcome) -> Step:
        files = Files()

        def apply():
            from zvm.tls import ca_fingerprint, self_signed

            cert, key = self.h(TLS_CERT), self.h(TLS_KEY)
            if answers["tls.mode"] == "files":
                cert_data = Path(answers["tls.certificate"]).read_bytes()
                key_data = Path(answers["tls.key"]).read_bytes()
            elif cert.is_file() and key.is_file() and content.names_in_certificate(cert) == content.certificate_names(answers):
                cert_data, key_data = cert.read_bytes(), key.read_bytes()  # keep: the plugin trusts it
            else:
                tmp = self.h(TLS_DIR) / ".new"
                tmp.mkdir(mode=0o700, exist_ok=True)
                try:
                    self_signed(answers["network.public_address"], content.certificate_names(answers), tmp / "c.pem",
                                tmp / "k.pem")
                    cert_data, key_data = (tmp / "c.pem").read_bytes(), (tmp / "k.pem").read_bytes()
                finally:
                    shutil.rmtree(tmp)
            files.write(cert, cert_data, 0o644, 0, ids["gid"])
            files.write(key, key_data, 0o640, 0, ids["gid"])
            outcome.fingerprint = colon_hex(ca_fingerprint(cert_data.decode()))

        return Step("HTTPS certificate", apply, files.undo,
                    fix="Give a PEM certificate and its unencrypted key (tls.certificate, tls.key).")

    def _config_step(self, answers, ids) -> Step:
        files = Files()

        def apply():
            encrypted = ""
            url = ""
            if answers["database.kind"] == "postgresql":
                from zvm.db import SecretBox, without_password

                url, password = without_password(answers["database.url"])
                if password:
                    box = SecretBox.in_dir(self.h(DATA_DIR))
                    os.chown(self.h(DATA_DIR) / SecretBox.KEY_FILE, ids["uid"], ids["gid"])
                    encrypted = box.encrypt(password)
            if answers.get("vcenter.ca_bundle"):  # the given file may be anywhere: keep a copy of our own
                files.write(self.h(VCENTER_CA), Path(answers["vcenter.ca_bundle"]).read_bytes(), 0o640, 0,
                            ids["gid"])
            files.write(self.h(CONFIG), content.config_text(answers, url, encrypted), 0o640, 0, ids["gid"])

        return Step(f"write {CONFIG}", apply, files.undo)

    def _database_step(self, answers, ids, outcome: Outcome, reconfigure: bool) -> Step:
        def apply():
            admin = answers.get("admin.password", "")
            if not admin and not reconfigure:
                admin = outcome.admin_password = secrets.token_urlsafe(12)
            answers["admin.password"] = admin
            dbstep.run_as_service_user(self.layout, ids["uid"], ids["gid"],
                                       {"vcenter_password": answers["vcenter.password"], "admin_password": admin})

        return Step("prepare the database (migrations, site, vCenter credentials, admin)", apply,
                    fix="For PostgreSQL, check that the user may create tables in the database.")

    def _unit_step(self, answers) -> Step:
        files = Files()

        def apply():
            self.h(UNIT).parent.mkdir(parents=True, exist_ok=True)
            files.write(self.h(UNIT), unit.render(answers["network.api_port"], answers["network.peer_port"],
                                                  vcenter_ca=bool(answers.get("vcenter.ca_bundle"))), 0o644)

        return Step(f"install {UNIT}", apply, files.undo, check=unit.check_runnable)

    def _enable_step(self) -> Step:
        def apply():
            self.services.reload()
            self.services.enable()

        def undo():
            self.services.disable()

        return Step("enable the service", apply, undo)

    def _start_step(self) -> Step:
        return Step("start the service", self.services.start, self.services.stop,
                    fix=f"See {self.services.log_hint()}.")

    def _wait_step(self, answers, outcome: Outcome, login: bool = True) -> Step:
        def apply():
            service.wait_for_api(self.services, self.h(TLS_CERT), answers, answers.get("admin.password") if login else None)

        return Step("wait for the ZVM's API to answer", apply,
                    fix=f"See {self.services.log_hint()} for why the service did not come up.")

    def _plugin_step(self, answers, outcome: Outcome, action: str) -> Step:
        before: dict[str, Any] = {}

        def config():
            return zplugin.zvm_config(answers, self.h(TLS_CERT), answers["vcenter.password"])

        def apply():
            before.update(zplugin.apply("status", config()))
            got = zplugin.apply(action, config())
            outcome.plugin = f"{got['Result']}" + (f" ({got['ManifestUrl']})" if got.get("ManifestUrl") else "")
            answers["_plugin"] = "registered" if action != "unregister" else ""

        def undo():
            if not before:
                return
            if before.get("Result") == "not registered":
                zplugin.apply("unregister", config())

        label = {"register": "register the vSphere Client plugin with vCenter",
                 "update": "update the vSphere Client plugin registration",
                 "unregister": "unregister the vSphere Client plugin"}[action]
        return Step(label, apply, undo, fix="Check that vCenter is reachable and the user may register "
                    "extensions (Extension.Register privilege).")

    def _record_step(self, answers, outcome: Outcome) -> Step:
        files = Files()

        def apply():
            files.write(self.h(RECORD), content.record_text(answers, outcome.fingerprint), 0o640, 0,
                        (accounts.lookup(self.layout) or (0, 0))[1])

        return Step(f"record the installation in {RECORD}", apply, files.undo)

    # --- upgrade and uninstall ------------------------------------------------------------------------

    def _installed(self) -> tuple[dict[str, Any], dict[str, Any], tuple[int, int]]:
        if not self.layout.installed():
            raise InstallerError(f"no ZVM is installed here ({self.h(RECORD)} is missing): run zvm-install "
                                 "without --upgrade/--uninstall to install one")
        record = self.layout.record()
        ids = accounts.lookup(self.layout)
        if ids is None:
            raise InstallerError("the zvm user is missing: reinstall (zvm-install) to recreate it")
        return record, dict(record["answers"]), ids

    def stored_vcenter_password(self) -> str:
        _, _, (uid, gid) = self._installed()
        return dbstep.run_as_service_user(self.layout, uid, gid, {}, action="vcenter_password")["vcenter_password"]

    def upgrade(self) -> Outcome:
        began = time.monotonic()
        record, answers, (uid, gid) = self._installed()
        outcome = Outcome(fingerprint=record.get("tls_fingerprint", ""))
        answers["vcenter.password"] = self.stored_vcenter_password() if record.get("plugin") else ""
        steps = [self._stop_step(),
                 Step("migrate the database", lambda: dbstep.run_as_service_user(self.layout, uid, gid, {}),
                      fix="The database is left at its previous version; restore a backup if it is damaged."),
                 self._unit_step(answers), self._enable_step()]
        if self.start:
            steps += [self._start_step(), self._wait_step(answers, outcome, login=False)]
        if record.get("plugin"):
            steps.append(self._plugin_step(answers, outcome, "update"))
        steps.append(self._record_step(answers, outcome))
        outcome.fingerprint = record.get("tls_fingerprint", "")
        self.out(f"upgrading the ZVM from {record.get('version', '?')} to {__version__}")
        run(steps, self.out)
        outcome.url = f"https://{answers['network.public_address']}:{answers['network.api_port']}/"
        outcome.started = "" if not self.start else ("directly (no systemd)" if self.services.direct else "systemd")
        outcome.seconds = time.monotonic() - began
        return outcome

    def uninstall(self, purge: bool = False, keep_plugin: bool = False) -> list[str]:
        record, answers, _ = self._installed()
        steps: list[Step] = []
        if record.get("plugin") and not keep_plugin:
            answers["vcenter.password"] = self.stored_vcenter_password()
            step = self._plugin_step(answers, Outcome(), "unregister")
            step.fix += (" To uninstall without it (vCenter gone for good), add --keep-plugin and remove the "
                         "registration later with 'zvm plugin unregister'.")
            steps.append(step)
        steps.append(self._stop_step())
        steps.append(Step("disable the service", self.services.disable, self.services.enable))
        files = Files()

        def remove_files():
            files.remove(self.h(UNIT))
            for path in sorted(self.h(CONFIG_DIR).rglob("*"), reverse=True):
                if path.is_dir():
                    continue
                files.remove(path)
            self.services.reload()

        steps.append(Step(f"remove {UNIT} and {CONFIG_DIR}", remove_files, files.undo))
        run(steps, self.out)
        # Past this point nothing needs undoing: the configuration is gone, only empty directories and
        # (with purge) the data remain to be removed.
        shutil.rmtree(self.h(CONFIG_DIR), ignore_errors=True)
        kept = []
        if purge:
            shutil.rmtree(self.h(DATA_DIR), ignore_errors=True)
            shutil.rmtree(self.h(LOG_DIR), ignore_errors=True)
            accounts.remove(self.layout)
        else:
            kept = [str(self.h(DATA_DIR)), "the zvm user"]
        return kept
