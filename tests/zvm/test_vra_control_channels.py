"""GrpcVraControl keeps one channel per VRA against a real `vra serve`: many calls, one channel; a new one
when the VRA's address or the credentials it is called with change; none kept for a VRA that does not
answer; all closed by close() (the ZVM's stop), after which a call opens its VRA's again."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.replication.lab import SECRET, Lab, free_port
from zvm.errors import PermanentError, TransientError, ZvmError
from zvm.tls import SiteCA
from zvm.vra_control import ControlTls, GrpcVraControl, VraRef


@pytest.fixture
def vra():
    short = Path(tempfile.mkdtemp(prefix="zc-", dir="/tmp"))  # unix socket paths must stay short
    lab = Lab(short)
    try:
        yield lab.vra("vra-c", split=False)
    finally:
        lab.close()
        shutil.rmtree(short, ignore_errors=True)


def test_channels_are_kept_per_vra_and_rebuilt_when_address_or_trust_change(vra, tmp_path):
    trust: list[ControlTls | None] = [None]
    control = GrpcVraControl(SECRET, timeout=10, tls=lambda vra_id: trust[0])
    ref = VraRef("vra-c", f"127.0.0.1:{vra.port}", "vra-c")
    try:
        for _ in range(5):  # as monitoring polls: one connection, not one per call
            assert control.status(ref) == {}
        assert (control.opened, control.channels()) == (1, 1)

        # the same VRA at another address: its channel is made anew, the old one closed
        moved = VraRef("vra-c", f"localhost:{vra.port}", "vra-c")
        assert control.status(moved) == {}
        assert (control.opened, control.channels()) == (2, 1)

        # other credentials (the VRA enrolled, the CA changed): a new channel, which presents them; this
        # VRA serves without TLS, so the handshake fails, which shows the kept plaintext channel was not used
        ca = SiteCA(tmp_path / "ca")
        ca.issue("zvm:site", ["zvm-site"], tmp_path / "c.pem", tmp_path / "c.key")
        trust[0] = ControlTls(roots=ca.cert_path.read_bytes(), key=(tmp_path / "c.key").read_bytes(),
                              cert=(tmp_path / "c.pem").read_bytes())
        with pytest.raises(ZvmError):
            control.status(moved)
        assert control.opened == 3
        trust[0] = None
        assert control.status(moved) == {}
        assert control.opened == 4

        # a VRA that does not answer keeps no channel (its next call connects at once)
        gone = VraRef("vra-gone", f"127.0.0.1:{free_port()}", "vra-gone")
        with pytest.raises(TransientError):
            control.status(gone)
        assert control.channels() == 1

        control.close()
        assert control.channels() == 0
        assert control.status(moved) == {}  # opened again after close
        assert (control.opened, control.channels()) == (6, 1)
    finally:
        control.close()


def test_a_refused_role_is_still_a_permanent_error_on_a_kept_channel(vra):
    control = GrpcVraControl(SECRET, timeout=10)
    ref = VraRef("vra-c", f"127.0.0.1:{vra.port}", "vra-c")
    try:
        assert control.status(ref) == {}
        wrong = GrpcVraControl("wrong-secret", timeout=10)
        try:
            with pytest.raises(PermanentError):
                wrong.status(ref)
        finally:
            wrong.close()
        assert control.status(ref) == {} and control.opened == 1
    finally:
        control.close()
