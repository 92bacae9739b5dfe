"""The administrator's CLI against a `zvm serve` (its state made on the fake vCenter's inventory): a saved
session in a 0600 file, --output json, a VPG created from flags and edited from a YAML file, exit codes a
script can trust, errors said in CLI terms, no traceback when the reader of the output goes away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.zvm.conftest import ADMIN_PASSWORD
from tests.zvm.procs import start_serve
from zvm import cli
from zvm.enums import TaskType, VpgPriority

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(make_app, fake_vcenter, tmp_path, monkeypatch):
    app = make_app(vcenter=fake_vcenter, name="cli", vcenter_url="http://fake/sdk", vcenter_username="u")
    app.extensions["zvm"].inventory.sync_once()
    app.extensions["zvm"].stop()
    server = start_serve(tmp_path / "cli")
    server.wait_for("Booting worker")
    monkeypatch.setenv("ZVM_SESSION_FILE", str(tmp_path / "home" / "zvm" / "session.json"))
    monkeypatch.delenv("ZVM_PASSWORD", raising=False)
    monkeypatch.delenv("ZVM_URL", raising=False)
    try:
        yield server
    finally:
        assert server.stop() == 0


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_login_once_then_commands_use_the_saved_session(served, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZVM_PASSWORD", ADMIN_PASSWORD)
    code, out, _ = run(capsys, "login", "--url", served.url, "--output", "json")
    assert code == 0 and json.loads(out)["User"] == "admin"
    saved = Path(os.environ["ZVM_SESSION_FILE"])
    assert saved.stat().st_mode & 0o777 == 0o600 and saved.parent.stat().st_mode & 0o777 == 0o700
    assert ADMIN_PASSWORD not in saved.read_text()
    monkeypatch.delenv("ZVM_PASSWORD")  # from here the session alone
    code, out, _ = run(capsys, "vpgs", "-o", "json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run(capsys, "logout")
    assert code == 0 and not saved.exists()
    code, _, err = run(capsys, "vpgs")  # no session, no password, no terminal
    assert code == 1 and "ZVM_PASSWORD" in err


def test_a_session_file_others_can_read_is_refused(served, monkeypatch, capsys):
    monkeypatch.setenv("ZVM_PASSWORD", ADMIN_PASSWORD)
    assert run(capsys, "login", "--url", served.url)[0] == 0
    monkeypatch.delenv("ZVM_PASSWORD")
    os.chmod(os.environ["ZVM_SESSION_FILE"], 0o644)
    code, _, err = run(capsys, "status")
    assert code == 1 and "zvm login" in err and "0o644" in err


def test_create_and_edit_a_vpg_and_exit_codes(served, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZVM_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.setenv("ZVM_URL", served.url)
    site = json.loads(run(capsys, "sites", "--json")[1])[0]["VirtualizationSiteName"]
    code, out, err = run(capsys, "vpg", "create", "web", "--vm", "vm-0", "--vm", "vm-1", "--recovery-site", site,
                         "--recovery-host", "host-1", "--recovery-datastore", "datastore-2", "--priority", "High",
                         "--journal-hard-limit-mb", "2048", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["Type"] == TaskType.CreateProtectionGroup
    vpg = json.loads(run(capsys, "vpgs", "--json")[1])[0]
    assert (vpg["VpgName"], vpg["Priority"], vpg["JournalHardLimitInMB"]) == ("web", VpgPriority.High, 2048)
    assert "web" in run(capsys, "vpgs")[1] and "High" in run(capsys, "vpgs")[1]  # names in tables

    edit = tmp_path / "edit.yaml"
    edit.write_text("Basic:\n  RpoInSeconds: 120\nJournal:\n  Limitation:\n    WarningThresholdInMB: 512\n")
    code, _, err = run(capsys, "vpg", "edit", "web", "--file", str(edit), "--remove-vm", "vm-1")
    assert code == 0, err
    vpg = json.loads(run(capsys, "vpgs", "--json")[1])[0]
    assert (vpg["ConfiguredRpoSeconds"], vpg["JournalWarningThresholdInMB"], vpg["VmsCount"]) == (120, 512, 1)

    # refused by the ZVM: 1, and the message names the command to run, not an API call
    code, _, err = run(capsys, "checkpoints", "nosuch")
    assert code == 1 and "'zvm vpgs'" in err and "/v1/" not in err
    code, _, err = run(capsys, "vpg", "create", "db", "--vm", "vm-9", "--recovery-site", site)
    assert code == 1 and "'zvm vms'" in err
    monkeypatch.setenv("ZVM_PASSWORD", "wrong")
    assert run(capsys, "vpgs")[0] == 3
    monkeypatch.setenv("ZVM_URL", "http://127.0.0.1:9")  # nothing listens
    assert run(capsys, "vpgs")[0] == 4


def test_output_closed_early_ends_quietly(served):
    env = {**os.environ, "ZVM_PASSWORD": ADMIN_PASSWORD, "ZVM_URL": served.url}
    # the reader is gone before anything is written (`| true`), as `| head` is once it has its lines
    proc = subprocess.run(f"{sys.executable} -m zvm.cli tasks | true; {sys.executable} -m zvm.cli events -o json | "
                          "head -c 10 >/dev/null", shell=True, env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_serve_help_shows_the_defaults_the_service_uses():
    out = subprocess.run([sys.executable, "-m", "zvm.cli", "serve", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=60).stdout
    flat = " ".join(out.split())
    assert "(default: None)" not in flat
    for said in ("REST API port (default: 9080)", "peer service port (default: 9081)", "(default: 0.0.0.0)",
                 "gunicorn worker processes (default: 2)"):
        assert said in flat, said
