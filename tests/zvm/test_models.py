"""The ZVM's state: schema migrations, password and secret handling, constraints; SQLite and PostgreSQL."""

from __future__ import annotations

import os
import stat

import peewee
import pytest
from playhouse.migrate import migrate as run_ops

from zvm import db as zdb
from zvm import models as m
from zvm.errors import ConfigError, ConflictError, CorruptionError
from zvm.migrations import BASELINE, Migration, current_version, latest_version, migrate


def test_fresh_database_is_created_at_the_latest_version_and_migrating_again_changes_nothing(database):
    latest = latest_version()
    assert current_version(database) == latest > BASELINE
    tables = set(database.get_tables())
    assert {mod._meta.table_name for mod in m.ALL_MODELS} <= tables
    assert migrate(database) == latest
    assert [r.version for r in m.SchemaVersion.select()] == [latest]


def test_a_version_1_database_is_upgraded(db_url):
    db = zdb.bind(zdb.open_database(db_url))
    zdb.connect(db)
    try:
        v1_models = [mod for mod in m.ALL_MODELS if mod not in (m.Revision, m.RecoveryOperation, m.VpgSample)]
        db.create_tables(v1_models)
        m.SchemaVersion.create(version=1, description="baseline")
        site = m.Site.create(name="from v1", is_local=True)
        assert migrate(db) == latest_version() == 5
        assert [r.version for r in m.SchemaVersion.select().order_by(m.SchemaVersion.version)] == [1, 2, 3, 4, 5]
        before = m.Revision.get_by_id(1).value
        m.Vpg.create(name="after upgrade", protected_site=site, recovery_site=site)
        assert m.Revision.get_by_id(1).value > before
    finally:
        db.close()
        if hasattr(db, "close_all"):
            db.close_all()


def test_a_version_2_database_gets_recovery_operations_and_vm_moids_unique_per_vpg(database):
    from playhouse.migrate import SchemaMigrator

    # back to what version 2 had: no operations table, no new columns, VM moids unique everywhere
    migrator = SchemaMigrator.from_database(database)
    database.drop_tables([m.RecoveryOperation])
    run_ops(migrator.drop_index("vpg_vm", "vpg_vm_vpg_id_vm_moid"),
            migrator.drop_column("vpg", "recovery_vra"), migrator.drop_column("vpg_vm", "nics"),
            migrator.drop_column("vpg_volume", "recovery_path"),
            migrator.add_index("vpg_vm", ("vm_moid",), True))
    m.SchemaVersion.delete().execute()
    m.SchemaVersion.create(version=2, description="v2")
    site = m.Site.create(name="local", is_local=True)
    peer = m.Site.create(name="peer")
    a = m.Vpg.create(name="a", protected_site=site, recovery_site=peer)
    database.execute_sql(f"INSERT INTO vpg_vm (vpg_id, vm_moid, name, boot_group) VALUES ({a.id}, 'vm-1', 'x', '')")
    assert migrate(database) == 5
    assert {"recovery_vra"} <= {c.name for c in database.get_columns("vpg")}
    b = m.Vpg.create(name="b", protected_site=peer, recovery_site=site)
    m.VpgVm.create(vpg=b, vm_moid="vm-1", name="the peer's vm-1")  # the same moid in the other vCenter
    with pytest.raises(ConflictError):
        with zdb.transaction():
            m.VpgVm.create(vpg=b, vm_moid="vm-1", name="twice in one VPG")
    m.RecoveryOperation.create(vpg=b.identifier, kind="FailoverTest")


