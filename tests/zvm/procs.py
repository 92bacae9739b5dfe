"""Starting ``zvm serve`` as a real process for the tests, and waiting on its output (never on a timer)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.zvm.pg import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ServeProcess:
    proc: subprocess.Popen
    port: int
    scheme: str = "http"
    lines: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def _pump(self, stream) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<eof>")
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match:
        """The first output line matching ``pattern``; fails if the process ends or ``timeout`` passes."""
        regex = re.compile(pattern)
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if (found := regex.search(line)) is not None:
                        return found
                    if line == "<eof>":
                        raise AssertionError(f"zvm serve ended without {pattern!r}:\n" + "\n".join(self.lines))
                seen = len(self.lines)
                if not self._cond.wait(timeout):
                    raise AssertionError(f"no {pattern!r} from zvm serve in {timeout} s:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.pump is not None:
            self.pump.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def start_serve(data_dir: Path, *args: str, env: dict | None = None, port: int | None = None,
                scheme: str = "http") -> ServeProcess:
    port = port or free_port()
    cmd = [sys.executable, "-m", "zvm.cli", "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1", "--threads", "4", *args]
    if scheme == "http":
        cmd.append("--insecure-http")  # these tests are about other things; tests/security covers HTTPS
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env={**os.environ, **(env or {})})
    sp = ServeProcess(proc=proc, port=port, scheme=scheme)
    sp.pump = threading.Thread(target=sp._pump, args=(proc.stdout,), daemon=True)
    sp.pump.start()
    return sp
