"""NBD block status: the ``base:allocation`` metadata context (which ranges are holes, which hold data).

The handshake's NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT are answered here (`meta_option`),
and NBD_CMD_BLOCK_STATUS replies are built here (`status_reply`); nbd_handshake.py and
nbd_transmission.py only route to them. Only ``base:allocation`` exists, with the id `CONTEXT_ID`, and
only with structured replies (the protocol's rule). Clients use it to skip holes: ``qemu-img convert``,
``nbdcopy``, ``nbdinfo --map``, and the initial sync.

Where the extents come from: a backend's optional ``block_status(offset, length) -> [(length, flags)]``
(consecutive from ``offset``; flags `STATE_HOLE` | `STATE_ZERO`, 0 for data). A backend without it is
all data, which is always a correct answer. `file_extents` is the one for a sparse file
(zvr_common.sparse: SEEK_DATA / SEEK_HOLE): a hole reads as zeroes, so it is HOLE | ZERO.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable

from vra_appliance.errors import MetaOptionError
from vra_appliance.iofilter import nbd_proto as p
from zvr_common import sparse

CONTEXT = b"base:allocation"
CONTEXT_ID = 1  # the server picks the ids; there is one context
STATE_HOLE = 1
STATE_ZERO = 2
REP_META_CONTEXT = 4
REPLY_TYPE_BLOCK_STATUS = 5
MAX_DESCRIPTORS = 4096  # per reply: a client asks again from where the reply ended

Extents = list[tuple[int, int]]  # (length, flags), consecutive


def parse_meta_option(data: bytes) -> tuple[str, list[bytes]]:
    """(export name, queries) of a LIST/SET_META_CONTEXT option's data."""
    try:
        (name_len,) = struct.unpack_from(">I", data, 0)
        name = data[4:4 + name_len]
        if len(name) != name_len:
            raise struct.error("export name")
        pos = 4 + name_len
        (count,) = struct.unpack_from(">I", data, pos)
        pos += 4
        queries = []
        for _ in range(count):
            (qlen,) = struct.unpack_from(">I", data, pos)
            query = data[pos + 4:pos + 4 + qlen]
            if len(query) != qlen:
                raise struct.error("query")
            queries.append(query)
            pos += 4 + qlen
    except struct.error:
        raise MetaOptionError(p.REP_ERR_INVALID, "meta context option data is cut short (export name, "
                                                 "query count and queries do not fit its length)") from None
    if pos != len(data):
        raise MetaOptionError(p.REP_ERR_INVALID, "meta context option data is longer than its queries")
    return name.decode("utf-8", "replace"), queries


def _matches(query: bytes, listing: bool) -> bool:
    if query == CONTEXT:
        return True
    # LIST may ask for a whole namespace ("base:"); SET selects contexts by their full name only
    return listing and query == b"base:"


def meta_option(option: int, data: bytes, structured: bool, exists: Callable[[str], bool]) -> tuple[str, bool]:
    """Answer LIST_META_CONTEXT or SET_META_CONTEXT: (export name, whether ``base:allocation`` is in the
    answer). The caller sends one NBD_REP_META_CONTEXT for it (`context_reply`) then NBD_REP_ACK; a SET
    selects it for that export (and replaces any earlier selection). Raises MetaOptionError."""
    listing = option == p.OPT_LIST_META_CONTEXT
    if not structured:
        raise MetaOptionError(p.REP_ERR_INVALID, "metadata contexts need structured replies: send "
                                                 "NBD_OPT_STRUCTURED_REPLY first")
    name, queries = parse_meta_option(data)
    if not exists(name):
        raise MetaOptionError(p.REP_ERR_UNKNOWN, f"no export named {name!r}; NBD_OPT_LIST shows the exports")
    if listing and not queries:
        return name, True
    return name, any(_matches(q, listing) for q in queries)


def context_reply() -> bytes:
    """The NBD_REP_META_CONTEXT payload that names ``base:allocation``."""
    return struct.pack(">I", CONTEXT_ID) + CONTEXT


def file_extents(fd: int, offset: int, length: int) -> Extents:
    """The data and holes of ``[offset, offset + length)`` of a sparse file."""
    return [(n, STATE_HOLE | STATE_ZERO if hole else 0) for n, hole in sparse.extents(fd, offset, length)]


def merge(extents: Extents) -> Extents:
    """Neighbours with the same flags as one extent (empty ones dropped)."""
    out: Extents = []
    for length, flags in extents:
        if not length:
            continue
        if out and out[-1][1] == flags:
            out[-1] = (out[-1][0] + length, flags)
        else:
            out.append((length, flags))
    return out


def extents_of(backend, offset: int, length: int) -> Extents:
    status = getattr(backend, "block_status", None)
    if status is None:
        return [(length, 0)]
    return merge(status(offset, length))


def status_reply(handle: int, extents: Extents, length: int, req_one: bool) -> bytes:
    """The NBD_REPLY_TYPE_BLOCK_STATUS chunk (flag DONE) for a request of ``length`` bytes: the extents cut
    to that length, one of them with REQ_ONE, at most `MAX_DESCRIPTORS`."""
    descriptors = []
    left = length
    for ext_len, flags in extents:
        if left <= 0:
            break
        n = min(ext_len, left)
        descriptors.append(struct.pack(">II", n, flags))
        left -= n
        if req_one or len(descriptors) >= MAX_DESCRIPTORS:
            break
    if not descriptors:
        raise OSError(errno.EIO, "the export returned no block status for the range")
    body = struct.pack(">I", CONTEXT_ID) + b"".join(descriptors)
    return p.STRUCTURED_REPLY.pack(p.STRUCTURED_REPLY_MAGIC, p.REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, handle,
                                   len(body)) + body