def test_a_version_3_database_gets_user_roles_event_addresses_and_login_counts(database):
    from playhouse.migrate import SchemaMigrator

    migrator = SchemaMigrator.from_database(database)
    database.drop_tables([m.LoginFailure])
    run_ops(migrator.drop_column("user", "disabled"), migrator.drop_column("user", "updated_at"),
            migrator.drop_column("event", "client"))
    m.SchemaVersion.delete().execute()
    m.SchemaVersion.create(version=3, description="v3")
    database.execute_sql("INSERT INTO \"user\" (username, password_hash, role, created_at) VALUES ('old', 'h', 'admin', 1)")
    database.execute_sql("INSERT INTO event (identifier, kind, category, \"user\", description, entity_id, result, "
                         "detail, started_at) VALUES ('e1', 'Login', 'Session', 'old', '', '', 'Succeeded', '', 1)")
    assert migrate(database) == 5
    user = m.User.get(m.User.username == "old")
    assert (user.role, user.disabled, user.updated_at) == ("admin", False, None)
    assert m.Event.get(m.Event.identifier == "e1").client == ""
    m.LoginFailure.create(key="user:old", failures=1)
    assert "login_failure" in database.get_tables()


def test_a_version_4_database_gets_the_vpg_monitoring_history(database):
    database.drop_tables([m.VpgSample])
    m.SchemaVersion.delete().execute()
    m.SchemaVersion.create(version=4, description="v4")
    assert migrate(database) == 5
    m.VpgSample.create(vpg="v", resolution=5, bucket=100.0, rpo_max=3.0)
    with pytest.raises(ConflictError):  # one bucket per VPG, resolution and start
        with zdb.transaction():
            m.VpgSample.create(vpg="v", resolution=5, bucket=100.0)


def test_every_change_to_shown_state_bumps_the_revision_and_sessions_do_not(database):
    def rev():
        return m.Revision.get_by_id(1).value

    site = m.Site.create(name="local", is_local=True)
    r0 = rev()
    vpg = m.Vpg.create(name="a", protected_site=site, recovery_site=site)
    r1 = rev()
    m.Vpg.update(status="MeetingSLA").where(m.Vpg.id == vpg.id).execute()
    r2 = rev()
    m.Alert.create(code="x", entity="Vpg", entity_id=vpg.identifier, description="d")
    r3 = rev()
    vpg.delete_instance()
    r4 = rev()
    assert r0 < r1 < r2 < r3 < r4
    user = m.User.create(username="u", password_hash="x")
    r5 = rev()
    session = m.Session.create(token_hash="h", user=user)
    m.Session.update(last_used=1.0).where(m.Session.id == session.id).execute()
    assert rev() == r5


def test_migrations_apply_in_order_and_each_is_recorded(database):
    applied = []

    def add_note(db, migrator):
        applied.append(3)
        run_ops(migrator.add_column("vpg", "note", peewee.TextField(default="")))

    def fill_note(db, migrator):
        applied.append(4)
        db.execute_sql("UPDATE vpg SET note = 'migrated'")

    # given out of order on purpose; the database is at the latest real version
    top = latest_version()
    steps = [Migration(top + 2, "fill note", fill_note), Migration(top + 1, "add note", add_note),
             Migration(top, "already applied", lambda db, mig: applied.append("never"))]
    assert migrate(database, steps) == top + 2
    assert applied == [3, 4]
    assert [r.version for r in m.SchemaVersion.select().order_by(m.SchemaVersion.version)] == [top, top + 1, top + 2]
    assert "note" in [c.name for c in database.get_columns("vpg")]
    assert migrate(database, steps) == top + 2 and applied == [3, 4]


def test_a_failing_migration_leaves_the_previous_version_and_schema(database):
    def half_done(db, migrator):
        run_ops(migrator.add_column("vpg", "half", peewee.TextField(default="")))
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        migrate(database, [Migration(latest_version() + 1, "breaks half-way", half_done)])
    assert current_version(database) == latest_version()
    assert "half" not in [c.name for c in database.get_columns("vpg")]


def test_a_database_newer_than_the_code_is_refused(database):
    m.SchemaVersion.create(version=latest_version() + 5, description="from the future")
    with pytest.raises(ConfigError, match="newer than this ZVM"):
        migrate(database)


def test_tables_without_a_schema_version_are_refused(tmp_path):
    db = zdb.bind(zdb.open_database(zdb.default_url(tmp_path)))
    db.create_tables([m.Vpg, m.Site])
    with pytest.raises(ConfigError, match="no schema_version"):
        migrate(db)
    db.close()


