"""The IO filter's compiled write path (zwrite.c): building it, loading it, and its shared structures.

The library is built from source with the system's C compiler into ``$ZVR_CACHE_DIR/native/<key>/``
(default: ``.cache/`` of the checkout), ``key`` being a hash of the C source and the compiler flags, so a
changed source is rebuilt and an unchanged one never is. ``./run`` builds it at set-up (``python -m
vra_appliance.iofilter.native``); the filter builds it at start if it is missing, and refuses to start,
saying what to install, if it cannot. There is no Python fallback for the write loop: one code path.

``CDLL`` calls release the GIL (the connection loop and every lock a C thread may hold while waiting for
Python); ``PyDLL`` calls keep it (the ring writer's short calls, made with the ring's lock held).
The ctypes structures mirror zwrite.c's; their sizes are checked against the library's at load.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from vra_appliance.errors import PermanentError

SOURCE = Path(__file__).with_name("zwrite.c")
CFLAGS = ("-O2", "-fPIC", "-shared", "-pthread", "-Wall", "-Wextra", "-Werror", "-std=gnu11")
LIB_NAME = "libzwrite.so"
STAGE_MAX = 64
RC_EOF, RC_PY, RC_REFILL, RC_HANDOFF, RC_GATE, RC_SOCKERR = range(6)

_u64, _i64 = ctypes.c_uint64, ctypes.c_int64


class NativeUnavailable(PermanentError):
    """The compiled write path cannot be built or loaded (the message says what to install)."""


class ZRing(ctypes.Structure):
    _fields_ = [(n, _u64) for n in ("head", "tail", "frames", "rewound_at", "rewound_to", "seq", "size",
                                    "data_size", "ctl_addr", "data_addr", "slab_seq_addr", "nslabs",
                                    "slab_bytes")] + \
               [(n, _i64) for n in ("live", "bell_fd", "rang")] + \
               [(n, _u64) for n in ("frames_sent", "bytes_sent", "in_place", "sends")] + \
               [("_lock", ctypes.c_byte * 64)]


class ZVol(ctypes.Structure):
    _fields_ = [(n, _i64) for n in ("fd", "size", "held", "inflight", "read_only")] + \
               [("vol_addr", _u64), ("vlen", _u64), ("spare", _i64), ("_lock", ctypes.c_byte * 64)]


class ZStaged(ctypes.Structure):
    _fields_ = [("offset", _i64), ("length", _i64), ("pos", _i64), ("err", _i64), ("handle", _u64)]


class ZConn(ctypes.Structure):
    _fields_ = [("sock", _i64), ("rbuf", _u64), ("rlen", _u64), ("start", _i64), ("end", _i64),
                ("reset_at", _i64), ("sbuf", _u64), ("scap", _u64), ("spos", _i64), ("ring", _u64),
                ("slab_pos", _i64), ("slab_idx", _i64), ("vol", _u64), ("need", _i64), ("nstaged", _i64),
                ("locked", _i64), ("writes", _i64), ("bytes", _i64), ("err", _i64), ("known_flags", _u64),
                ("fua_flag", _u64), ("max_payload", _u64), ("staged", ZStaged * STAGE_MAX)]


def cache_dir() -> Path:
    root = os.environ.get("ZVR_CACHE_DIR")
    return Path(root) if root else Path(__file__).resolve().parents[3] / ".cache"


def key() -> str:
    try:
        source = SOURCE.read_bytes()
    except OSError as exc:
        raise NativeUnavailable(f"the IO filter's write path source {SOURCE} is missing ({exc}): reinstall the "
                                f"package") from exc
    digest = hashlib.sha256(source + "\0".join(CFLAGS).encode())
    return digest.hexdigest()[:16]


def lib_path() -> Path:
    return cache_dir() / "native" / key() / LIB_NAME


def build() -> Path:
    """Compile the library into the cache unless it is there already; returns its path."""
    target = lib_path()
    if target.exists():
        return target
    cc = shutil.which(os.environ.get("CC") or "gcc") or (None if os.environ.get("CC") else shutil.which("cc"))
    if cc is None:
        raise NativeUnavailable(f"the IO filter's write path ({SOURCE.name}) must be compiled and no C compiler "
                                f"was found: install Debian's gcc and libc6-dev (apt-get install gcc libc6-dev, "
                                f"or run ./run, which installs them), or set CC")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, *CFLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True)
        if done.returncode:
            raise NativeUnavailable(f"compiling {SOURCE} with {cc} failed (is libc6-dev installed?):\n"
                                    f"{done.stderr.strip()}")
        os.replace(tmp, target)  # atomic: a concurrent build of the same key writes the same bytes
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


class _Lib:
    def __init__(self, path: Path):
        free = ctypes.CDLL(str(path))  # releases the GIL during calls
        held = ctypes.PyDLL(str(path))  # keeps it: short calls
        for name, struct in (("ZRING_LAYOUT", ZRing), ("ZVOL_LAYOUT", ZVol), ("ZCONN_LAYOUT", ZConn)):
            size = _i64.in_dll(held, name).value
            if size != ctypes.sizeof(struct):
                raise NativeUnavailable(f"{path}: {name} is {size} bytes, the Python mirror "
                                        f"{ctypes.sizeof(struct)}: rebuild it (./run)")
        pring, pvol, pconn = ctypes.POINTER(ZRing), ctypes.POINTER(ZVol), ctypes.POINTER(ZConn)
        sigs = {
            (free, "zconn_run"): (ctypes.c_int, [pconn]),
            (free, "zvol_lock"): (None, [pvol]),
            (free, "zring_lock"): (None, [pring]),
            (held, "zconn_release"): (None, [pconn]),
            (held, "zvol_unlock"): (None, [pvol]),
            (held, "zvol_init"): (ctypes.c_int, [pvol]),
            (held, "zvol_destroy"): (None, [pvol]),
            (held, "zvol_set_held"): (None, [pvol, _i64]),
            (held, "zvol_inflight"): (_i64, [pvol]),
            (held, "zring_init"): (ctypes.c_int, [pring]),
            (held, "zring_destroy"): (None, [pring]),
            (held, "zring_unlock"): (None, [pring]),
            (held, "zring_consumed"): (_i64, [pring]),
            (held, "zring_rewind"): (ctypes.c_int, [pring]),
            (held, "zring_reserve"): (_i64, [pring, _u64]),
            (held, "zring_put_write"): (ctypes.c_int, [pring, ctypes.c_char_p, _u64, _u64, _u64, ctypes.c_void_p,
                                                       _u64]),
            (held, "zring_put_ref"): (ctypes.c_int, [pring, ctypes.c_char_p, _u64, _u64, _u64, _u64, _u64, _i64]),
            (held, "zring_put_frame"): (ctypes.c_int, [pring, ctypes.c_char_p, _u64]),
            (held, "zring_publish"): (None, [pring]),
            (free, "zring_bell"): (None, [pring, ctypes.c_int]),
        }
        for (dll, name), (restype, argtypes) in sigs.items():
            fn = getattr(dll, name)
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name, fn)


_lib: _Lib | None = None


def lib() -> _Lib:
    """The loaded library, built first if it is not in the cache (NativeUnavailable says why not)."""
    global _lib
    if _lib is None:
        try:
            _lib = _Lib(build())
        except OSError as exc:
            raise NativeUnavailable(f"cannot load the IO filter's write path {lib_path()}: {exc}") from exc
    return _lib


def address(buffer) -> int:
    """The address of a writable buffer (bytearray, mmap, memoryview of one); it must outlive its use."""
    holder = ctypes.c_char.from_buffer(buffer)
    try:
        return ctypes.addressof(holder)
    finally:
        del holder  # releases the export: the buffer may be closed later
