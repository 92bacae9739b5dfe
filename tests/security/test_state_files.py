"""Issue 13 point 6: the data directory is 0700 and the database 0600 (also when an older ZVM left them
open), and secrets come from files or the environment, never needing the command line."""

from __future__ import annotations

import stat

import pytest

from tests.security.conftest import ADMIN_PASSWORD
from zvm.config import load_config
from zvm.errors import ConfigError
from zvm.service import Zvm


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_data_directory_left_open_is_closed_at_start(tmp_path):
    data = tmp_path / "zvm"
    data.mkdir(mode=0o755)
    (data / "zvm.db").touch(mode=0o644)
    data.chmod(0o755)
    (data / "zvm.db").chmod(0o644)
    zvm = Zvm(load_config(env={}, data_dir=str(data), admin_password=ADMIN_PASSWORD)).open()
    zvm.stop()
    assert mode(data) == 0o700
    assert mode(data / "zvm.db") == 0o600
    assert mode(data / "secret.key") == 0o600
    assert b"Adm1n-pass" not in (data / "zvm.db").read_bytes()


def test_a_new_data_directory_is_private(tmp_path):
    data = tmp_path / "new" / "zvm"
    zvm = Zvm(load_config(env={}, data_dir=str(data), admin_password=ADMIN_PASSWORD)).open()
    zvm.stop()
    assert mode(data) == 0o700 and mode(data / "zvm.db") == 0o600


def test_secrets_are_read_from_their_files(tmp_path):
    (tmp_path / "pw").write_text("From-file-pass\n")
    (tmp_path / "db").write_text("postgresql://zvm:S3cret@db.example/zvm\n")
    config = load_config(env={"ZVM_DATABASE_URL_FILE": str(tmp_path / "db")}, data_dir=str(tmp_path),
                         admin_password_file=str(tmp_path / "pw"))
    assert config.admin_password == "From-file-pass"
    assert config.database_url == "postgresql://zvm:S3cret@db.example/zvm"
    assert "S3cret" not in repr(config) and "From-file-pass" not in repr(config)
    assert "postgresql://zvm:***@db.example/zvm" in repr(config)


@pytest.mark.parametrize("content,message", [(None, "cannot read it"), ("", "is empty")])
def test_a_missing_or_empty_secret_file_is_refused_by_name(tmp_path, content, message):
    path = tmp_path / "pw"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=f"admin_password_file = .*{message}"):
        load_config(env={}, data_dir=str(tmp_path), admin_password_file=str(path))


def test_the_environment_gives_secrets_too(tmp_path):
    config = load_config(env={"ZVM_ADMIN_PASSWORD": "Env-pass-123"}, data_dir=str(tmp_path))
    assert config.admin_password == "Env-pass-123"
