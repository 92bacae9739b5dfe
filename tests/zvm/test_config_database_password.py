"""database_password_encrypted: the PostgreSQL password kept out of database_url, encrypted with the data
directory's secret.key (what zvm-install writes), put back into the URL only when the database is opened."""

from __future__ import annotations

import pytest

from zvm.config import load_config
from zvm.db import SecretBox, with_password, without_password
from zvm.errors import CorruptionError


def test_the_password_comes_back_into_the_url_from_the_encrypted_key(tmp_path):
    url = "postgresql://zvm:p%40ss:w0rd@db.example:5432/zvm"
    bare, password = without_password(url)
    assert bare == "postgresql://zvm@db.example:5432/zvm" and password == "p@ss:w0rd"
    token = SecretBox.in_dir(tmp_path).encrypt(password)
    conf = tmp_path / "zvm.toml"
    conf.write_text(f'data_dir = "{tmp_path}"\ndatabase_url = "{bare}"\ndatabase_password_encrypted = "{token}"\n')
    config = load_config(conf, env={})
    assert config.database == with_password(bare, password)
    assert "p%40ss%3Aw0rd@" in config.database and "p@ss" not in repr(config)


def test_a_key_that_does_not_match_says_so(tmp_path):
    (tmp_path / "other").mkdir()
    token = SecretBox.in_dir(tmp_path / "other").encrypt("pw")
    config = load_config(None, env={}, data_dir=str(tmp_path), database_url="postgresql://zvm@h/zvm",
                         database_password_encrypted=token)
    with pytest.raises(CorruptionError, match="secret.key"):
        _ = config.database
