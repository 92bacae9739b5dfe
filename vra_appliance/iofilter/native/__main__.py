"""``python -m vra_appliance.iofilter.native``: build the compiled write path into the cache (./run does, at
set-up) and print its path; exit 1 with what to install if it cannot be built."""

import sys

from vra_appliance.iofilter.native import NativeUnavailable, build

try:
    print(build())
except NativeUnavailable as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
