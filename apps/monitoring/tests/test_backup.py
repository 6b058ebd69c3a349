"""deploy/backup: pg_dump a real database and restore it into a scratch database with pg_restore."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest
from django.db import connection

from apps.monitoring.events import event_record
from tradebaas.testing import BASE_DIR
from tradebaas.testing import test_database_url as database_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _run(argv, **env):
    import os

    return subprocess.run(
        argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.skipif(not shutil.which("pg_dump"), reason="pg_dump not installed")
def test_backup_then_restore_into_a_scratch_database(tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("backups are for PostgreSQL")
    event_record(kind="backup_probe", message="must survive the round trip", run_id=77)
    source = database_url()
    backup = _run(
        [str(BASE_DIR / "deploy/backup/backup.sh")],
        DATABASE_URL=source,
        BACKUP_DIR=str(tmp_path),
    )
    assert backup.returncode == 0, backup.stderr
    dumps = list(tmp_path.glob("tradebaas-*.dump"))
    assert len(dumps) == 1 and (tmp_path / f"{dumps[0].name}.sha256").exists()

    scratch = f"tradebaas_restore_{uuid.uuid4().hex[:8]}"
    target = source.rsplit("/", 1)[0] + "/" + scratch
    try:
        restore = _run(
            [str(BASE_DIR / "deploy/backup/restore.sh"), str(dumps[0]), target, "--create"]
        )
        assert restore.returncode == 0, restore.stderr
        check = _run(
            [
                "psql",
                f"--dbname={target}",
                "-tAc",
                "SELECT message FROM monitoring_event WHERE kind = 'backup_probe' AND run_id = 77",
            ]
        )
        assert check.stdout.strip() == "must survive the round trip", check.stderr
        migrations = _run(
            ["psql", f"--dbname={target}", "-tAc", "SELECT count(*) FROM django_migrations"]
        )
        assert int(migrations.stdout.strip()) > 10
    finally:
        admin = source.rsplit("/", 1)[0] + "/postgres"
        _run(["psql", f"--dbname={admin}", "-qc", f'DROP DATABASE IF EXISTS "{scratch}"'])


@pytest.mark.skipif(not shutil.which("pg_dump"), reason="pg_dump not installed")
def test_corrupted_backup_is_refused(tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("backups are for PostgreSQL")
    backup = _run(
        [str(BASE_DIR / "deploy/backup/backup.sh")],
        DATABASE_URL=database_url(),
        BACKUP_DIR=str(tmp_path),
    )
    assert backup.returncode == 0, backup.stderr
    dump = next(tmp_path.glob("tradebaas-*.dump"))
    with dump.open("r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00" * 64)
    restore = _run(
        [str(BASE_DIR / "deploy/backup/restore.sh"), str(dump), database_url() + "_never"]
    )
    assert restore.returncode != 0
    assert "checksum mismatch" in restore.stderr
