"""`zvm`: the manager service and the administrator's command line.

Each subcommand lives in the module that owns it and exposes ``register(subparsers)``; this module only
assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import os
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
        epilog="Run 'zvm COMMAND --help' for the options of a command. Start with 'zvm lab up', then "
               "'zvm login'. Exit codes: 0 done, 1 refused by the ZVM (the message says what to fix), 2 wrong "
               "usage, 3 not logged in or not allowed, 4 the ZVM cannot be reached (retry), 5 a task waited "
               "for failed, 130 interrupted, 141 output closed.",
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
    from zvm.admin.session import cli_terms, exit_code

    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except ZvmError as exc:
        print(f"zvm: {cli_terms(str(exc))}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (zvm tasks | head): no traceback; stdout is pointed at /dev/null so that
        # the interpreter's own flush at exit does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
