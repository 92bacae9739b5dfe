"""`zvm-install`: the ZVM installer wizard (interactive, or silent from an answer file).

The full wizard is a later issue; for now it validates and explains its options.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zvm-install",
        description=(
            "Install the ZVM manager service on this machine: choose the data directory, the vCenter to "
            "manage and its credentials, the REST API port (9080) and the peer port (9081), and register "
            "the vSphere client plugin. Without --silent it asks for each value."
        ),
    )
    parser.add_argument("--silent", metavar="ANSWERS.json", help="install without questions, from an answer file")
    parser.add_argument("--data-dir", default="/var/lib/zvm", help="where the ZVM keeps its database and certificates")
    parser.add_argument("--vcenter", metavar="HOST", help="vCenter address (https://HOST/sdk)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.silent and not sys.stdin.isatty():
        parser.error("no terminal to ask questions on: pass --silent ANSWERS.json for an unattended install")
    print("zvm-install: the installer wizard is not available in this build yet; run 'zvm serve' directly.",
          file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
