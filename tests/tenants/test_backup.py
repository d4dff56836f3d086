"""Backups and restores of tenant databases (modules/tenants/backup.py), for real.

SQLite tests run always. PostgreSQL tests (`services`) dump a seeded database of the main
server (`TEST_DATABASE_URL`) and restore it onto a second, throwaway cluster
(`second_postgres`, tests/support/pgcluster.py): two independent servers, as in a move.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from obstore.store import LocalStore

from tenantry.core.storage import Storage
from tenantry.modules.tenants.backup import (
    BackupError,
    Dump,
    DumpInvalid,
    TargetNotFresh,
    backup_database,
    checksum_tables,
    database_size_bytes,
    load_backup,
    postgres_database_sizes,
    restore_database,
    store_backup,
)
from tests.conftest import TEST_DATABASE_URL
from tests.support import pgcluster
from tests.support.pgcluster import PgCluster, running_cluster

TABLES = ["projects", "tasks"]


def postgres_servers(test: Any) -> Any:
    """A test on the main PostgreSQL server (and the second cluster): `make test-services`."""
    reason = "pg_dump/pg_restore of PostgreSQL tenant databases (no MariaDB backups yet)"
    return pytest.mark.services(pytest.mark.postgresql_only(reason)(test))


SQLITE_SCHEMA = """
CREATE TABLE projects (id TEXT PRIMARY KEY, name TEXT NOT NULL, budget REAL, created_at TEXT,
                       logo BLOB, deleted_at TEXT);
CREATE TABLE tasks (id INTEGER PRIMARY KEY, project_id TEXT REFERENCES projects(id),
                    title TEXT, done INTEGER, note TEXT);
"""

PG_SCHEMA = """
CREATE TABLE projects (id uuid PRIMARY KEY, name text NOT NULL, budget numeric(12, 2),
                       ratio double precision, created_at timestamptz NOT NULL, meta jsonb,
                       logo bytea, deleted_at timestamptz);
CREATE TABLE tasks (id bigserial PRIMARY KEY, project_id uuid REFERENCES projects(id),
                    title text, done boolean, due date, note text);
CREATE INDEX tasks_project ON tasks (project_id);
"""

PG_SEED = """
INSERT INTO projects (id, name, budget, ratio, created_at, meta, logo)
SELECT gen_random_uuid(), 'project ' || i, i * 10.25, i / 7.0,
       '2026-01-01 12:00:00+01'::timestamptz + i * interval '1 hour',
       jsonb_build_object('n', i, 'tags', jsonb_build_array('a', 'ü')), decode(md5(i::text), 'hex')
