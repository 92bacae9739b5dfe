"""A wrong answer file installs nothing: the run exits 2 naming the answer-file key, and the staging tree
stays empty (no user, no file). The same checks as the wizard's: a missing key, a wrong type, an unknown
key, a vCenter that cannot be reached, a wrong password or fingerprint, a PostgreSQL that cannot be
reached or refuses the password."""

from __future__ import annotations

import pytest

from tests.installer.conftest import answers_toml
from tests.zvm.pg import PostgresServer, free_port


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer.start()
    yield server
    server.stop()


CASES = {
    "missing password": ({"vcenter": {"password": None}}, "vcenter.password", "missing"),
    "wrong type": ({"network": {"api_port": "9080"}}, "network.api_port", "is not of type 'integer'"),
    "unknown key": ({"network": {"api_prot": 9080}}, "network.api_prot", "unknown key"),
    "bad choice": ({"database": {"kind": "mysql"}}, "database.kind", "is not one of"),
    "unreachable vCenter": ({"vcenter": {"address": "https://127.0.0.1:{closed}/sdk"}}, "vcenter.address",
                            "cannot be reached"),
    "wrong vCenter password": ({"vcenter": {"password": "not-it"}}, "vcenter.password", "refused the login"),
    "wrong fingerprint": ({"vcenter": {"thumbprint": "ab" * 32}}, "vcenter.thumbprint", "not AB:AB"),
    "no fingerprint": ({"vcenter": {"thumbprint": None}}, "vcenter.thumbprint", "presents a certificate"),
    "same ports": ({"network": {"api_port": 19999, "peer_port": 19999}}, "network.peer_port", "already the"),
    "certificate missing": ({"tls": {"mode": "files", "certificate": "/nonexistent.pem", "key": "/nonexistent.key"}},
                            "tls.certificate", "no such file"),
    "unreachable PostgreSQL": ({"database": {"kind": "postgresql",
                                             "url": "postgresql://zvm:pw@127.0.0.1:{closed}/zvm"}},
                               "database.url", "refused or did not answer"),
    "short admin password": ({"admin": {"password": "short"}}, "admin.password", "at least 8"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_answer_file_names_the_key_and_installs_nothing(case, stage, https_vcenter, tmp_path):
    overrides, key, says = CASES[case]
    closed = free_port()
    overrides = {s: {k: (v.format(closed=closed) if isinstance(v, str) else v) for k, v in t.items()}
                 for s, t in overrides.items()}
    answers = tmp_path / "answers.toml"
    answers.write_text(answers_toml(https_vcenter, **overrides))
    out = stage.install("--answers", str(answers))
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"answer file key {key}:" in out.stderr and says in out.stderr, out.stderr
    assert "Nothing was installed" in out.stderr
    assert stage.changed() == []


def test_postgresql_that_refuses_the_password_is_named(stage, https_vcenter, postgres, tmp_path):
    url = postgres.new_database().replace(f":{postgres.password}@", ":not-the-password@")
    answers = tmp_path / "answers.yaml"  # YAML, the other answer-file format
    toml = answers_toml(https_vcenter, database={"kind": "postgresql", "url": url})
    import tomllib

    import yaml

    answers.write_text(yaml.safe_dump(tomllib.loads(toml)))
    out = stage.install("--answers", str(answers))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "answer file key database.url:" in out.stderr and "password authentication failed" in out.stderr
    assert "not-the-password" not in out.stderr + out.stdout
    assert stage.changed() == []


def test_a_step_that_fails_part_way_undoes_the_run(stage, https_vcenter, postgres, tmp_path):
    """A PostgreSQL user that may connect but not create tables passes the answer checks; the database step
    then fails, after the user, the directories, the certificate and the configuration were made: all of
    it is undone, and the message names the step and what to fix."""
    import psycopg2

    url = postgres.new_database()
    conn = psycopg2.connect(postgres.url())
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE ROLE reader LOGIN PASSWORD 'reader-pw'")  # PostgreSQL 15: no CREATE on public
    finally:
        conn.close()
    reader_url = url.replace(f"{postgres.user}:{postgres.password}@", "reader:reader-pw@")
    answers = tmp_path / "answers.toml"
    answers.write_text(answers_toml(https_vcenter, database={"kind": "postgresql", "url": reader_url}))
    out = stage.install("--answers", str(answers))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "[5/" in out.stdout and "undone:" in out.stdout
    assert "step 'prepare the database (migrations, site, vCenter credentials, admin)' failed" in out.stderr
    assert "may create tables" in out.stderr and "What this run changed was undone" in out.stderr
    assert "reader-pw" not in out.stdout + out.stderr
    # the tree holds nothing a ZVM would use: no user, no configuration, no data, no unit
    left = stage.changed()
    assert not any(p.startswith(("etc/zvm", "var/lib/zvm", "etc/systemd")) for p in left), left
    from installer import accounts

    assert accounts.lookup(stage.layout) is None
