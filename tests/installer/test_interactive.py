"""The wizard driven through a pseudo-terminal (pexpect), as an administrator types: a wrong vCenter
password first (said plainly, asked again), '<' to go back, the summary, then the install; the answers it
saves install the same ZVM silently."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pexpect

from installer.layout import CONFIG, RECORD
from tests.installer.conftest import Stage, printed_fingerprint, vcenter_fingerprint
from tests.zvm.pg import free_port

TRANSCRIPT = os.environ.get("ZVM_INSTALL_TRANSCRIPT")  # where to keep the transcript (docs/)


def wizard(stage: Stage, *args: str, logfile) -> pexpect.spawn:
    child = pexpect.spawn(str(stage.python), ["-m", "installer.wizard", "--root", str(stage.root), *args],
                          cwd="/", encoding="utf-8", timeout=60, dimensions=(50, 160))
    child.logfile_read = logfile
    return child


def answer(child: pexpect.spawn, prompt: str, text: str) -> None:
    child.expect(prompt)
    child.sendline(text)


def configuration(stage: Stage) -> str:
    """zvm.toml without its dated first line."""
    return "".join(stage.path(CONFIG).read_text().splitlines(keepends=True)[1:])


def test_wizard_asks_again_after_a_wrong_password_and_installs_as_silent_mode_would(
        stage, https_vcenter, tmp_path, service_python):
    sim = https_vcenter
    api, peer = free_port(), free_port()
    saved = tmp_path / "answers.toml"
    transcript = Path(TRANSCRIPT) if TRANSCRIPT else tmp_path / "transcript.txt"
    with open(transcript, "w") as log:
        child = wizard(stage, "--write-answers", str(saved), logfile=log)
        answer(child, r"vCenter address: ", sim.url)
        child.expect(r"SHA-256 fingerprint\s+([0-9A-F:]{95})")
        assert child.match.group(1).replace(":", "").lower() == vcenter_fingerprint(sim)
        answer(child, r"\[Enter: accept it\]: ", "")
        answer(child, r"vCenter user \[administrator@vsphere.local\]: ", "")
        answer(child, r"vCenter password: ", "not-the-password")
        child.expect(r"refused the login of 'administrator@vsphere.local': check the user name and password")
        answer(child, r"vCenter password: ", sim.password)  # asked again
        answer(child, r"Site name \[[^\]]*\]: ", "Site W")
        answer(child, r"Site location \[\]: ", "<")  # back: the site name is asked again
        answer(child, r"Site name \[[^\]]*\]: ", "Site West")
        answer(child, r"Site location \[\]: ", "Lab, rack 7")
        answer(child, r"Site contact \[\]: ", "noc@example.com")
        answer(child, r"the VRAs \[[^\]]*\]: ", "127.0.0.1")
        answer(child, r"Listen on address \[0.0.0.0\]: ", "127.0.0.1")
        answer(child, r"API and UI port \(HTTPS\) \[9080\]: ", "http")
        child.expect(r"is not a whole number")
        answer(child, r"API and UI port \(HTTPS\) \[9080\]: ", str(api))
        answer(child, r"Peer site port \[9081\]: ", str(peer))
        answer(child, r"HTTPS certificate \(generate/files\) \[generate\]: ", "")
        answer(child, r"Database \(sqlite/postgresql\) \[sqlite\]: ", "")
        answer(child, r"admin user \[Enter: generate one\]: ", "Adm1n-pass-2")
        answer(child, r"vSphere Client plugin \[Y/n\]: ", "")
        child.expect(r"Summary:")
        child.expect(r"Install with these answers\?")
        summary = child.before
        assert "Site West" in summary and "Lab, rack 7" in summary and str(api) in summary
        assert sim.password not in summary and "Adm1n-pass-2" not in summary
        child.sendline("yes")
        child.expect(r"The ZVM is installed and running \((\d+\.\d) s\)")
        child.expect(pexpect.EOF)
        child.close()
    assert child.exitstatus == 0
    output = transcript.read_text()
    assert printed_fingerprint(output)
    interactive_config = configuration(stage)
    interactive_record = tomllib.loads(stage.path(RECORD).read_text())["answers"]
    saved_answers = saved.read_text()
    assert sim.password not in saved_answers and "Adm1n-pass-2" not in saved_answers
    assert stage.install("--uninstall", "--purge").returncode == 0

    # The saved answers, with the secrets from the environment, install the same ZVM silently.
    silent = stage.install("--answers", str(saved), env={"ZVM_INSTALL_VCENTER_PASSWORD": sim.password,
                                                         "ZVM_INSTALL_ADMIN_PASSWORD": "Adm1n-pass-2"})
    assert silent.returncode == 0, silent.stdout + silent.stderr
    assert configuration(stage) == interactive_config
    assert tomllib.loads(stage.path(RECORD).read_text())["answers"] == interactive_record
    assert re.search(r"Site West", stage.path(CONFIG).read_text())
    assert stage.install("--uninstall", "--purge").returncode == 0


def test_wizard_on_an_installed_zvm_offers_to_reconfigure_with_its_answers_as_defaults(
        stage, https_vcenter, tmp_path):
    from tests.installer.conftest import answers_toml

    answers = tmp_path / "answers.toml"
    answers.write_text(answers_toml(https_vcenter, plugin={"register": False}))
    assert stage.install("--answers", str(answers), "--no-start").returncode == 0
    with open(tmp_path / "transcript.txt", "w") as log:
        child = wizard(stage, "--no-start", logfile=log)
        answer(child, r"Reconfigure it, keeping its data\? \(yes/no\) \[yes\]: ", "")
        answer(child, re.escape(f"vCenter address [{https_vcenter.url}]: "), "")
        answer(child, r"\[Enter: accept it\]: ", "")
        answer(child, r"vCenter user \[administrator@vsphere.local\]: ", "")
        answer(child, r"vCenter password \[Enter: keep the current one\]: ", "")
        answer(child, r"Site name \[Site A\]: ", "Site A2")
        for _ in range(12):  # the rest as they are: Enter
            index = child.expect([r"\]: ", r"Reconfigure with these answers\?"])
            if index == 1:
                break
            child.sendline("")
        else:
            child.expect(r"Reconfigure with these answers\?")
        child.sendline("yes")
        child.expect(r"The ZVM is reconfigured but not started")
        child.expect(pexpect.EOF)
        child.close()
    assert child.exitstatus == 0
    config = tomllib.loads(stage.path(CONFIG).read_text())
    assert config["site_name"] == "Site A2" and config["site_location"] == "Lab, rack 4"
    assert stage.install("--uninstall", "--purge").returncode == 0
