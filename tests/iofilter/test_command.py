"""`vra iofilter` as an operator runs it: help, a clean stop that saves the dirty map, a crash detected at
the next start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.iofilter.conftest import MiB, make_volume
from tests.iofilter.nbdraw import RawNbd
from vra_appliance.cli import main as vra_main
from vra_appliance.iofilter.control import FilterControl


def test_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        vra_main(["iofilter", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--volume ID=PATH", "--unix SOCKET", "--tcp", "--vra ADDRESS", "--control PATH", "dirty map"):
        assert option in out


def test_bad_volume_argument_says_what_to_write(capsys):
    with pytest.raises(SystemExit):
        vra_main(["iofilter", "--volume", "nopath", "--unix", "/tmp/x.sock"])
    assert "expected ID=PATH" in capsys.readouterr().err


def start(vol, sockdir) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "vra_appliance.cli", "iofilter", "--volume", f"vol-1={vol}",
                             "--unix", str(sockdir / "f.sock"), "--tcp", "127.0.0.1:0", "--control",
                             str(sockdir / "f.ctl")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("vra iofilter: serving vol-1"), line + proc.stderr.read()
    return proc


def test_clean_stop_saves_the_dirty_map_and_a_crash_is_detected(tmp_path, sockdir):
    vol = make_volume(tmp_path / "disk-flat.vmdk", 4 * MiB, 1)
    proc = start(vol, sockdir)
    try:
        c = RawNbd(str(sockdir / "f.sock"))
        c.connect_export("vol-1")
        assert c.write(8192, b"q" * 1000) == 0
        c.disconnect()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    side = json.loads((tmp_path / "disk-flat.vmdk.zdirty").read_text())
    assert side["state"] == "clean" and side["generation"] == 1 and side["extents"] == [[8192, 1000]]

    proc = start(vol, sockdir)  # the saved extents come back; then the process dies without a clean stop
    try:
        with FilterControl(sockdir / "f.ctl") as ctl:
            assert ctl.dirty("vol-1")["extents"] == [[8192, 1000]]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.stdout.close()
        proc.stderr.close()

    proc = start(vol, sockdir)
    try:
        with FilterControl(sockdir / "f.ctl") as ctl:
            assert ctl.status()["volumes"]["vol-1"] == {"path": str(vol), "size": 4 * MiB, "generation": 3,
                                                        "unclean": True}
            reply = ctl.dirty("vol-1", clear=True)  # the delta sync takes over
            assert reply["unclean"] is True and reply["extents"] == []
            assert ctl.status()["volumes"]["vol-1"]["unclean"] is False
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "not stopped cleanly" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
