"""Fixtures for the IO filter tests: volume files with known content, an NBD server over them, a filter.

Sockets live in a short directory under /tmp (unix socket paths are limited to 108 bytes).
"""

from __future__ import annotations

import hashlib
import random
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.iofilter.nbdraw import RawNbd
from tests.iofilter.vra_stub import RecordingVra
from vra_appliance.iofilter.filter import IoFilter
from vra_appliance.iofilter.nbd import FileBackend, NbdServer
from vra_appliance.protect.split_listener import SplitListener

MiB = 1024 * 1024


def make_volume(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def nbd_uri(sock: Path | str, export: str) -> str:
    return f"nbd+unix:///{export}?socket={sock}"


@pytest.fixture(autouse=True)
def _close_raw_clients() -> Iterator[None]:
    from tests.iofilter import nbdraw

    yield
    while nbdraw.OPEN:
        nbdraw.OPEN.pop().close()


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="zf-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@dataclass
class Served:
    sock: Path
    server: NbdServer
    files: dict[str, Path]

    def uri(self, export: str) -> str:
        return nbd_uri(self.sock, export)


@pytest.fixture
def served(tmp_path, sockdir) -> Iterator[Served]:
    """Two 8 MiB exports of random content, ``alpha`` and ``beta``, on a unix socket."""
    files = {name: make_volume(tmp_path / f"{name}.img", 8 * MiB, seed) for seed, name in enumerate(("alpha", "beta"))}
    server = NbdServer({n: FileBackend(f, name=n) for n, f in files.items()}, unix_path=sockdir / "nbd.sock")
    server.start()
    yield Served(sockdir / "nbd.sock", server, files)
    server.stop()


@pytest.fixture
def make_filter(tmp_path, sockdir) -> Iterator:
    """``make_filter(vra=None, size=8 MiB, volumes=("vol-a",), **kw)`` -> a started IoFilter with a control
    socket; stopped at the end of the test."""
    started: list[IoFilter] = []

    def make(vra: str | None = None, size: int = 8 * MiB, volumes=("vol-a",), **kw) -> IoFilter:
        paths = {}
        for seed, vid in enumerate(volumes):
            path = tmp_path / f"{vid}.img"
            if not path.exists():
                make_volume(path, size, 100 + seed)
            paths[vid] = path
        filt = IoFilter(paths, unix_path=sockdir / f"f{len(started)}.sock", vra=vra,
                        control=sockdir / f"c{len(started)}.ctl", filter_id=f"test-filter-{len(started)}", **kw)
        filt.start()
        started.append(filt)
        return filt

    yield make
    for filt in started:
        filt.stop(drain_timeout_s=0.5)


@pytest.fixture
def vra(sockdir):
    """A VRA's split listener on ``sockdir/vra.sock`` whose handler records every write it is given (its
    ``listener`` attribute is the listener, for tests that stop or restart it)."""
    handler = RecordingVra()
    listener = SplitListener(str(sockdir / "vra.sock"), handler)
    listener.start()
    handler.listener = listener
    yield handler
    listener.stop()


@contextmanager
def held_vra(sockdir: Path, make_filter, name: str) -> Iterator[tuple]:
    """A filter with a 256 KiB ring whose VRA's handler blocks until ``gate`` is set, and a raw NBD client on
    its export vol-a: yields (gate, handler, filter, client); the gate is opened and the listener stopped after."""
    gate = threading.Event()
    handler = RecordingVra(gate=gate)
    listener = SplitListener(str(sockdir / f"{name}.sock"), handler)
    listener.start()
    try:
        filt = make_filter(vra=str(sockdir / f"{name}.sock"), queue_bytes=256 * 1024)
        assert filt.splitter.wait_connected(5)
        client = RawNbd(str(filt.unix_path))
        client.connect_export("vol-a")
        yield gate, handler, filt, client
    finally:
        gate.set()
        listener.stop()
