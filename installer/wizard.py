"""`zvm-install`: install the ZVM as a service (interactive, or silent from an answer file); reconfigure,
upgrade or uninstall it. The command line only: the questions are in questions.py, the steps in install.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from installer import answers as answer_files
from installer.errors import AnswerError, InstallerError
from installer.install import Installer, Outcome, preflight
from installer.layout import Layout
from installer.prompt import BACK, Terminal, confirm_summary, interview
from installer.questions import Context


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zvm-install",
        description=(
            "Install the ZVM (this site's manager) as a systemd service: asks for the vCenter and its "
            "credentials (checked by logging in), the site, the addresses and ports (9080 API/UI, 9081 peer "
            "site), HTTPS, the database and the admin password, then installs, starts it and registers the "
            "vSphere Client plugin. Run again to reconfigure. See docs/INSTALL.md."),
        epilog="Exit status: 0 done, 1 a step failed (what it changed was undone), 2 an answer is wrong "
               "(nothing changed), 3 not supported on this platform.")
    parser.add_argument("--answers", metavar="FILE", help="silent mode: the answers from FILE (TOML or YAML)")
    parser.add_argument("--write-answers", metavar="FILE",
                        help="save the answers to FILE (.toml or .yaml) for a silent install elsewhere")
    parser.add_argument("--with-secrets", action="store_true", help="with --write-answers: include passwords")
    parser.add_argument("--root", metavar="DIR", type=Path, default=Path("/"),
                        help="install into a staging tree under DIR (tests, packaging)")
    parser.add_argument("--no-start", action="store_true", help="install and enable, but do not start")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--reconfigure", action="store_true",
                      help="silent mode on an installed ZVM: apply the answer file to it")
    mode.add_argument("--upgrade", action="store_true",
                      help="keep data and settings; migrate the database, restart, update the plugin")
    mode.add_argument("--uninstall", action="store_true",
                      help="unregister the plugin, stop and remove the service; keep the data")
    parser.add_argument("--purge", action="store_true", help="with --uninstall: remove the data and the user too")
    parser.add_argument("--keep-plugin", action="store_true",
                        help="with --uninstall: leave the plugin registered (when vCenter cannot be reached)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.purge or args.keep_plugin) and not args.uninstall:
        parser.error("--purge and --keep-plugin go with --uninstall")
    if args.with_secrets and not args.write_answers:
        parser.error("--with-secrets goes with --write-answers")
    interactive = not (args.answers or args.upgrade or args.uninstall)
    if interactive and not sys.stdin.isatty():
        parser.error("no terminal to ask questions on: give the answers with --answers FILE")
    term = Terminal()
    try:
        return run(args, term, interactive)
    except AnswerError as exc:
        where = "answer file key" if args.answers else "answer"
        print(f"zvm-install: {where} {exc.key}: {exc.message}\nNothing was installed or changed.", file=sys.stderr)
        return exc.exit_code
    except InstallerError as exc:
        print(f"zvm-install: {exc}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, EOFError):
        print("\nzvm-install: stopped; nothing was changed.", file=sys.stderr)
        return 130


def run(args, term: Terminal, interactive: bool) -> int:
    layout = Layout(args.root)
    preflight(layout)
    installer = Installer(layout, out=term.say, start=not args.no_start)
    if args.uninstall:
        kept = installer.uninstall(purge=args.purge, keep_plugin=args.keep_plugin)
        term.say("The ZVM is uninstalled: service stopped and removed, configuration removed"
                 + ("; the plugin is still registered." if args.keep_plugin else "."))
        if kept:
            term.say(f"Kept: {', '.join(kept)} (remove them with --uninstall --purge).")
        return 0
    if args.upgrade:
        outcome = installer.upgrade()
        report(term, outcome, "upgraded")
        return 0
    ctx = Context()
    if layout.installed():
        record = layout.record()
        if interactive:
            term.say(f"A ZVM {record.get('version', '')} is installed here (since {record.get('installed_at', '?')}).")
            if term.read("Reconfigure it, keeping its data? (yes/no) [yes]: ").strip().lower() not in ("", "y", "yes"):
                term.say("Nothing changed. (zvm-install --upgrade upgrades it, --uninstall removes it.)")
                return 0
        elif not args.reconfigure:
            raise InstallerError("a ZVM is installed here already: pass --reconfigure to apply the answer file "
                                 "to it, --upgrade to upgrade it, or --uninstall")
        ctx.previous = dict(record["answers"])
        ctx.own_ports = {ctx.previous.get("network.api_port"), ctx.previous.get("network.peer_port")}
        stored = installer.stored_vcenter_password()
        ctx.stored_secret = lambda key: stored if key == "vcenter.password" else None
    if interactive:
        asked = None
        while True:
            asked = interview(ctx, term, asked)
            decision = confirm_summary(ctx, term, "Reconfigure" if layout.installed() else "Install")
            if decision is True:
                break
            if decision is False:
                term.say("Nothing was installed or changed.")
                return 1
            assert decision == BACK
    else:
        answer_files.walk(answer_files.read(args.answers), ctx)
    if args.write_answers:
        answer_files.write(args.write_answers, ctx.answers, with_secrets=args.with_secrets)
        term.say(f"answers saved to {args.write_answers}{'' if args.with_secrets else ' (without passwords)'}")
    outcome = installer.install(ctx.answers)
    report(term, outcome, "reconfigured" if ctx.previous else "installed")
    return 0


def report(term: Terminal, o: Outcome, what: str) -> None:
    state = {"systemd": "and running", "directly (no systemd)": "and running", "": "but not started (--no-start)"}
    term.say(f"\nThe ZVM is {what} {state[o.started]} ({o.seconds:.1f} s).")
    for note in o.notes:
        term.say(f"Note: {note}")
    if o.url:
        term.say(f"  UI and REST API:    {o.url}")
    if o.fingerprint:
        term.say(f"  HTTPS certificate:  SHA-256 {o.fingerprint}\n"
                 "                      (check it against what your browser shows on first connection)")
    if o.admin_password:
        term.say(f"  admin password:     {o.admin_password}\n"
                 "                      (generated: shown only this once; keep it in your password manager)")
    if o.plugin:
        term.say(f"  vSphere plugin:     {o.plugin}")
    if what != "upgraded" and o.url:
        term.say("Next:\n"
                 f"  1. Log in at {o.url} as admin (or: zvm status --url {o.url.rstrip('/')}).\n"
                 "  2. Pair with the peer site's ZVM: the two ZVMs reach each other on the peer port.\n"
                 "  3. Install a VRA on every ESXi host of this site, then protect VMs in VPGs.\n"
                 "  Firewall (docs/INSTALL.md): the API port for administrators and the vSphere Client, the\n"
                 "  peer port for the peer site's ZVM.")

if __name__ == "__main__":
    sys.exit(main())
