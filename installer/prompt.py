"""The wizard's terminal side: one question at a time with its default, checked at once, '<' to go back,
'?' for help; then the summary, confirmed before anything changes.

A refused answer is said plainly and asked again; when the fault is another question's (vCenter cannot be
reached: the address), the wizard goes back to that one. Passwords are read without echo (getpass).
"""

from __future__ import annotations

import getpass
import sys
from typing import Any, TextIO

from installer.checks import colon_hex
from installer.errors import Invalid
from installer.questions import BY_KEY, QUESTIONS, Context, Question, summary

BACK = "<"


class Terminal:
    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None):
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout

    def say(self, text: str = "") -> None:
        print(text, file=self.stdout, flush=True)

    def read(self, prompt: str, secret: bool = False) -> str:
        if secret:
            return getpass.getpass(prompt, stream=self.stdout)
        self.stdout.write(prompt)
        self.stdout.flush()
        line = self.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")


def shown_default(q: Question, default: Any, ctx: Context) -> str:
    if q.kind == "secret":
        if ctx.stored_secret(q.key) is not None:
            return " [Enter: keep the current one]"
        return " [Enter: generate one]" if default == "" else ""
    if default is None:
        return ""
    if q.kind == "bool":
        return " [Y/n]" if default else " [y/N]"
    if q.key == "vcenter.thumbprint" and default:
        return " [Enter: accept it]"
    if q.kind == "choice":
        return f" ({'/'.join(q.choices)}) [{default}]"
    return f" [{default}]"


def interview(ctx: Context, term: Terminal, asked: list[int] | None = None) -> list[int]:
    """Ask every question that applies, the checked answers going into ``ctx.answers``; returns the
    questions asked, in order. Given that list back (from the summary's '<'), it asks again from the
    last one."""
    if asked:
        i = asked.pop()
        _forget_from(ctx, i)
    else:
        term.say("Answer each question, or press Enter for the default in [brackets]. '<' goes back to the "
                 "previous question, '?' explains the current one. Nothing changes before you confirm the "
                 "summary.")
        asked, i = [], 0
    while i < len(QUESTIONS):
        q = QUESTIONS[i]
        if not q.when(ctx):
            i += 1
            continue
        default = q.default_for(ctx)
        if q.key == "vcenter.thumbprint" and default:
            term.say(f"vCenter presents a certificate with SHA-256 fingerprint\n    {colon_hex(default)}\n"
                     "  Compare it with the one your vCenter shows; accept it to pin it, or type - to trust "
                     "vCenter through a CA bundle instead.")
        raw = term.read(f"{q.label}{shown_default(q, default, ctx)}: ", secret=q.kind == "secret")
        if raw.strip() == "?":
            term.say(f"  {q.help}")
            continue
        if raw.strip() == BACK:
            if not asked:
                term.say("  (this is the first question)")
                continue
            i = asked.pop()
            _forget_from(ctx, i)
            continue
        try:
            if raw.strip() == "" and default is not None and q.kind != "secret":
                value = default
            else:
                value = q.parse(raw)
            ctx.answers[q.key] = q.accept(value, ctx)
        except Invalid as exc:
            term.say(f"  ! {exc.message}")
            if exc.key and exc.key != q.key and exc.key in BY_KEY:
                target = QUESTIONS.index(BY_KEY[exc.key])
                if target < i:
                    while asked and asked[-1] >= target:
                        asked.pop()
                    i = target
                    _forget_from(ctx, i)
            continue
        asked.append(i)
        i += 1
    return asked


def _forget_from(ctx: Context, index: int) -> None:
    for q in QUESTIONS[index:]:
        ctx.answers.pop(q.key, None)


def confirm_summary(ctx: Context, term: Terminal, action: str = "Install") -> bool | str:
    """Show the summary; True to go ahead, False to quit, BACK to change the last answer."""
    term.say("\nSummary:")
    rows = summary(ctx.answers, ctx.facts)
    width = max(len(label) for label, _ in rows)
    for label, shown in rows:
        term.say(f"  {label.ljust(width)}  {shown}")
    while True:
        raw = term.read(f"\n{action} with these answers? (yes / no / < to go back) [yes]: ").strip().lower()
        if raw in ("", "y", "yes"):
            return True
        if raw in ("n", "no", "q", "quit"):
            return False
        if raw == BACK:
            return BACK
        term.say("  ! answer yes, no, or <")
