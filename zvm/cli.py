"""`zvm`: the manager service and the administrator's command line.

Each subcommand lives in the module that owns it and exposes ``register(subparsers)``; this module only
assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from zvm.errors import ZvmError

SUBCOMMANDS = [
    "zvm.lab.command",
    "zvm.serve",
    "zvm.admin",
    "zvm.plugin",
    "zvm.verify",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zvm",
        description=(
            "Zerto-class Virtual Manager: one per site. It talks to its vCenter, deploys a VRA to every "
            "ESXi host, pairs with the peer site on port 9081, manages protection groups (VPGs), watches "
            "RPO, and runs failover test, failover and move. REST API and vSphere client plugin on 9080."
        ),
        epilog="Run 'zvm COMMAND --help' for the options of a command. Start with 'zvm lab up'.",
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
    try:
        return int(args.func(args) or 0)
    except ZvmError as exc:
        print(f"zvm: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
