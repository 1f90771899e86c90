"""The job store's schema migrations (worker/migrate.py, worker/migrations), on SQLite and the
real PostgreSQL: they make exactly the models' schema, run once however many processes start
at the same moment, and refuse, with what to do, a job store made before there were any."""

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from tests.worker.store.helpers import progress
from worker import migrate
from worker.store import events, jobs, series
from worker.store.db import get_engine, session_scope
from worker.store.models import Base

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"jobs", "sweeps", "metric_points", "job_events", "api_keys", migrate.VERSION_TABLE}
TABLES |= {"worker_slots", "webhooks", "webhook_deliveries"}  # 0003_workers, 0004_webhooks

# Imports, says it is ready, waits for the others (a file each in a barrier folder), migrates.
RACER = """
import os, sys, time
from pathlib import Path
from worker.store.db import get_engine
url, barrier, racers = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
(barrier / str(os.getpid())).touch()
print("ready", flush=True)
deadline = time.monotonic() + 60
while len(list(barrier.iterdir())) < racers and time.monotonic() < deadline:
    time.sleep(0.005)
get_engine(url)
"""


def racer(url: str, barrier: Path, racers: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RACER, url, str(barrier), str(racers)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def versions(url: str) -> list[str]:
    with get_engine(url).connect() as connection:
        return list(connection.scalars(text(f"SELECT version_num FROM {migrate.VERSION_TABLE}")))


def new_job_with_events(url: str) -> str:
    """A job with a metric point and events (rows that reference it)."""
    with session_scope(url) as session:
        job = jobs.create_job(session, "classic", {"max_steps": 5})
        series.record_progress(job, progress(1, d_loss=0.5, g_loss=0.5, d_real=1.0, d_fake=-1.0))
        return job.id


def made_before_migrations(url: str) -> None:
    """A job store as this project made it before migrations: ``create_all``, no revision."""
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()


def gan(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``gan <args>`` (the real console script's code) on the job store at ``url``."""
    env = {**os.environ, "GAN_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrations_make_exactly_the_schema_of_the_models(database_url):
    with get_engine(database_url).connect() as connection:
        # Every table, column, type, index, unique constraint and foreign key (with its
        # ON DELETE) of the models: a model changed without a migration fails here.
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        assert migrate.current(connection) == migrate.head()
        assert set(inspect(connection).get_table_names()) == TABLES
    assert versions(database_url) == [migrate.head()]


def test_the_tables_go_to_the_schema_of_the_urls_search_path(postgres_url):
    url = make_url(postgres_url)
    schema = str(url.query["options"]).removeprefix("-csearch_path=")
    get_engine(postgres_url)
    admin = create_engine(url.difference_update_query(["options"]))
    try:
        with admin.connect() as connection:
            assert set(inspect(connection).get_table_names(schema=schema)) == TABLES
    finally:
        admin.dispose()


def test_upgrading_again_changes_nothing(database_url):
    engine = get_engine(database_url)
    with session_scope(database_url) as session:
        job_id = jobs.create_job(session, "classic", {"max_steps": 5}).id
    assert migrate.upgrade(engine) == migrate.head()  # it was there already
    assert migrate.upgrade(engine) == migrate.head()
    assert versions(database_url) == [migrate.head()]
    with session_scope(database_url) as session:
        assert jobs.get_job(session, job_id) is not None


def test_processes_starting_at_once_all_succeed(database_url, tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    racers = [racer(database_url, barrier, 3) for _ in range(3)]
    for process in racers:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    assert versions(database_url) == [migrate.head()]
    with get_engine(database_url).connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_an_upgrade_waits_for_the_one_holding_the_lock(database_url, tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    engine = get_engine(database_url)
    with migrate.locked(engine):
        process = racer(database_url, barrier, 1)
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"  # imported; now upgrading
        time.sleep(1.0)
        assert process.poll() is None, "it did not wait for the lock"
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr


def test_a_job_store_made_before_migrations_is_refused_with_what_to_do(database_url):
    made_before_migrations(database_url)
    with pytest.raises(migrate.SchemaError, match="before schema migrations") as refused:
        get_engine(database_url)
    assert "gan db stamp" in str(refused.value)
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:  # left as it was
            assert migrate.VERSION_TABLE not in inspect(connection).get_table_names()

        # Its tables are those of this version: `gan db stamp` adopts it.
        assert migrate.adopt(engine) == migrate.head()
    finally:
        engine.dispose()
    assert versions(database_url) == [migrate.head()]


def test_adopting_refuses_tables_that_differ_from_the_models(database_url):
    made_before_migrations(database_url)
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:  # an older version had no such index
            connection.execute(text("DROP INDEX ix_jobs_owner_created"))
        with pytest.raises(migrate.SchemaError, match="ix_jobs_owner_created"):
            migrate.adopt(engine)
        with engine.connect() as connection:
            assert migrate.current(connection) is None
    finally:
        engine.dispose()


def test_a_revision_this_code_does_not_know_is_refused(database_url):
    engine = get_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(migrate.SchemaError, match="9999, which this version"):
        migrate.upgrade(engine)


def test_gan_db_upgrade_and_current(database_url):
    result = gan(database_url, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert f"at revision {migrate.head()} (head), upgraded from empty" in result.stdout
    assert "already up to date" in gan(database_url, "db", "upgrade").stdout
    assert f"at revision {migrate.head()} (head)" in gan(database_url, "db", "current").stdout


def test_gan_db_upgrade_on_a_job_store_made_before_migrations(database_url):
    made_before_migrations(database_url)
    assert "made before migrations" in gan(database_url, "db", "current").stdout
    result = gan(database_url, "db", "upgrade")
    assert result.returncode == 1
    assert "before schema migrations" in result.stderr and "gan db stamp" in result.stderr
    assert "Traceback" not in result.stderr


def copy_of_the_migrations(tmp_path, monkeypatch, upgrade: str = "") -> Path:
    """Make ``worker.migrate`` use a copy of the migrations, plus, when given, a revision after
    head whose ``upgrade()`` has that body."""
    copy = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = migrate.head()
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", copy)
    if upgrade:
        (copy / "versions" / "9000_test.py").write_text(
            "import sqlalchemy as sa\nfrom alembic import op\n"
            f"revision = '9000'\ndown_revision = {before!r}\n"
            "branch_labels = depends_on = None\n"
            f"def upgrade():\n{textwrap.indent(textwrap.dedent(upgrade), '    ')}\n"
        )
    return copy


def test_a_migration_that_rebuilds_a_table_on_sqlite_keeps_the_rows_that_reference_it(
    tmp_path, monkeypatch
):
    # A batch migration copies the table, drops it and renames the copy: dropping `jobs` with
    # foreign keys on would delete every metric point and event (ON DELETE CASCADE).
    url = f"sqlite:///{tmp_path / 'gan.db'}"
    job_id = new_job_with_events(url)
    copy_of_the_migrations(
        tmp_path,
        monkeypatch,
        """
        with op.batch_alter_table("jobs", recreate="always") as batch:
            batch.add_column(sa.Column("priority", sa.Integer()))
        """,
    )
    migrate.upgrade(get_engine(url))
    assert versions(url) == ["9000"]
    with session_scope(url) as session:
        assert events.events_after(session, job_id, 0)
        assert series.metric_points(session, job_id)[0] == 1
    with get_engine(url).connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # on again


def test_a_migration_that_fails_leaves_nothing_half_done(database_url, tmp_path, monkeypatch):
    engine = get_engine(database_url)
    before = migrate.head()
    copy_of_the_migrations(
        tmp_path,
        monkeypatch,
        """
        op.create_table("half", sa.Column("id", sa.Integer(), primary_key=True))
        op.add_column("jobs", sa.Column("priority", sa.Integer()))
        raise RuntimeError("a migration that fails halfway")
        """,
    )
    with pytest.raises(RuntimeError, match="halfway"):
        migrate.upgrade(engine)
    assert versions(database_url) == [before]
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) == TABLES
        assert migrate.differences(connection) == []


def test_a_new_revision_follows_head_and_upgrades(tmp_path, monkeypatch):
    """``gan db revision``, on a copy of the migrations (the models match the job store, so its
    upgrade is empty: this checks the numbering, the chaining and the template)."""
    copy = copy_of_the_migrations(tmp_path, monkeypatch)
    engine = create_engine(f"sqlite:///{tmp_path / 'gan.db'}")
    try:
        before = migrate.head()
        number = f"{1 + len(list(migrate.script_directory().walk_revisions())):04d}"
        path = migrate.revision(engine, "add nothing")
        assert path == copy / "versions" / f"{number}_add_nothing.py"
        assert migrate.head() == number
        assert migrate.script_directory().get_revision(number).down_revision == before
        assert migrate.upgrade(engine) == before
        with engine.connect() as connection:
            assert migrate.current(connection) == number
    finally:
        engine.dispose()
