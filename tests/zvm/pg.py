"""A throw-away PostgreSQL server for the tests, from Debian's ``postgresql`` package.

``PostgresServer.start(dir)`` runs initdb (password authentication, scram-sha-256) and ``pg_ctl start -w``
on a free loopback port, as the ``postgres`` system user when the tests run as root (initdb refuses root).
``new_database()`` creates an empty database and returns its URL; ``stop()`` stops the server.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    root: Path
    port: int
    user: str
    password: str
    run_as: str | None

    @classmethod
    def start(cls) -> PostgresServer:
        run_as = "postgres" if os.geteuid() == 0 else None
        # tmp_path is 0700 root: the postgres user could not reach it, so take a directory of our own.
        root = Path(tempfile.mkdtemp(prefix="zvm-pg-"))
        if run_as:
            entry = pwd.getpwnam(run_as)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        password = secrets.token_urlsafe(16)
        server = cls(root=root, port=free_port(), user="zvm", password=password, run_as=run_as)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if run_as:
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        server._run(PG_BIN / "initdb", "-D", str(root / "data"), "-U", server.user, "--pwfile", str(pwfile),
                    "--auth=scram-sha-256", "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        options = f"-c listen_addresses=127.0.0.1 -c port={server.port} -k {root} -c fsync=off"
        server._run(PG_BIN / "pg_ctl", "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-t", "60",
                    "-o", options, "start")
        return server

    def _run(self, *argv) -> str:
        cmd = [str(a) for a in argv]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg2

        name = "zvm_" + secrets.token_hex(6)
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(PG_BIN / "pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
