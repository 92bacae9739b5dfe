"""How every administrator command reaches the ZVM: the connection options, the saved session, the output
and the exit code.

``zvm login`` logs in once and keeps the session (the ZVM's URL, how its certificate is verified, the user
and the session token) in a file only its owner may read (``~/.config/zvm/session.json``, 0600 in a 0700
directory; ``ZVM_SESSION_FILE`` to put it elsewhere), as other CLIs do; later commands use it until it
expires (``zvm logout`` ends it). Without a saved session, or with ``--url`` / ``ZVM_PASSWORD`` given, a
command logs in by itself (password from ``ZVM_PASSWORD``, else asked for) and logs out after.

Every command prints a table, or the API's JSON with ``--output json`` (``--json`` is the same). Exit codes,
for scripts (``EXIT_CODES``): 0 done; 1 refused by the ZVM (invalid, not found, conflict: the message says
what to fix); 2 wrong usage of the command; 3 not logged in, session expired, credentials or role refused;
4 the ZVM cannot be reached or is unavailable (retry); 5 a task waited for (``--wait``) ended Failed;
130 interrupted; 141 the output was closed (``zvm tasks | head``). A message from the ZVM that names an API
call is said in terms of the command to run.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from pathlib import Path

from zvm.client import TaskFailedError, ZvmClient
from zvm.errors import (
    AuthenticationError,
    AuthorizationError,
    ConfigError,
    SessionError,
    TransientError,
    ZvmError,
)

EXIT_CODES = {0: "done", 1: "refused by the ZVM (the message says what to fix)", 2: "wrong usage",
              3: "not logged in, session expired, or credentials or role refused",
              4: "the ZVM cannot be reached or is unavailable: retry", 5: "a task waited for (--wait) failed",
              130: "interrupted", 141: "the output was closed"}
DEFAULT_URL = "https://127.0.0.1:9080"


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, TaskFailedError):
        return 5
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return 3
    if isinstance(exc, TransientError) and exc.code != "CertificateRefused":
        return 4
    return 1


# API calls named in the ZVM's messages -> the command that does the same
_CLI_TERMS = [
    (r"(log in (again )?)?with POST /v1/session/add( \(HTTP Basic\))?( and send the token it returns in the "
     r"\S+ header)?", "log in with 'zvm login'"),
    (r"GET /v1/vpgs/\{?[\w-]+\}?/checkpoints", "'zvm checkpoints VPG'"),
    (r"GET /v1/vpgs\b", "'zvm vpgs'"),
    (r"GET /v1/tasks\b", "'zvm tasks'"),
    (r"GET /v1/vras\b", "'zvm vras'"),
    (r"GET /v1/alerts\b", "'zvm alerts'"),
    (r"GET /v1/events\b", "'zvm events'"),
    (r"GET /v1/vms\S*", "'zvm protected-vms'"),
    (r"GET /v1/virtualizationsites/\{siteIdentifier\}/hosts", "'zvm hosts'"),
    (r"GET /v1/virtualizationsites/\{siteIdentifier\}/vms", "'zvm vms'"),
    (r"GET /v1/virtualizationsites\b", "'zvm sites'"),
    (r"GET /v1/reports/recovery\b", "'zvm recovery-reports'"),
    (r"POST /v1/peersites/generatetoken", "'zvm pair-token'"),
    (r"POST /v1/peersites\b", "'zvm pair'"),
    (r"DELETE /v1/peersites/\{siteIdentifier\}", "'zvm unpair SITE'"),
    (r"POST /v1/vpgSettings/\{id\}/vms", "'zvm vpg edit VPG --add-vm VM'"),
    (r"POST /v1/vpgSettings\b", "'zvm vpg create'"),
    (r"POST \.\.\./resume", "'zvm vpg resume VPG'"),
    (r"see GET /v1/openapi.json[^:;.]*", "see 'zvm --help'"),
]


def cli_terms(message: str) -> str:
    for pattern, said in _CLI_TERMS:
        message = re.sub(pattern, said, message)
    return message


def add_connection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("ZVM_URL"),
                   help=f"the ZVM's API address (env ZVM_URL; default: the saved session's, else {DEFAULT_URL})")
    p.add_argument("--user", default=os.environ.get("ZVM_USER"), help="user name (env ZVM_USER, default admin)")
    p.add_argument("--ca-file", default=os.environ.get("ZVM_CA_FILE"),
                   help="CA bundle that signed the ZVM's HTTPS certificate (env ZVM_CA_FILE)")
    p.add_argument("--fingerprint", default=os.environ.get("ZVM_FINGERPRINT"),
                   help="accept only the HTTPS certificate with this SHA-256 fingerprint, as 'zvm serve' "
                        "prints it (env ZVM_FINGERPRINT)")
    p.add_argument("--insecure", action="store_true", help="do not verify the HTTPS certificate (labs only)")


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", choices=["table", "json"], default="table",
                   help="a table (default) or the API's JSON")
    p.add_argument("--json", dest="output", action="store_const", const="json", help="the same as --output json")


def common(p: argparse.ArgumentParser) -> None:
    add_connection_options(p)
    add_output_options(p)


def session_file() -> Path:
    given = os.environ.get("ZVM_SESSION_FILE")
    if given:
        return Path(given)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "zvm" / "session.json"


def save_session(data: dict) -> Path:
    path = session_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.chmod(tmp, 0o600)  # an older file of looser mode is replaced, not reused
    os.replace(tmp, path)
    return path


def load_session() -> dict | None:
    path = session_file()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if mode & 0o077:
        raise ConfigError(f"{path} may be read by other users (mode {oct(mode & 0o777)}): remove it and run "
                          "'zvm login' again")
    return json.loads(path.read_text())


def forget_session() -> None:
    session_file().unlink(missing_ok=True)


def password(user: str) -> str:
    given = os.environ.get("ZVM_PASSWORD")
    if given is not None:
        return given
    if not sys.stdin.isatty():
        raise ConfigError("no password: set ZVM_PASSWORD, or run in a terminal to be asked")
    return getpass.getpass(f"password of {user}: ")


def verify_of(args) -> tuple[bool | str, str | None]:
    if args.insecure:
        return False, None
    return (args.ca_file or True), args.fingerprint


def connect(args) -> tuple[ZvmClient, bool]:
    """A logged-in client, and whether the command logs it out after (a session of its own)."""
    saved = None if (args.url or os.environ.get("ZVM_PASSWORD") is not None) else load_session()
    if saved:
        client = ZvmClient(saved["Url"], verify=saved["Verify"], fingerprint=saved.get("Fingerprint"))
        client.token = saved["Token"]
        return client, False
    verify, fingerprint = verify_of(args)
    client = ZvmClient(args.url or DEFAULT_URL, verify=verify, fingerprint=fingerprint)
    user = args.user or "admin"
    client.login(user, password(user))
    return client, True


def runner(fn):
    """A command: connect, ``fn(client, args) -> (data, rows, columns)``, print, end the session if it was
    the command's own."""
    def run(args) -> int:
        client, own = connect(args)
        try:
            data, rows, columns = fn(client, args)
        except SessionError as exc:
            if not own:
                raise SessionError("the saved session expired or was ended: run 'zvm login' again") from exc
            raise
        finally:
            if own:
                client.close()
            else:
                client.http.close()
        show(args, data, rows, columns)
        return getattr(args, "exit_code", 0)

    return run


