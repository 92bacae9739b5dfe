"""NBD wire constants and struct layouts (fixed newstyle handshake, simple and structured replies).

Pure data: no sockets here. Values follow the NBD protocol document (NetworkBlockDevice/nbd doc/proto.md);
all integers are big-endian on the wire.
"""

from __future__ import annotations

import errno
import struct

# Handshake
NBDMAGIC = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054  # "IHAVEOPT"
OPTION_REPLY_MAGIC = 0x0003E889045565A9

FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
CLIENT_FLAG_FIXED_NEWSTYLE = 1 << 0
CLIENT_FLAG_NO_ZEROES = 1 << 1

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_ERR_UNSUP = (1 << 31) + 1
REP_ERR_POLICY = (1 << 31) + 2
REP_ERR_INVALID = (1 << 31) + 3
REP_ERR_UNKNOWN = (1 << 31) + 6
REP_ERR_SHUTDOWN = (1 << 31) + 7
REP_ERR_TOO_BIG = (1 << 31) + 9

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# Transmission flags
TFLAG_HAS_FLAGS = 1 << 0
TFLAG_READ_ONLY = 1 << 1
TFLAG_SEND_FLUSH = 1 << 2
TFLAG_SEND_FUA = 1 << 3
TFLAG_SEND_TRIM = 1 << 5
TFLAG_SEND_WRITE_ZEROES = 1 << 6
TFLAG_SEND_DF = 1 << 7
TFLAG_CAN_MULTI_CONN = 1 << 8
TFLAG_SEND_FAST_ZERO = 1 << 11

# Commands and their flags
CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_FAST_ZERO = 1 << 4
KNOWN_CMD_FLAGS = CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_DF | CMD_FLAG_REQ_ONE | CMD_FLAG_FAST_ZERO

REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF
REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_ERROR = (1 << 15) + 1

# Errors the protocol can carry; anything else a backend raises is sent as EIO.
NBD_EPERM = 1
NBD_EIO = 5
NBD_ENOMEM = 12
NBD_EINVAL = 22
NBD_ENOSPC = 28
NBD_EOVERFLOW = 75
NBD_ENOTSUP = 95
NBD_ESHUTDOWN = 108
_ERRNO_TO_NBD = {
    errno.EPERM: NBD_EPERM,
    errno.EROFS: NBD_EPERM,
    errno.EACCES: NBD_EPERM,
    errno.EIO: NBD_EIO,
    errno.ENOMEM: NBD_ENOMEM,
    errno.EINVAL: NBD_EINVAL,
    errno.ENOSPC: NBD_ENOSPC,
    errno.EDQUOT: NBD_ENOSPC,
    errno.EFBIG: NBD_ENOSPC,
    errno.EOVERFLOW: NBD_EOVERFLOW,
    errno.EOPNOTSUPP: NBD_ENOTSUP,
    errno.ESHUTDOWN: NBD_ESHUTDOWN,
}


def nbd_error(err: int | None) -> int:
    """Map a local errno to the NBD error code sent on the wire (EIO when the protocol has no equivalent)."""
    return _ERRNO_TO_NBD.get(err or errno.EIO, NBD_EIO)


# Struct layouts
HANDSHAKE = struct.Struct(">QQH")  # NBDMAGIC, IHAVEOPT, handshake flags
CLIENT_FLAGS = struct.Struct(">I")
OPTION_HEADER = struct.Struct(">QII")  # IHAVEOPT, option, length
OPTION_REPLY = struct.Struct(">QIII")  # magic, option, reply type, length
EXPORT_NAME_REPLY = struct.Struct(">QH")  # size, transmission flags (+124 zero bytes unless NO_ZEROES)
INFO_EXPORT_BODY = struct.Struct(">HQH")  # NBD_INFO_EXPORT, size, transmission flags
INFO_BLOCK_SIZE_BODY = struct.Struct(">HIII")  # NBD_INFO_BLOCK_SIZE, minimum, preferred, maximum
REQUEST = struct.Struct(">IHHQQI")  # magic, command flags, type, handle, offset, length
SIMPLE_REPLY = struct.Struct(">IIQ")  # magic, error, handle
STRUCTURED_REPLY = struct.Struct(">IHHQI")  # magic, flags, type, handle, payload length
OFFSET_DATA_HEAD = struct.Struct(">IHHQIQ")  # structured header + offset
ERROR_CHUNK_BODY = struct.Struct(">IH")  # error, message length

# Limits this server advertises and enforces
MIN_BLOCK_SIZE = 1
PREFERRED_BLOCK_SIZE = 4096
MAX_PAYLOAD = 4 * 1024 * 1024  # largest READ or WRITE; clients split larger requests
MAX_OPTION_LENGTH = 64 * 1024  # option data beyond this is a denial of service, not a request
