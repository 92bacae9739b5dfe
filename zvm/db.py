"""The ZVM's database: which engine, how to connect, and the key that encrypts stored credentials.

An embedded SQLite file is the default (``sqlite:///DATA_DIR/zvm.db``); a large site points
``database_url`` at PostgreSQL (``postgresql://user:password@host:port/name``). Models bind to
``database_proxy`` (see zvm/models.py); ``open_database`` makes the concrete database and ``bind`` points the
proxy at it: one ZVM per process.

peewee's errors are translated here and in ``transaction``: a database that cannot be reached or is
locked is a ``TransientError`` (retry), a broken constraint a ``ConflictError``.

Secrets (vCenter and peer credentials, private keys) are stored encrypted with Fernet (AES-128-CBC and
HMAC-SHA256) under a key kept in the data directory, readable by the service's user only (0600). The key
never goes into the database, so a copy of the database alone reveals no credential. The data directory
is the service user's only (0700, ``private_dir``) and the SQLite file (with its -wal and -shm, which SQLite
creates with the database file's mode) 0600: it holds password and token hashes.

SQLite under concurrent writers: WAL (readers never wait), a busy timeout (a writer waits for another up to
10 s instead of failing with "database is locked"), and write transactions that take the lock at BEGIN; the
callers keep transactions short (no password hashing, no network call inside one).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import peewee
from cryptography.fernet import Fernet, InvalidToken
from playhouse.pool import PooledPostgresqlDatabase

from zvm.errors import ConfigError, ConflictError, CorruptionError, TransientError

database_proxy = peewee.DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never wait for the writer
    "busy_timeout": 10_000,  # ms a writer waits for another before "database is locked"
    "foreign_keys": 1,
    "synchronous": "normal",  # durable at checkpoints; with WAL a crash loses no committed state
}


def default_url(data_dir: str | os.PathLike) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / 'zvm.db'}"


def open_database(url: str) -> peewee.Database:
    """``sqlite:///ABSOLUTE/PATH`` or ``postgresql://user:password@host:port/name`` -> a peewee database."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if not path or path == "/":
            raise ConfigError(f"database URL {url!r} names no file: use sqlite:////absolute/path/zvm.db")
        private_file(Path(path))
        # Every transaction takes the write lock at BEGIN: a deferred one that reads, then writes, fails
        # at once with "database is locked" when another writer committed in between.
        return peewee.SqliteDatabase(path, pragmas=SQLITE_PRAGMAS, timeout=10, lock_type="IMMEDIATE")
    if parts.scheme in ("postgres", "postgresql"):
        name = parts.path.lstrip("/")
        if not name or not parts.hostname:
            raise ConfigError(f"database URL {redact(url)!r}: use postgresql://user:password@host:port/name")
        return PooledPostgresqlDatabase(
            name, host=parts.hostname, port=parts.port or 5432, user=unquote(parts.username or "") or None,
            password=unquote(parts.password or "") or None, max_connections=64, stale_timeout=300,
            timeout=10, connect_timeout=10)
    raise ConfigError(f"database URL {redact(url)!r}: the scheme must be sqlite:// or postgresql://")


def private_dir(path: Path) -> Path:
    """``path`` made if missing, and readable by its owner only (0700)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        path.chmod(0o700)
    return path


def private_file(path: Path) -> None:
    """The database file (created empty if missing) and its -wal / -shm, readable by their owner only."""
    if path.parent.is_dir():
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if stat.S_IMODE(file.stat().st_mode) & 0o077:
                file.chmod(0o600)
        except FileNotFoundError:
            pass


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def with_password(url: str, password: str) -> str:
    """The URL with ``password`` in it (replacing any there): the inverse of ``without_password``."""
    parts = urlsplit(url)
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}").geturl()


def without_password(url: str) -> tuple[str, str]:
    """(the URL without its password, the password): to keep the password apart, encrypted."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, ""
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"{parts.username or ''}@{host}").geturl(), unquote(parts.password)


def bind(db: peewee.Database) -> peewee.Database:
    database_proxy.initialize(db)
    return db


def is_postgres(db: peewee.Database) -> bool:
    return isinstance(db, peewee.PostgresqlDatabase)


@contextlib.contextmanager
def transaction(db: peewee.Database | None = None) -> Iterator[None]:
    """One atomic unit of work; on any exception nothing of it is kept. Translates peewee's errors."""
    db = db or database_proxy
    try:
        with db.atomic():
            yield
    except peewee.IntegrityError as exc:
        raise ConflictError(f"the change conflicts with the stored state ({first_line(exc)}); "
                            "reload the object and try again", code="Conflict") from exc
    except peewee.OperationalError as exc:
        raise TransientError(f"the database did not accept the change ({first_line(exc)}); retry") from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(db: peewee.Database) -> None:
    try:
        db.connect(reuse_if_open=True)
    except peewee.OperationalError as exc:
        raise TransientError(f"the database cannot be reached ({first_line(exc)}): check that it runs "
                             "and that database_url is right") from exc


class SecretBox:
    """Encrypts and decrypts the secrets the ZVM must store (credentials, private keys)."""

    KEY_FILE = "secret.key"

    def __init__(self, key: bytes):
        self._fernet = Fernet(key)

    @classmethod
    def in_dir(cls, data_dir: str | os.PathLike) -> SecretBox:
        """The data directory's key, created (0600, owner only) on first use."""
        path = Path(data_dir) / cls.KEY_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                raise ConfigError(f"{path} is readable by other users (mode {mode:o}): run "
                                  f"'chmod 600 {path}'") from None
            return cls(path.read_bytes().strip())
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken as exc:
            raise CorruptionError(
                "a stored secret cannot be decrypted with this data directory's key: the database and "
                "secret.key do not belong together; restore the matching secret.key, or enter the "
                "credentials again") from exc