def show(args, data, rows: list[dict], columns: list[str]) -> None:
    if getattr(args, "output", "table") == "json":
        print(json.dumps(data, indent=2))
    else:
        print_table(rows, columns)


def print_table(rows: list[dict], columns: list[str], out=None) -> None:
    out = out or sys.stdout
    if not rows:
        print("(none)", file=out)
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


def register_session(subparsers) -> None:
    p = subparsers.add_parser("login", help="log in and keep the session for the next commands",
                              description="Log in to a ZVM and keep the session in "
                              f"{session_file()} (0600; ZVM_SESSION_FILE to move it): later commands use it "
                              "until it expires or 'zvm logout'. The password comes from ZVM_PASSWORD, else is "
                              "asked for.")
    add_connection_options(p)
    add_output_options(p)
    p.set_defaults(func=_login)
    p = subparsers.add_parser("logout", help="end the saved session",
                              description="End the session 'zvm login' saved, on the ZVM and on disk.")
    add_output_options(p)
    p.set_defaults(func=_logout)


def _login(args) -> int:
    verify, fingerprint = verify_of(args)
    url = args.url or DEFAULT_URL
    user = args.user or "admin"
    client = ZvmClient(url, verify=verify, fingerprint=fingerprint)
    try:
        client.login(user, password(user))
        info = client.session()
    finally:
        client.http.close()
    path = save_session({"Url": client.url, "Verify": verify, "Fingerprint": fingerprint, "User": user,
                         "Token": client.token})
    data = {**info, "Url": client.url, "SessionFile": str(path)}
    show(args, data, [{"User": info["User"], "Role": info["Role"], "ZVM": client.url, "Saved in": str(path)}],
         ["User", "Role", "ZVM", "Saved in"])
    return 0


def _logout(args) -> int:
    saved = load_session()
    if saved is None:
        show(args, {"LoggedOut": False}, [{"Session": "none saved"}], ["Session"])
        return 0
    client = ZvmClient(saved["Url"], verify=saved["Verify"], fingerprint=saved.get("Fingerprint"))
    client.token = saved["Token"]
    try:
        client.logout()
    except (SessionError, TransientError):
        pass  # expired or unreachable: the file goes all the same
    except ZvmError:
        raise
    finally:
        client.http.close()
        forget_session()
    show(args, {"LoggedOut": True}, [{"Session": "ended"}], ["Session"])
    return 0
