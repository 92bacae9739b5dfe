"""The NBD server with real clients nobody here wrote: qemu-io, qemu-img, nbdcopy, nbdinfo and fio.

Data checks compare SHA-256 of whole files against what the test computed independently.
"""

from __future__ import annotations

import hashlib
import json
import subprocess

from tests.iofilter.conftest import MiB, make_volume, sha256


def run(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_qemu_io_patterns_written_then_read_back(served):
    expected = bytearray(served.files["alpha"].read_bytes())
    ops = [(0, 65536, 0x11), (12345, 4096, 0x22), (3 * MiB, MiB, 0x33), (8 * MiB - 512, 512, 0x44)]
    cmds = []
    for off, n, pat in ops:
        cmds += ["-c", f"write -P {pat:#x} {off} {n}"]
        expected[off:off + n] = bytes([pat]) * n
    cmds += ["-c", f"write -z {5 * MiB} 65536"]
    expected[5 * MiB:5 * MiB + 65536] = bytes(65536)
    cmds += ["-c", "read -P 0x11 0 12345"]  # the second write overlaps the first one's tail
    for off, n, pat in ops[1:]:
        cmds += ["-c", f"read -P {pat:#x} {off} {n}"]
    cmds += ["-c", f"read -P 0 {5 * MiB} 65536", "-c", "flush"]
    out = run("qemu-io", "-f", "raw", *cmds, served.uri("alpha")).stdout
    assert "Pattern verification failed" not in out and "failed" not in out.lower()
    assert sha256(served.files["alpha"]) == hashlib.sha256(expected).hexdigest()


def test_qemu_img_convert_from_an_export(served, tmp_path):
    out = tmp_path / "copy.img"
    run("qemu-img", "convert", "-f", "raw", "-O", "raw", served.uri("beta"), str(out))
    assert sha256(out) == sha256(served.files["beta"])


def test_qemu_img_convert_to_an_export(served, tmp_path):
    src = make_volume(tmp_path / "src.img", 8 * MiB, 42)
    # holes and zero runs exercise WRITE_ZEROES / TRIM from qemu-img
    with open(src, "r+b") as fh:
        fh.seek(2 * MiB)
        fh.write(bytes(3 * MiB))
    run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src), served.uri("alpha"))
    assert sha256(served.files["alpha"]) == sha256(src)
    assert sha256(served.files["beta"]) != sha256(src)


def test_nbdcopy_both_ways(served, tmp_path):
    out = tmp_path / "out.img"
    run("nbdcopy", served.uri("alpha"), str(out))
    assert sha256(out) == sha256(served.files["alpha"])
    src = make_volume(tmp_path / "src.img", 8 * MiB, 7)
    run("nbdcopy", str(src), served.uri("beta"))
    assert sha256(served.files["beta"]) == sha256(src)


def test_nbdinfo_lists_the_exports(served):
    doc = json.loads(run("nbdinfo", "--list", "--json", f"nbd+unix:///?socket={served.sock}").stdout)
    exports = {e["export-name"]: e for e in doc["exports"]}
    assert sorted(exports) == ["alpha", "beta"]
    assert exports["alpha"]["export-size"] == 8 * MiB
    assert exports["alpha"]["block_size_maximum"] == 4 * MiB
    assert exports["alpha"]["can_fua"] and exports["alpha"]["can_trim"] and exports["alpha"]["can_zero"]
    assert doc["protocol"] == "newstyle-fixed" and doc["structured"] is True


def fio_verify(uri: str, size: str, rw: str = "randwrite", bs: str = "4k", iodepth: int = 16) -> dict:
    """fio writes with crc32c headers in every block, then reads everything back and checks them."""
    proc = run("fio", "--name=verify", "--ioengine=nbd", f"--uri={uri}", f"--rw={rw}", f"--bs={bs}",
               f"--iodepth={iodepth}", f"--size={size}", "--verify=crc32c", "--do_verify=1",
               "--verify_fatal=1", "--output-format=json", timeout=180)
    doc = json.loads(proc.stdout[proc.stdout.index("{"):])
    job = doc["jobs"][0]
    assert job["error"] == 0
    return job


def test_fio_verify_crc32c(served):
    job = fio_verify(served.uri("alpha"), "8M")
    assert job["write"]["total_ios"] == 2048
    assert job["read"]["total_ios"] == 2048  # every block read back and verified
    job = fio_verify(served.uri("beta"), "8M", rw="write", bs="64k", iodepth=8)
    assert job["read"]["total_ios"] == 128
