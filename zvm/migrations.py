"""Versioned schema migrations.

The ``schema_version`` table holds one row per version applied. A fresh database is created from the
current models and stamped with the latest version (the baseline). A database from an older ZVM gets the
migrations above its version, in order, each in its own transaction with its version row, so a failed
migration leaves the database at the previous version, untouched (SQLite and PostgreSQL both run DDL inside
transactions). A database newer than this ZVM is refused: downgrading is not supported.

To change the schema: change the models, then append ``Migration(N + 1, "what", function)`` where the
function brings a version-N database to the new shape (``playhouse.migrate.SchemaMigrator`` helps). A
shipped migration is never edited.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import peewee
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as run

from zvm import models
from zvm.db import is_postgres, transaction
from zvm.errors import ConfigError

BASELINE = 1
# Migrations lock out each other across processes (gunicorn workers starting together) with this key.
PG_ADVISORY_LOCK = 0x7A766D  # "zvm"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[peewee.Database, SchemaMigrator], None]


# Tables whose changes do not show in any cached API answer: no trigger.
UNTRACKED = {"schema_version", "revision", "session", "pairing_token", "login_failure"}


def install_revision_triggers(db: peewee.Database, all_models: Sequence[type[peewee.Model]]) -> None:
    """The revision row, and a trigger on every tracked table that bumps it on insert, update and delete.
    Idempotent. Triggers, not application code, so that no writer (API, task, inventory watcher) can forget."""
    if models.Revision._meta.table_name not in db.get_tables():
        return
    models.Revision.insert(id=1, value=0).on_conflict_ignore().execute()
    existing = set(db.get_tables())  # a migration may run before a later one creates its tables
    tables = [m._meta.table_name for m in all_models
              if m._meta.table_name not in UNTRACKED and m._meta.table_name in existing]
    if is_postgres(db):
        db.execute_sql(
            "CREATE OR REPLACE FUNCTION zvm_bump_revision() RETURNS trigger AS $$ BEGIN "
            "UPDATE revision SET value = value + 1 WHERE id = 1; RETURN NULL; END $$ LANGUAGE plpgsql")
        for table in tables:
            db.execute_sql(f'DROP TRIGGER IF EXISTS zvm_revision ON "{table}"')
            db.execute_sql(f'CREATE TRIGGER zvm_revision AFTER INSERT OR UPDATE OR DELETE ON "{table}" '
                           "FOR EACH STATEMENT EXECUTE FUNCTION zvm_bump_revision()")
        return
    for table in tables:
        for op in ("INSERT", "UPDATE", "DELETE"):
            db.execute_sql(f'CREATE TRIGGER IF NOT EXISTS "zvm_revision_{table}_{op.lower()}" AFTER {op} ON '
                           f'"{table}" BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END')


def _add_revision(db: peewee.Database, migrator: SchemaMigrator) -> None:
    db.create_tables([models.Revision])
    install_revision_triggers(db, models.ALL_MODELS)


def _missing(db: peewee.Database, table: str, column: str) -> bool:
    """The table has no such column yet (a migration step adds it only then, so a rerun changes nothing)."""
    return column not in {c.name for c in db.get_columns(table)}


def _recovery_operations(db: peewee.Database, migrator: SchemaMigrator) -> None:
    """Recovery operations: their table; the recovery VRA of a VPG, re-IP settings of its VMs and where each
    volume's replica is; VM moids unique per VPG instead of everywhere (a recovery site keeps the VMs of the
    VPGs it recovers, whose moids are the other vCenter's)."""
    ops = []
    if _missing(db, "vpg", "recovery_vra"):
        ops.append(migrator.add_column("vpg", "recovery_vra", models.Vpg.recovery_vra))
    if _missing(db, "vpg_vm", "nics"):
        ops.append(migrator.add_column("vpg_vm", "nics", models.VpgVm.nics))
    if _missing(db, "vpg_volume", "recovery_path"):
        ops.append(migrator.add_column("vpg_volume", "recovery_path", models.VpgVolume.recovery_path))
    indexes = {i.name: i for i in db.get_indexes("vpg_vm")}
    if "vpg_vm_vm_moid" in indexes and indexes["vpg_vm_vm_moid"].unique:
        ops.append(migrator.drop_index("vpg_vm", "vpg_vm_vm_moid"))
    if "vpg_vm_vpg_id_vm_moid" not in indexes:
        ops.append(migrator.add_index("vpg_vm", ("vpg_id", "vm_moid"), True))
    run(*ops)
    db.create_tables([models.RecoveryOperation])
    install_revision_triggers(db, models.ALL_MODELS)