def test_migration_versions_must_be_unique_and_above_the_baseline(database):
    noop = lambda db, migrator: None  # noqa: E731
    with pytest.raises(ConfigError):
        migrate(database, [Migration(3, "a", noop), Migration(3, "b", noop)])
    with pytest.raises(ConfigError):
        migrate(database, [Migration(BASELINE, "a", noop)])


def test_passwords_are_stored_as_scrypt_hashes(database):
    user = m.User(username="admin")
    user.set_password("s3cret-Pass")
    user.save()
    stored = m.User.get(m.User.username == "admin")
    assert "s3cret-Pass" not in stored.password_hash
    assert stored.password_hash.startswith("scrypt$")
    assert stored.check_password("s3cret-Pass")
    assert not stored.check_password("s3cret-pass")
    # the same password hashes differently for another user (salted)
    other = m.hash_password("s3cret-Pass")
    assert other != stored.password_hash and m.verify_password("s3cret-Pass", other)


def test_a_vm_is_in_a_vpg_once(database):
    # moids are per vCenter: the database keeps them unique per VPG; that a VM of this site is protected by
    # one VPG at most is checked when settings are committed (tests/zvm/test_api.py)
    site = m.Site.create(name="local", is_local=True)
    a = m.Vpg.create(name="a", protected_site=site, recovery_site=site)
    m.VpgVm.create(vpg=a, vm_moid="vm-1", name="web")
    with pytest.raises(ConflictError):
        with zdb.transaction(database):
            m.VpgVm.create(vpg=a, vm_moid="vm-1", name="web")
    assert m.VpgVm.select().count() == 1


def test_deleting_a_vpg_removes_its_vms_volumes_and_checkpoints(database):
    site = m.Site.create(name="local", is_local=True)
    vpg = m.Vpg.create(name="a", protected_site=site, recovery_site=site, boot_groups=[{"Name": "db"}])
    vm = m.VpgVm.create(vpg=vpg, vm_moid="vm-1", name="web")
    m.VpgVolume.create(vm=vm, disk_key=2000, file_name="[ds] web/web.vmdk", capacity=1 << 30)
    m.Checkpoint.create(vpg=vpg, tag="before upgrade")
    assert m.Vpg.get_by_id(vpg.id).boot_groups == [{"Name": "db"}]  # JSON round trip
    vpg.delete_instance()
    assert (m.VpgVm.select().count(), m.VpgVolume.select().count(), m.Checkpoint.select().count()) == (0, 0, 0)


def test_inventory_rows_are_unique_per_site_and_moid(database):
    a = m.Site.create(name="a", is_local=True)
    b = m.Site.create(name="b")
    m.InvVm.create(site=a, moid="vm-1", name="x", disks=[{"key": 2000, "capacity": 5 << 30}])
    m.InvVm.create(site=b, moid="vm-1", name="x")  # the peer's vCenter has its own moids
    with pytest.raises(ConflictError), zdb.transaction(database):
        m.InvVm.create(site=a, moid="vm-1", name="y")
    assert m.InvVm.get(m.InvVm.site == a).disks == [{"key": 2000, "capacity": 5 << 30}]


def test_secret_box_key_is_private_and_ciphertext_hides_the_secret(tmp_path):
    box = zdb.SecretBox.in_dir(tmp_path)
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = box.encrypt("vcenter-password")
    assert "vcenter-password" not in token
    assert zdb.SecretBox.in_dir(tmp_path).decrypt(token) == "vcenter-password"  # the same key is reused
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(CorruptionError, match="secret.key"):
        zdb.SecretBox.in_dir(other).decrypt(token)
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        zdb.SecretBox.in_dir(tmp_path)


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite://", "postgresql:///nohost"])
def test_unsupported_database_urls_say_what_to_use(url):
    with pytest.raises(ConfigError, match="sqlite|postgresql"):
        zdb.open_database(url)


def test_redact_hides_the_password():
    assert zdb.redact("postgresql://zvm:hunter2@db:5432/zvm") == "postgresql://zvm:***@db:5432/zvm"
