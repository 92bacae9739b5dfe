"""`vra iofilter`: the command line of the IO filter (serve volumes over NBD, split writes to the VRA)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from vra_appliance.iofilter.native import NativeUnavailable
from vra_appliance.iofilter.nbd import DEFAULT_NBD_PORT


def _volume(value: str) -> tuple[str, str]:
    vid, sep, path = value.partition("=")
    if not sep or not vid or not path:
        raise argparse.ArgumentTypeError(f"--volume {value!r}: expected ID=PATH, e.g. vm-12-disk0=/ds/vm-12/disk0-flat.vmdk")
    return vid, path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "iofilter",
        help="serve protected volumes over NBD and split every write to the local VRA",
        description=(
            "The IO filter in front of protected volumes. It serves each volume file as an NBD export named "
            "by its volume id, writes every request to the file, hands the completed write to the local VRA "
            "over a bounded queue and acknowledges the VM. It never waits for the VRA: when the VRA is absent, "
            "slow or the queue is full, the written range goes to the dirty map (saved beside each volume as "
            "PATH.zdirty on a clean stop) for a later bitmap sync. Stop it with SIGTERM or Ctrl-C."),
        epilog=("example: vra iofilter --volume vol-1=/datastore1/vm1/vm1-flat.vmdk --unix /run/zvr/nbd.sock "
                "--vra /run/zvr/split.sock --control /run/zvr/iofilter.ctl   (see docs/IOFILTER.md)"),
    )
    parser.add_argument("--volume", action="append", type=_volume, required=True, metavar="ID=PATH",
                        help="a volume to protect: its id (the NBD export name) and its file; repeat per volume")
    parser.add_argument("--unix", required=True, metavar="SOCKET", help="unix socket path to serve NBD on")
    parser.add_argument("--tcp", metavar="HOST:PORT", nargs="?", const=f"0.0.0.0:{DEFAULT_NBD_PORT}",
                        help=f"also serve NBD on TCP (bare --tcp: 0.0.0.0:{DEFAULT_NBD_PORT})")
    parser.add_argument("--vra", metavar="ADDRESS",
                        help="the local VRA's split address: a unix socket path or HOST:PORT; without it every "
                             "write goes to the dirty map")
    parser.add_argument("--control", metavar="PATH", help="unix socket for freeze/thaw, counters and dirty extents")
    parser.add_argument("--filter-id", help="this filter's id in the split stream (default: HOSTNAME:SOCKET)")
    parser.add_argument("--queue-mib", type=int, default=64,
                        help="bytes not yet acknowledged by the VRA, at most (default 64 MiB); past it, dirty map")
    parser.add_argument("--no-ring", action="store_true",
                        help="split over the unix socket only, without the shared-memory ring")
    parser.add_argument("--dirty-budget-kib", type=int, default=1024,
                        help="memory for dirty extents (16 B each; default 1024 KiB); past it, neighbours merge")
    parser.add_argument("-v", "--verbose", action="store_true", help="log connections and VRA state changes")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vra_appliance.iofilter.filter import IoFilter

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s iofilter %(levelname)s %(message)s")
    volumes = dict(args.volume)
    if len(volumes) != len(args.volume):
        print("vra iofilter: a volume id is given twice; each --volume needs its own id", file=sys.stderr)
        return 2
    try:
        filt = IoFilter(volumes, unix_path=args.unix, tcp=args.tcp, vra=args.vra, control=args.control,
                        filter_id=args.filter_id, queue_bytes=args.queue_mib * 1024 * 1024,
                        dirty_budget_bytes=args.dirty_budget_kib * 1024, ring=not args.no_ring)
        filt.start()
    except (OSError, ValueError, NativeUnavailable) as exc:
        print(f"vra iofilter: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    where = args.unix + (f" and tcp {filt.server.tcp_address[0]}:{filt.server.tcp_address[1]}" if args.tcp else "")
    print(f"vra iofilter: serving {', '.join(volumes)} on {where}; VRA {args.vra or 'none'}", flush=True)
    unclean = [v for v, flag in filt.unclean.items() if flag]
    if unclean:
        print(f"vra iofilter: volumes {unclean} were not stopped cleanly last time: they need a delta sync",
              file=sys.stderr, flush=True)
    stop.wait()
    filt.stop()
    print("vra iofilter: stopped; dirty maps saved", flush=True)
    return 0
