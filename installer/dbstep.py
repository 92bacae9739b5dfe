"""The database step, run as the service's user (``python -m installer.dbstep``): bring the schema to the
current version (zvm/migrations.py), set this site's row (name, location, contact, vCenter, with the
vCenter password encrypted by the data directory's key, as the ZVM keeps it) and the admin user (its
password hashed). It is ``Zvm.open()`` itself, so the installer and the service agree on how state is kept.

Secrets come on stdin as JSON, never on the command line or in the environment, so no process listing
shows them. It prints one JSON line: {"schema_version": N}. Run as the service's user, every file it
makes in the data directory (database, secret.key, the site CA) is the service's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from installer.layout import CONFIG, CONFIG_DIR, DATA_DIR, TLS_CERT, TLS_KEY, VCENTER_CA, Layout


def run_as_service_user(layout: Layout, uid: int, gid: int, secrets: dict[str, str],
                        action: str = "prepare") -> dict:
    """Run this module as uid:gid on the layout's configuration; returns what it printed."""
    def host(path: str) -> str:
        return str(layout.host(path))

    request = {"config": host(CONFIG), "data_dir": host(DATA_DIR), "tls_certificate": host(TLS_CERT),
               "tls_key": host(TLS_KEY), "action": action, **secrets}
    if layout.host(VCENTER_CA).is_file():
        request["vcenter_verify"] = host(VCENTER_CA)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": host(DATA_DIR),
           "CONFIGURATION_DIRECTORY": host(CONFIG_DIR)}
    proc = subprocess.run([sys.executable, "-m", "installer.dbstep"], input=json.dumps(request), text=True,
                          capture_output=True, env=env, cwd="/", user=uid, group=gid, extra_groups=[],
                          umask=0o077, timeout=600)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
        raise OSError(lines[-1] if lines else f"exit status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    from zvm.config import load_config
    from zvm.errors import ZvmError
    from zvm.migrations import current_version
    from zvm.service import Zvm

    request = json.loads(sys.stdin.read())
    overrides = {k: request.get(k) or None for k in ("data_dir", "tls_certificate", "tls_key", "vcenter_verify",
                                                       "vcenter_password", "admin_password")}
    try:
        config = load_config(request["config"], env={}, **overrides)
        if request.get("action") == "vcenter_password":
            print(json.dumps({"vcenter_password": _stored_vcenter_password(config)}))
            return 0
        zvm = Zvm(config).open()
        zvm.db.connect(reuse_if_open=True)
        version = current_version(zvm.db)
        zvm.stop()
    except ZvmError as exc:
        print(f"database: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"schema_version": version}))
    return 0


def _stored_vcenter_password(config) -> str:
    """The vCenter password as the ZVM keeps it (encrypted in the site row), for the plugin steps of
    upgrade and uninstall."""
    from zvm import db as zdb
    from zvm import models as m

    db = zdb.bind(zdb.open_database(config.database))
    zdb.connect(db)
    try:
        site = m.Site.get_or_none(m.Site.is_local == True)  # noqa: E712 - peewee expression
        token = site.vcenter_password_enc if site else ""
    finally:
        db.close()
    return zdb.SecretBox.in_dir(config.data_dir).decrypt(token) if token else ""


if __name__ == "__main__":
    sys.exit(main())
