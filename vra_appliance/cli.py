"""`vra`: the replication appliance's command line.

Each subcommand lives in the module that owns it and exposes ``register(subparsers)``; this module only
assembles them, so the IO filter, the daemon and the syncs can grow without touching one shared file.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, human summary) for every subcommand; a module registers its own parser and handler.
SUBCOMMANDS = [
    "vra_appliance.iofilter.command",
    "vra_appliance.daemon",
    "vra_appliance.appliance.command",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vra",
        description=(
            "Virtual Replication Appliance: one per ESXi host. It captures every write of protected VMs "
            "through the IO filter, streams them to the recovery site's VRA on port 4005, and there keeps "
            "the journal from which any checkpoint can be recovered."
        ),
        epilog="Run 'vra COMMAND --help' for the options of a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