def _users_and_roles(db: peewee.Database, migrator: SchemaMigrator) -> None:
    """Users can be disabled; events keep the client address; failed logins are counted (throttling)."""
    ops = []
    if _missing(db, "user", "disabled"):
        ops.append(migrator.add_column("user", "disabled", models.User.disabled))
    if _missing(db, "user", "updated_at"):
        ops.append(migrator.add_column("user", "updated_at", models.User.updated_at))
    if _missing(db, "event", "client"):
        ops.append(migrator.add_column("event", "client", models.Event.client))
    run(*ops)
    db.create_tables([models.LoginFailure])
    install_revision_triggers(db, models.ALL_MODELS)


def _vpg_samples(db: peewee.Database, migrator: SchemaMigrator) -> None:
    """The VPGs' monitoring history (zvm.monitoring.history)."""
    db.create_tables([models.VpgSample])
    install_revision_triggers(db, models.ALL_MODELS)


MIGRATIONS: list[Migration] = [
    Migration(2, "revision counter bumped by triggers (API response cache)", _add_revision),
    Migration(3, "recovery operations; VM moids unique per VPG", _recovery_operations),
    Migration(4, "users: disabled, roles enforced; event client address; login failures", _users_and_roles),
    Migration(5, "VPG monitoring history (statistics)", _vpg_samples),
]


def current_version(db: peewee.Database) -> int | None:
    if not db.table_exists(models.SchemaVersion._meta.table_name):
        return None
    got = models.SchemaVersion.select(peewee.fn.MAX(models.SchemaVersion.version)).scalar()
    return int(got) if got is not None else None


def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    return max([BASELINE, *(m.version for m in migrations)])


def _lock(db: peewee.Database):
    # SQLite transactions take the write lock at BEGIN (zvm.db); PostgreSQL needs an explicit lock.
    if is_postgres(db):
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (PG_ADVISORY_LOCK,))


def migrate(db: peewee.Database, migrations: Sequence[Migration] = MIGRATIONS,
            all_models: Sequence[type[peewee.Model]] = models.ALL_MODELS) -> int:
    """Bring the database to the latest schema version; returns it. Safe to run from several processes."""
    ordered = sorted(migrations, key=lambda m: m.version)
    versions = [m.version for m in ordered]
    if len(set(versions)) != len(versions) or (versions and versions[0] <= BASELINE):
        raise ConfigError(f"migration versions {versions} must be unique and above the baseline {BASELINE}")
    latest = latest_version(ordered)
    with transaction(db):
        _lock(db)
        version = current_version(db)
        if version is None:
            ours = {m._meta.table_name for m in all_models}
            if ours & set(db.get_tables()):
                raise ConfigError(
                    "the database holds ZVM tables but no schema_version: it was not created by a ZVM "
                    "release, or a migration was interrupted by hand; restore a backup or use an empty "
                    "database")
            db.create_tables(all_models)
            install_revision_triggers(db, all_models)
            models.SchemaVersion.create(version=latest, description="baseline")
            return latest
    if version > latest:
        raise ConfigError(f"the database is at schema version {version}, newer than this ZVM knows "
                          f"({latest}): run the newer ZVM, or restore a backup taken before the upgrade")
    migrator = SchemaMigrator.from_database(db)
    for migration in ordered:
        if migration.version <= version:
            continue
        with transaction(db):
            _lock(db)
            if (current_version(db) or 0) >= migration.version:
                continue  # another process applied it meanwhile
            migration.apply(db, migrator)
            models.SchemaVersion.create(version=migration.version, description=migration.description)
        version = migration.version
    return version