FROM generate_series(1, 300) AS i;
INSERT INTO tasks (project_id, title, done, due, note)
SELECT p.id, 'task ' || g, g % 2 = 0, date '2026-02-01' + g, repeat('x', g % 50)
FROM projects p, generate_series(1, 5) AS g;
"""


# --- SQLite ------------------------------------------------------------------------------


def seed_sqlite(path: Path, projects: int = 200) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SQLITE_SCHEMA)
        for i in range(projects):
            project = str(uuid.uuid4())
            db.execute(
                "INSERT INTO projects VALUES (?, ?, ?, ?, ?, NULL)",
                (project, f"project {i}", i * 1.5, f"2026-01-{i % 28 + 1:02d}", bytes([i % 256])),
            )
            db.executemany(
                "INSERT INTO tasks (project_id, title, done, note) VALUES (?, ?, ?, ?)",
                [(project, f"task {i}.{n}", n % 2, "é" * n) for n in range(5)],
            )
    sqlite3.connect(path).close()


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def test_a_sqlite_database_restored_from_its_backup_has_every_row(tmp_path: Path) -> None:
    source = tmp_path / "tenant.db"
    seed_sqlite(source)
    dump = await backup_database(sqlite_url(source), directory=tmp_path / "dumps")
    assert dump.dialect == "sqlite"
    assert dump.path.stat().st_mode & 0o777 == 0o600  # a whole tenant's data: private
    assert dump.size > 0
    assert len(dump.sha256) == 64
    target = tmp_path / "restored" / "tenant.db"
    await restore_database(dump, sqlite_url(target))

    before = await checksum_tables(sqlite_url(source), TABLES)
    after = await checksum_tables(sqlite_url(target), TABLES)
    assert before == after
    assert before["projects"].rows == 200
    assert before["tasks"].rows == 1000


async def test_a_checksum_sees_a_changed_value_and_not_the_row_order(tmp_path: Path) -> None:
    rows = [(str(uuid.uuid4()), f"p{i}", float(i), None, None, None) for i in range(50)]
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    for path, ordered in ((first, rows), (second, list(reversed(rows)))):
        with sqlite3.connect(path) as db:
            db.executescript(SQLITE_SCHEMA)
            db.executemany("INSERT INTO projects VALUES (?, ?, ?, ?, ?, ?)", ordered)
        sqlite3.connect(path).close()
    a = await checksum_tables(sqlite_url(first), ["projects"])
    assert a == await checksum_tables(sqlite_url(second), ["projects"])

    with sqlite3.connect(second) as db:  # one column of one row
        db.execute("UPDATE projects SET budget = budget + 0.5 WHERE name = 'p7'")
    sqlite3.connect(second).close()
    b = await checksum_tables(sqlite_url(second), ["projects"])
    assert b["projects"].rows == a["projects"].rows
    assert b["projects"].checksum != a["projects"].checksum


async def test_a_bad_or_absent_sqlite_dump_is_refused_and_the_target_is_not_made(
    tmp_path: Path,
) -> None:
    target = tmp_path / "restored.db"
    with pytest.raises(DumpInvalid, match="no dump"):
        await restore_database(tmp_path / "absent.sqlite", sqlite_url(target))

    source = tmp_path / "tenant.db"
    seed_sqlite(source)
    dump = await backup_database(sqlite_url(source), directory=tmp_path)
    data = bytearray(dump.path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = b"\xff" * 4096  # pages overwritten
    dump.path.write_bytes(bytes(data))
    with pytest.raises(DumpInvalid, match="not a sound SQLite database"):
        await restore_database(dump, sqlite_url(target))
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if "restoring" in p.name] == []

    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all")
    with pytest.raises(DumpInvalid, match="neither a pg_dump archive nor a SQLite"):
        await restore_database(garbage, sqlite_url(target))
    assert not target.exists()


async def test_a_restore_refuses_a_target_that_exists(tmp_path: Path) -> None:
    source, live = tmp_path / "tenant.db", tmp_path / "live.db"
    seed_sqlite(source)
    seed_sqlite(live, projects=3)
    dump = await backup_database(sqlite_url(source), directory=tmp_path)
    before = await checksum_tables(sqlite_url(live), TABLES)
    with pytest.raises(TargetNotFresh):
        await restore_database(dump, sqlite_url(live))
    assert await checksum_tables(sqlite_url(live), TABLES) == before


async def test_a_sqlite_restore_past_its_timeout_never_appears(tmp_path: Path) -> None:
    source = tmp_path / "tenant.db"
    seed_sqlite(source, projects=4000)
    dump = await backup_database(sqlite_url(source), directory=tmp_path / "dumps")
    target = tmp_path / "restored" / "tenant.db"
    failure: BackupError | None = None
    try:
        await restore_database(dump, sqlite_url(target), timeout_seconds=0.0001)
    except BackupError as error:
        failure = error
    if failure is None:  # the copy won the race to its publication (a loaded machine)
        assert (await checksum_tables(sqlite_url(target), TABLES))["tasks"].rows == 20_000
        return
    assert "timed out" in str(failure)

    # The abandoned thread, if it started at all (a job still queued in the executor is
    # cancelled), goes on — check, directory, copy into a hidden file — then sees it was
    # abandoned and removes its file instead of publishing it.
    def leftovers() -> list[str]:
        return [p.name for p in target.parent.iterdir()] if target.parent.exists() else []

    for _ in range(200):
        await asyncio.sleep(0.05)
        if target.parent.exists() and not leftovers():
            break
    await asyncio.sleep(1.0)
    assert not target.exists()
    assert leftovers() == []
    await restore_database(dump, sqlite_url(target))  # the path is still fresh
    assert (await checksum_tables(sqlite_url(target), TABLES))["tasks"].rows == 20_000


def _pair_writer(path: Path, stop: threading.Event, written: list[int]) -> None:
    """Insert a project and its task in one transaction, again and again."""
    with sqlite3.connect(path, timeout=30, isolation_level=None) as db:
        while not stop.is_set():
            project = str(uuid.uuid4())
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO projects VALUES (?, 'written', 0, NULL, NULL, NULL)", (project,)
            )
            db.execute("INSERT INTO tasks (project_id, title) VALUES (?, 'written')", (project,))
            db.execute("COMMIT")
            written[0] += 1
    sqlite3.connect(path).close()


async def test_a_sqlite_backup_taken_during_writes_is_one_consistent_moment(
    tmp_path: Path,
) -> None:
    source = tmp_path / "tenant.db"
    seed_sqlite(source, projects=4000)  # a few MB: the copy takes a while
    stop, written = threading.Event(), [0]
    writer = threading.Thread(target=_pair_writer, args=(source, stop, written))
    writer.start()
    try:
        while written[0] < 20:
            await asyncio.sleep(0.01)
        at_start = written[0]
        dump = await backup_database(sqlite_url(source), directory=tmp_path)
        at_end = written[0]
        while written[0] < at_end + 20:  # the writer was never blocked for good
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        writer.join(10)
    target = tmp_path / "restored.db"
    await restore_database(dump, sqlite_url(target))
    with sqlite3.connect(target) as db:
        projects = db.execute("SELECT count(*) FROM projects WHERE name = 'written'").fetchone()
        tasks = db.execute("SELECT count(*) FROM tasks WHERE title = 'written'").fetchone()
    sqlite3.connect(target).close()
    assert projects == tasks  # every pair whole: no transaction cut in half
    assert at_start <= projects[0] <= at_end


async def test_the_size_of_a_sqlite_database_counts_its_file_and_log(tmp_path: Path) -> None:
    source = tmp_path / "tenant.db"
    seed_sqlite(source, projects=10)
    small = await database_size_bytes(sqlite_url(source))
    seed_more = sqlite3.connect(source)
    seed_more.execute("INSERT INTO tasks (title, note) VALUES ('big', ?)", ("y" * 500_000,))
    seed_more.commit()
    seed_more.close()
    assert small >= 4096
    assert await database_size_bytes(sqlite_url(source)) >= small + 500_000
    with pytest.raises(BackupError, match="no SQLite database"):
        await database_size_bytes(sqlite_url(tmp_path / "absent.db"))


# --- storage -----------------------------------------------------------------------------


async def test_a_stored_backup_comes_back_byte_for_byte_or_not_at_all(tmp_path: Path) -> None:
    storage = Storage(LocalStore(tmp_path / "objects", mkdir=True))
    source = tmp_path / "tenant.db"
    seed_sqlite(source, projects=20)
    dump = await backup_database(sqlite_url(source), directory=tmp_path)
    org = uuid.uuid4()
    stored = await store_backup(storage, dump, organization_id=org)
    assert stored.key.startswith(f"orgs/{org}/backups/")
    assert stored.key.endswith(".sqlite")
    assert (stored.size, stored.sha256) == (dump.size, dump.sha256)

    loaded = await load_backup(
        storage, stored.key, expected_sha256=stored.sha256, directory=tmp_path / "in"
    )
    assert (loaded.dialect, loaded.size, loaded.sha256) == ("sqlite", dump.size, dump.sha256)
    assert loaded.path.read_bytes() == dump.path.read_bytes()

    with pytest.raises(DumpInvalid, match="does not match"):
        await load_backup(storage, stored.key, expected_sha256="0" * 64, directory=tmp_path)
    with pytest.raises(DumpInvalid, match="no stored backup"):
        await load_backup(storage, f"orgs/{org}/backups/absent.sqlite", directory=tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".restore"] == []


# --- PostgreSQL on two servers ----------------------------------------------------------------


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class Server:
    """Creates uniquely named databases on one server and drops them afterwards."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    async def create(self) -> str:
        name = f"tenantops_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(_dsn(self.admin_url))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        self.created.append(name)
        return self.url_for(name)

    def url_for(self, name: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + f"/{name}"

    async def drop_all(self) -> None:
        admin = await asyncpg.connect(_dsn(self.admin_url))
        try:
            for name in self.created:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def main_server() -> AsyncIterator[Server]:
    server = Server(TEST_DATABASE_URL)
    yield server
    await server.drop_all()


@pytest.fixture
async def other_server(second_postgres: PgCluster) -> AsyncIterator[Server]:
    server = Server(second_postgres.url("postgres"))
    yield server
    await server.drop_all()


async def seeded_postgres(server: Server) -> str:
    url = await server.create()
    connection = await asyncpg.connect(_dsn(url))
    try:
        await connection.execute(PG_SCHEMA)
        await connection.execute(PG_SEED)
    finally:
        await connection.close()
    return url


async def table_count(url: str) -> int:
    connection = await asyncpg.connect(_dsn(url))
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
    finally:
        await connection.close()
    return count


@pytest.fixture
def dumps(tmp_path: Path) -> Path:
    return tmp_path / "dumps"


@postgres_servers
async def test_a_postgres_tenant_moves_to_another_server_with_every_row(
    main_server: Server, other_server: Server, second_postgres: PgCluster, dumps: Path
) -> None:
    source = await seeded_postgres(main_server)
    dump = await backup_database(source, directory=dumps)
    assert dump.dialect == "postgresql"
    assert dump.path.stat().st_mode & 0o777 == 0o600
    assert dump.path.read_bytes().startswith(b"PGDMP")
    target = await other_server.create()
    assert target.startswith(f"postgresql+asyncpg://postgres@127.0.0.1:{second_postgres.port}/")
    await restore_database(dump, target)

    before = await checksum_tables(source, TABLES)
    after = await checksum_tables(target, TABLES)
    assert before == after
    assert (before["projects"].rows, before["tasks"].rows) == (300, 1500)
    # The restored copy is a working database: its sequence continues after the rows.
    connection = await asyncpg.connect(_dsn(target))
    try:
        new_id = await connection.fetchval(
            "INSERT INTO tasks (title) VALUES ('after the move') RETURNING id"
        )
    finally:
        await connection.close()
    assert new_id == 1501


@postgres_servers
async def test_a_postgres_checksum_sees_one_changed_value(main_server: Server) -> None:
    url = await seeded_postgres(main_server)
    before = await checksum_tables(url, TABLES)
    connection = await asyncpg.connect(_dsn(url))
    try:
        await connection.execute(
            "UPDATE projects SET meta = meta || '{\"n\": -1}' WHERE name = 'project 42'"
        )
    finally:
        await connection.close()
    after = await checksum_tables(url, TABLES)
    assert after["tasks"] == before["tasks"]
    assert after["projects"].rows == before["projects"].rows
    assert after["projects"].checksum != before["projects"].checksum
    with pytest.raises(BackupError, match="no table absent_table"):
        await checksum_tables(url, ["absent_table"])
    with pytest.raises(BackupError, match="not a plain table name"):
        await checksum_tables(url, ['projects"; DROP TABLE tasks; --'])


@postgres_servers
async def test_a_corrupted_or_absent_postgres_dump_leaves_the_target_untouched(
    main_server: Server, other_server: Server, dumps: Path
) -> None:
    source = await seeded_postgres(main_server)
    dump = await backup_database(source, directory=dumps)
    target = await other_server.create()

    with pytest.raises(DumpInvalid, match="no dump"):
        await restore_database(dumps / "absent.pgdump", target)

    header_broken = dumps / "header.pgdump"
    data = dump.path.read_bytes()
    header_broken.write_bytes(data[:5] + b"\x00" * 64 + data[69:])
    with pytest.raises(DumpInvalid, match="not a readable pg_dump archive"):
        await restore_database(header_broken, target)

    truncated = dumps / "truncated.pgdump"
    truncated.write_bytes(data[: int(len(data) * 0.8)])  # the table of contents is intact
    with pytest.raises(BackupError, match=r"pg_restore on .* failed"):
        await restore_database(truncated, target)
    assert await table_count(target) == 0  # one transaction: nothing of it stayed

    sqlite_dump = dumps / "other.sqlite"
    with sqlite3.connect(sqlite_dump) as db:
        db.execute("CREATE TABLE t (x)")
    sqlite3.connect(sqlite_dump).close()
    with pytest.raises(DumpInvalid, match="is a sqlite dump"):
        await restore_database(sqlite_dump, target)
    assert await table_count(target) == 0

    await restore_database(dump, target)  # the target is still fresh: the real dump goes in
    assert await checksum_tables(target, TABLES) == await checksum_tables(source, TABLES)


@postgres_servers
async def test_a_postgres_restore_refuses_a_database_with_tables(
    main_server: Server, dumps: Path
) -> None:
    source = await seeded_postgres(main_server)
    live = await seeded_postgres(main_server)
    dump = await backup_database(source, directory=dumps)
    before = await checksum_tables(live, TABLES)
    with pytest.raises(TargetNotFresh, match="already holds tables"):
        await restore_database(dump, live)
    assert await checksum_tables(live, TABLES) == before


@postgres_servers
async def test_a_postgres_backup_during_writes_restores_one_consistent_moment(
    main_server: Server, other_server: Server, dumps: Path
) -> None:
    source = await seeded_postgres(main_server)
    written = 0
    stop = asyncio.Event()

    async def write_pairs() -> None:
        nonlocal written
        connection = await asyncpg.connect(_dsn(source))
        try:
            while not stop.is_set():
                async with connection.transaction():
                    project = await connection.fetchval(
                        "INSERT INTO projects (id, name, created_at) "
                        "VALUES (gen_random_uuid(), 'written', now()) RETURNING id"
                    )
                    await connection.execute(
                        "INSERT INTO tasks (project_id, title) VALUES ($1, 'written')", project
                    )
                written += 1
        finally:
            await connection.close()

    writer = asyncio.create_task(write_pairs())
    try:
        while written < 20:
            await asyncio.sleep(0.01)
        at_start = written
        dump = await backup_database(source, directory=dumps)
        at_end = written
    finally:
        stop.set()
        await writer
    assert at_end > at_start  # the writer kept going while pg_dump ran

    target = await other_server.create()
    await restore_database(dump, target)
    connection = await asyncpg.connect(_dsn(target))
    try:
        projects = await connection.fetchval("SELECT count(*) FROM projects WHERE name='written'")
        tasks = await connection.fetchval("SELECT count(*) FROM tasks WHERE title = 'written'")
    finally:
        await connection.close()
    assert projects == tasks  # every pair whole
    assert at_start <= projects <= at_end


@postgres_servers
async def test_postgres_tool_errors_are_clear_and_carry_no_password(
    main_server: Server, dumps: Path
) -> None:
    secret = "s3cret-Pa:ss\\word"
    server = TEST_DATABASE_URL.rsplit("/", 1)[0]
    base = server.replace("postgres@", "postgres:s3cret-Pa%3Ass%5Cword@")
    with pytest.raises(BackupError) as raised:
        await backup_database(f"{base}/no_such_database_{uuid.uuid4().hex[:6]}", directory=dumps)
    message = str(raised.value)
    assert "pg_dump on 127.0.0.1:5432/no_such_database_" in message
    assert "does not exist" in message
    assert secret not in message
    assert "s3cret" not in message
    assert not dumps.exists() or list(dumps.iterdir()) == []  # no half-written dump left

    source = await seeded_postgres(main_server)
    with pytest.raises(BackupError, match="timed out"):
        await backup_database(source, directory=dumps, timeout_seconds=0.001)
    assert list(dumps.iterdir()) == []


@postgres_servers
async def test_stray_libpq_variables_cannot_redirect_a_dump(
    main_server: Server, dumps: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = await seeded_postgres(main_server)
    monkeypatch.setenv("PGHOSTADDR", "192.0.2.1")  # TEST-NET: nothing answers there
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=1")
    monkeypatch.setenv("PGSERVICE", "no_such_service")
    dump = await backup_database(source, directory=dumps, timeout_seconds=60)
    target = await main_server.create()
    await restore_database(dump, target, timeout_seconds=60)
    assert await checksum_tables(target, TABLES) == await checksum_tables(source, TABLES)


@postgres_servers
async def test_the_size_of_a_postgres_database_is_its_bytes_on_disk(main_server: Server) -> None:
    url = await main_server.create()
    empty = await database_size_bytes(url)
    connection = await asyncpg.connect(_dsn(url))
    try:
        await connection.execute(
            "CREATE TABLE filler AS SELECT repeat('z', 1000) AS t FROM generate_series(1, 5000)"
        )
        expected = await connection.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await connection.close()
    assert empty > 1_000_000  # a database starts with its catalog
    # The size moves a little on its own (free-space and visibility maps appear later).
    size = await database_size_bytes(url)
    assert expected >= empty + 5_000_000
    assert abs(size - expected) < 1_000_000

    other = await main_server.create()
    name, other_name = url.rsplit("/", 1)[1], other.rsplit("/", 1)[1]
    sizes = await postgres_database_sizes(TEST_DATABASE_URL, [name, other_name, "absent_db"])
    assert sizes.keys() == {name, other_name}
    assert abs(sizes[name] - expected) < 1_000_000
    assert abs(sizes[other_name] - empty) < 1_000_000


@postgres_servers
async def test_a_dump_stored_and_loaded_restores_on_the_other_server(
    main_server: Server, other_server: Server, dumps: Path, tmp_path: Path
) -> None:
    storage = Storage(LocalStore(tmp_path / "objects", mkdir=True))
    source = await seeded_postgres(main_server)
    dump = await backup_database(source, directory=dumps)
    stored = await store_backup(storage, dump, organization_id=uuid.uuid4())
    dump.discard()
    loaded: Dump = await load_backup(
        storage, stored.key, expected_sha256=stored.sha256, directory=dumps
    )
    assert loaded.dialect == "postgresql"
    target = await other_server.create()
    await restore_database(loaded, target)
    assert await checksum_tables(target, TABLES) == await checksum_tables(source, TABLES)


def test_the_second_cluster_is_stopped_and_removed_even_when_a_test_fails() -> None:
    seen: list[PgCluster] = []

    def failing_test() -> None:
        with running_cluster() as cluster:
            seen.append(cluster)
            with socket.create_connection(("127.0.0.1", cluster.port), timeout=1):
                pass  # it listens on the loopback
            raise RuntimeError("a failing test")

    with pytest.raises(RuntimeError, match="a failing test"):
        failing_test()
    (cluster,) = seen
    assert 0 < cluster.started_in_seconds < 30
    assert not cluster.root.exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", cluster.port), 1):
        pass


def test_without_initdb_the_cluster_tests_skip_saying_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgcluster, "find_tool", lambda _name: None)
    with pytest.raises(pytest.skip.Exception, match="initdb/pg_ctl not found"), running_cluster():
        pass
