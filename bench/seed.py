"""Seed a PostgreSQL or MariaDB database with large tenants, fast (COPY, not INSERT per row).

    uv run python -m bench.seed --create --tasks 200000 \\
        --database-url postgresql://postgres@127.0.0.1:5432/tenantry_bench
    uv run python -m bench.seed --create --tasks 200000 \\
        --database-url mariadb+asyncmy://root@127.0.0.1:3306/tenantry_plans

On MariaDB (a `mariadb+asyncmy://` or `mysql+asyncmy://` URL) rows go in as multi-row
`INSERT`s (asyncmy's `executemany`) and the tables are `ANALYZE`d afterwards.

`--create` creates the database (dropped first when it exists) and migrates it to head.
Each organization (a row on the `pro` plan, active) gets `--users` members (the first
is the owner; unusable password), `--projects`
projects and `--tasks` tasks spread over them, with realistic spreads: creation times
over the last year, every status and priority, a third unassigned, half without due date,
5 % soft-deleted. Rows are written with COPY in batches (`--batch`), as the migrating
(table-owning) user so row-level security does not apply. The generated ids are printed
as JSON for the tools that use the dataset (bench/plans.py, load tests).

Reusable: `seed_organization(connection, ...)` seeds one organization on an open asyncpg
connection (or any `Sink`).

The benchmark dataset of `make bench` (bench/run.py):

    uv run python -m bench.seed --bench [--force] [--database-url ...]
    uv run python -m bench.seed --bench --sqlite var/bench/bench.db --big-organizations 2
    uv run python -m bench.seed --bench --database-url mariadb+asyncmy://root@127.0.0.1:3306/tenantry_bench

10 organizations of (5 members, 20 projects, 200,000 tasks) and one of 2,000 tasks. The
members log in with BENCH_PASSWORD (one argon2 hash made by the app's own hasher at its
default cost) and hold roles that all grant tasks:read and tasks:write. A finished seed
leaves a row in `bench_dataset`; when it matches and the seeded rows are all there, the
seed is skipped, `--force` rebuilds.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import sqlite3
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncmy
import asyncpg
from uuid_utils.compat import uuid7

from tenantry.config import Settings
from tenantry.core.migrate import upgrade_to_head
from tenantry.core.security import PasswordHasher

# The tables a seed writes; their statistics are refreshed after it.
SEEDED_TABLES = ("users", "organizations", "memberships", "projects", "tasks")
# What the tests' databases use too (tests/conftest.py): utf8mb4, case-insensitive.
MARIADB_DATABASE_OPTIONS = "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci"

STATUSES = ("todo", "in_progress", "done", "archived")
PRIORITIES = ("low", "medium", "high", "urgent")
WORDS = (
    "invoice", "login", "report", "billing", "search", "export", "deploy", "review",
    "onboarding", "email", "dashboard", "api", "mobile", "cache", "refactor", "release",
)  # fmt: skip
UNUSABLE_PASSWORD = "!seeded"


@dataclass
class SeededOrganization:
    organization_id: str
    owner_id: str
    user_ids: list[str]
    project_ids: list[str]
    tasks: int


def _time_ordered_id(moment: dt.datetime, rng: random.Random) -> uuid.UUID:
    """A UUIDv7 for `moment`: ids of seeded rows stay time-ordered like real ones."""
    millis = int(moment.timestamp() * 1000)
    raw = bytearray(uuid7().bytes)
    raw[0:6] = millis.to_bytes(6, "big")
    raw[6] = 0x70 | (rng.getrandbits(4))
    return uuid.UUID(bytes=bytes(raw))


def _moments(count: int, rng: random.Random, now: dt.datetime) -> list[dt.datetime]:
    start = now - dt.timedelta(days=365)
    return sorted(start + dt.timedelta(seconds=rng.uniform(0, 365 * 86400)) for _ in range(count))


Sink = Callable[[str, Sequence[str], list[tuple[Any, ...]]], Awaitable[None]]


@dataclass(frozen=True)
class Members:
    """Log-in identities of an organization's users: emails, one password hash, roles, slug."""

    slug: str
    emails: list[str]
    roles: list[str]
    password_hash: str


def copy_sink(connection: asyncpg.Connection) -> Sink:
    """Rows into PostgreSQL with COPY (as the connection's user)."""

    async def write(table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        await connection.copy_records_to_table(table, records=rows, columns=list(columns))

    return write


async def seed_users(
    sink: Sink,
    count: int,
    rng: random.Random,
    now: dt.datetime,
    *,
    emails: Sequence[str] | None = None,
    password_hash: str = UNUSABLE_PASSWORD,
) -> list[uuid.UUID]:
    """`count` verified users; `emails`/`password_hash` make them able to log in."""
    ids = [_time_ordered_id(now, rng) for _ in range(count)]
    addresses = emails or [f"seed-{i.hex}@example.com" for i in ids]
    rows = [
        (i, email, password_hash, "USER", True, now, False, 0, now, now)
        for i, email in zip(ids, addresses, strict=True)
    ]
    columns = (
        "id", "email", "password_hash", "role", "is_active", "email_verified_at", "mfa_enabled",
        "mfa_failed_attempts", "created_at", "updated_at",
    )  # fmt: skip
    await sink("users", columns, rows)
    return ids


async def seed_tenant(
    sink: Sink,
    organization_id: uuid.UUID,
    user_ids: Sequence[uuid.UUID],
    now: dt.datetime,
    *,
    slug: str | None = None,
    roles: Sequence[str] = (),
) -> None:
    """The organization row (an active paid plan) and its members: the first user owns it.

    `roles` are the members' roles in order (default: owner, then members).
    """
    slug = slug or f"seed-{organization_id.hex[:12]}"
    await sink(
        "organizations",
        ("id", "name", "slug", "plan", "subscription_status", "created_by", "created_at",
         "updated_at"),
        [(organization_id, f"Seed {slug}", slug, "pro", "active", user_ids[0], now, now)],
    )  # fmt: skip
    roles = roles or ["owner", *(["member"] * (len(user_ids) - 1))]
    await sink(
        "memberships",
        ("id", "organization_id", "user_id", "role", "created_at", "updated_at"),
        [(uuid7(), organization_id, u, r, now, now) for u, r in zip(user_ids, roles, strict=True)],
    )


PROJECT_COLUMNS = (
    "id", "organization_id", "name", "description", "status", "created_at", "updated_at",
    "deleted_at", "created_by", "updated_by", "version",
)  # fmt: skip
TASK_COLUMNS = (
    "id", "organization_id", "project_id", "title", "description", "status", "priority",
    "assignee_id", "due_date", "created_at", "updated_at", "deleted_at", "created_by",
    "updated_by", "version",
)  # fmt: skip


def _task_rows(
    organization_id: uuid.UUID,
    owner_id: uuid.UUID,
    project_ids: Sequence[uuid.UUID],
    assignees: Sequence[uuid.UUID],
    moments: Sequence[dt.datetime],
    rng: random.Random,
) -> Iterator[tuple[Any, ...]]:
    for n, created in enumerate(moments):
        title = f"{rng.choice(WORDS)} {rng.choice(WORDS)} #{n}"
        due = created.date() + dt.timedelta(days=rng.randint(1, 90)) if rng.random() < 0.5 else None
        assignee = rng.choice(assignees) if assignees and rng.random() < 0.67 else None
        deleted = created + dt.timedelta(days=1) if rng.random() < 0.05 else None
        yield (
            _time_ordered_id(created, rng), organization_id, rng.choice(project_ids), title,
            None, rng.choice(STATUSES), rng.choice(PRIORITIES), assignee, due, created,
            created, deleted, owner_id, owner_id, 1,
        )  # fmt: skip


async def seed_organization(
    connection: asyncpg.Connection | Sink,
    *,
    organization_id: uuid.UUID | None = None,
    users: int = 20,
    projects: int = 50,
    tasks: int = 200_000,
    batch: int = 20_000,
    seed: int = 1,
    members: Members | None = None,
) -> SeededOrganization:
    """One organization with its users, projects and tasks (in batches of `batch` rows).

    `connection` is an asyncpg connection (rows go in with COPY) or any `Sink`;
    `members` gives the users log-in identities and roles (default: unusable passwords).
    """
    sink = connection if callable(connection) else copy_sink(connection)
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    organization_id = organization_id or uuid7()
    user_ids = await seed_users(
        sink,
        users,
        rng,
        now,
        emails=members.emails if members else None,
        password_hash=members.password_hash if members else UNUSABLE_PASSWORD,
    )
    owner = user_ids[0]
    await seed_tenant(
        sink,
        organization_id,
        user_ids,
        now,
        slug=members.slug if members else None,
        roles=members.roles if members else (),
    )
    project_moments = _moments(projects, rng, now)
    project_rows = [
        (_time_ordered_id(m, rng), organization_id, f"Project {i} {rng.choice(WORDS)}", None,
         "active" if rng.random() < 0.8 else "archived", m, m, None, owner, owner, 1)
        for i, m in enumerate(project_moments)
    ]  # fmt: skip
    await sink("projects", PROJECT_COLUMNS, project_rows)
    project_ids = [row[0] for row in project_rows]
    rows = _task_rows(organization_id, owner, project_ids, user_ids, _moments(tasks, rng, now), rng)
    while chunk := [row for _, row in zip(range(batch), rows, strict=False)]:
        await sink("tasks", TASK_COLUMNS, chunk)
    return SeededOrganization(
        organization_id=str(organization_id),
        owner_id=str(owner),
        user_ids=[str(u) for u in user_ids],
        project_ids=[str(p) for p in project_ids],
        tasks=tasks,
    )


async def _recreate(url: str) -> None:
    server, name = url.rsplit("/", 1)
    admin = await asyncpg.connect(server + "/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    sqlalchemy_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    await asyncio.to_thread(upgrade_to_head, sqlalchemy_url)


# --- the benchmark dataset (`make bench`) -------------------------------------------------

BENCH_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/tenantry_bench"
BENCH_MARIADB_URL = "mariadb+asyncmy://root@127.0.0.1:3306/tenantry_bench"
BENCH_PASSWORD = "bench-password-not-secret"
# Every role here holds tasks:read and tasks:write (API.md roles table), which every
# scenario needs (the bulk update asks for tasks:write on each row).
BENCH_ROLES = ("owner", "admin", "manager", "member", "member")
MARKER_TABLE = "bench_dataset"


@dataclass(frozen=True)
class DatasetSpec:
    """What the benchmark dataset holds: `big` organizations plus one small one."""

    big_organizations: int = 10
    big_tasks: int = 200_000
    small_tasks: int = 2_000
    members: int = 5
    projects: int = 20
    seed: int = 1

    def organizations(self) -> list[tuple[str, int]]:
        """(slug, tasks) of every organization, the small one last."""
        big = [(f"bench-big-{n + 1:02d}", self.big_tasks) for n in range(self.big_organizations)]
        return [*big, ("bench-small", self.small_tasks)]

    @property
    def total_tasks(self) -> int:
        return self.big_organizations * self.big_tasks + self.small_tasks

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def bench_email(slug: str, member: int) -> str:
    return f"{slug}-{member + 1}@bench.example.com"


def bench_password_hash() -> str:
    """The hash of BENCH_PASSWORD, made once by the app's hasher at its default (production) cost.

    Built from the field defaults, not the environment: a test run's cheap hashing settings
    must not leak into the dataset, or logins would measure a cost production never pays.
    """
    cost = {
        name: Settings.model_fields[name].default
        for name in (
            "password_hash_time_cost",
            "password_hash_memory_kib",
            "password_hash_parallelism",
        )
    }
    hasher = PasswordHasher(Settings(**cost))
    return asyncio.run(hasher.hash(BENCH_PASSWORD))


async def _seed_dataset(sink: Sink, spec: DatasetSpec, password_hash: str) -> None:
    roles = [BENCH_ROLES[n % len(BENCH_ROLES)] for n in range(spec.members)]
    for index, (slug, tasks) in enumerate(spec.organizations()):
        started = time.perf_counter()
        members = Members(
            slug=slug,
            emails=[bench_email(slug, n) for n in range(spec.members)],
            roles=roles,
            password_hash=password_hash,
        )
        await seed_organization(
            sink,
            users=spec.members,
            projects=spec.projects,
            tasks=tasks,
            seed=spec.seed + index,
            members=members,
        )
        elapsed = time.perf_counter() - started
        print(f"  {slug}: {tasks} tasks in {elapsed:.1f}s", file=sys.stderr)


MARKER_DDL = (
    f"CREATE TABLE {MARKER_TABLE} (spec TEXT PRIMARY KEY, seeded_at TEXT NOT NULL, "
    "seconds REAL NOT NULL, tasks INTEGER NOT NULL)"
)


@dataclass(frozen=True)
class Marker:
    """The row a finished seed leaves: which spec, when (ISO UTC), how long it took."""

    spec: str
    seeded_at: str
    seconds: float
    tasks: int


async def postgres_marker(url: str) -> Marker | None:
    """The dataset marker of database `url`, None when absent (or no such database)."""
    try:
        connection = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        return None
    try:
        if await connection.fetchval("SELECT to_regclass($1)", MARKER_TABLE) is None:
            return None
        row = await connection.fetchrow(f"SELECT * FROM {MARKER_TABLE}")
        if row is None:
            return None
        marker = Marker(row["spec"], row["seeded_at"], row["seconds"], row["tasks"])
        seeded = await connection.fetchval(
            "SELECT count(*) FROM tasks WHERE created_at <= $1",
            dt.datetime.fromisoformat(marker.seeded_at),
        )
        return marker if seeded == marker.tasks else None
    finally:
        await connection.close()


async def build_postgres(url: str, spec: DatasetSpec, *, force: bool = False) -> Marker:
    """The benchmark dataset in PostgreSQL `url`: kept when already there, else rebuilt."""
    existing = None if force else await postgres_marker(url)
    if existing is not None and existing.spec == spec.key():
        print(f"dataset: {url} already holds it (seeded in {existing.seconds:.0f}s), skipping")
        # Kept data, current schema: a dataset seeded by an older commit gets the newer
        # migrations (an index, a function) instead of being reseeded.
        sqlalchemy_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
        await asyncio.to_thread(upgrade_to_head, sqlalchemy_url)
        return existing
    print(f"dataset: seeding {url} ({spec.total_tasks} tasks)...", file=sys.stderr)
    started = time.perf_counter()
    await _recreate(url)
    password_hash = await asyncio.to_thread(bench_password_hash)
    connection = await asyncpg.connect(url)
    try:
        async with connection.transaction():
            await _seed_dataset(copy_sink(connection), spec, password_hash)
        await connection.execute(
            "VACUUM ANALYZE users, organizations, memberships, projects, tasks"
        )
        marker = Marker(
            spec.key(), dt.datetime.now(dt.UTC).isoformat(), time.perf_counter() - started,
            spec.total_tasks,
        )  # fmt: skip
        await connection.execute(MARKER_DDL)
        await connection.execute(
            f"INSERT INTO {MARKER_TABLE} VALUES ($1, $2, $3, $4)", *astuple(marker)
        )
    finally:
        await connection.close()
    print(f"dataset: seeded in {marker.seconds:.1f}s")
    return marker


def sqlite_value(value: Any) -> Any:
    """A Python value stored the way SQLAlchemy's types store it in SQLite."""
    if isinstance(value, uuid.UUID):
        return value.hex  # Uuid without a native type: CHAR(32)
    if isinstance(value, dt.datetime):  # UTCDateTime: naive UTC, microseconds
        return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def sqlite_sink(connection: sqlite3.Connection) -> Sink:
    """Rows into SQLite with executemany, values converted like the app's column types."""

    async def write(table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        placeholders = ", ".join("?" for _ in columns)
        connection.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})",
            [tuple(sqlite_value(v) for v in row) for row in rows],
        )

    return write


def sqlite_marker(path: Path) -> Marker | None:
    """The dataset marker of SQLite file `path`, None when absent or incomplete."""
    if not path.exists():
        return None
    connection = sqlite3.connect(path)
    try:
        row = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (MARKER_TABLE,)
        ).fetchone()
        found = row and connection.execute(f"SELECT * FROM {MARKER_TABLE}").fetchone()
        if not found:
            return None
        marker = Marker(*found)
        moment = sqlite_value(dt.datetime.fromisoformat(marker.seeded_at))
        (seeded,) = connection.execute(
            "SELECT count(*) FROM tasks WHERE created_at <= ?", (moment,)
        ).fetchone()
        return marker if seeded == marker.tasks else None
    finally:
        connection.close()


def build_sqlite(path: Path, spec: DatasetSpec, *, force: bool = False) -> Marker:
    """The benchmark dataset in the SQLite file `path` (migrated by the app's own chain)."""
    existing = None if force else sqlite_marker(path)
    if existing is not None and existing.spec == spec.key():
        print(f"dataset: {path} already holds it (seeded in {existing.seconds:.0f}s), skipping")
        upgrade_to_head(f"sqlite+aiosqlite:///{path}")  # newer migrations, same data
        return existing
    print(f"dataset: seeding {path} ({spec.total_tasks} tasks)...", file=sys.stderr)
    started = time.perf_counter()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(f"sqlite+aiosqlite:///{path}")
    password_hash = bench_password_hash()
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA synchronous=OFF")
        with connection:
            asyncio.run(_seed_dataset(sqlite_sink(connection), spec, password_hash))
        connection.execute("ANALYZE")
        marker = Marker(
            spec.key(), dt.datetime.now(dt.UTC).isoformat(), time.perf_counter() - started,
            spec.total_tasks,
        )  # fmt: skip
        with connection:
            connection.execute(MARKER_DDL)
            connection.execute(f"INSERT INTO {MARKER_TABLE} VALUES (?, ?, ?, ?)", astuple(marker))
    finally:
        connection.close()
    print(f"dataset: seeded in {marker.seconds:.1f}s")
    return marker


# --- MariaDB ------------------------------------------------------------------------------


def is_mariadb(url: str) -> bool:
    return url.startswith(("mariadb", "mysql"))


def mariadb_sqlalchemy_url(url: str) -> str:
    """`url` with the driver the app uses (`mariadb+asyncmy://`)."""
    scheme, rest = url.split("://", 1)
    return url if "+" in scheme else f"mariadb+asyncmy://{rest}"


async def mariadb_connect(url: str, *, database: bool = True) -> Any:
    """An asyncmy connection to `url`'s server (and database, unless `database=False`)."""
    parts = urlsplit(url)
    return await asyncmy.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=parts.path.lstrip("/") if database else None,
        autocommit=False,
    )


def mariadb_value(value: Any) -> Any:
    """A Python value the way the app's column types store it in MariaDB."""
    if isinstance(value, uuid.UUID):
        return str(value)  # the native UUID type
    if isinstance(value, dt.datetime):  # UTCDateTime: DATETIME(6), naive UTC
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def mariadb_sink(connection: Any) -> Sink:
    """Rows into MariaDB as multi-row INSERTs (asyncmy batches `executemany`)."""

    async def write(table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        placeholders = ", ".join("%s" for _ in columns)
        statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"
        async with connection.cursor() as cursor:
            for start in range(0, len(rows), MARIADB_INSERT_ROWS):
                chunk = rows[start : start + MARIADB_INSERT_ROWS]
                await cursor.executemany(
                    statement, [tuple(mariadb_value(v) for v in row) for row in chunk]
                )

    return write


MARIADB_INSERT_ROWS = 2_000  # rows per INSERT statement (well below max_allowed_packet)


async def _mariadb_execute(connection: Any, statement: str, *params: Any) -> list[Any]:
    async with connection.cursor() as cursor:
        await cursor.execute(statement, params or None)
        return list(await cursor.fetchall())


async def _recreate_mariadb(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    admin = await mariadb_connect(url, database=False)
    try:
        await _mariadb_execute(admin, f"DROP DATABASE IF EXISTS `{name}`")
        await _mariadb_execute(admin, f"CREATE DATABASE `{name}` {MARIADB_DATABASE_OPTIONS}")
    finally:
        admin.close()
    await asyncio.to_thread(upgrade_to_head, mariadb_sqlalchemy_url(url))


async def _analyze_mariadb(connection: Any) -> None:
    """Index statistics (and MariaDB's engine-independent ones, for the optimizer)."""
    await _mariadb_execute(connection, f"ANALYZE TABLE {', '.join(SEEDED_TABLES)}")


async def mariadb_marker(url: str) -> Marker | None:
    """The dataset marker of MariaDB database `url`, None when absent (or no such database)."""
    try:
        connection = await mariadb_connect(url)
    except asyncmy.errors.OperationalError:
        return None
    try:
        if not await _mariadb_execute(connection, "SHOW TABLES LIKE %s", MARKER_TABLE):
            return None
        found = await _mariadb_execute(connection, f"SELECT * FROM {MARKER_TABLE}")
        if not found:
            return None
        marker = Marker(*found[0])
        moment = mariadb_value(dt.datetime.fromisoformat(marker.seeded_at))
        ((seeded,),) = await _mariadb_execute(
            connection, "SELECT count(*) FROM tasks WHERE created_at <= %s", moment
        )
        return marker if seeded == marker.tasks else None
    finally:
        connection.close()


async def build_mariadb(url: str, spec: DatasetSpec, *, force: bool = False) -> Marker:
    """The benchmark dataset in MariaDB `url`: kept when already there, else rebuilt."""
    existing = None if force else await mariadb_marker(url)
    if existing is not None and existing.spec == spec.key():
        print(f"dataset: {url} already holds it (seeded in {existing.seconds:.0f}s), skipping")
        await asyncio.to_thread(upgrade_to_head, mariadb_sqlalchemy_url(url))
        return existing
    print(f"dataset: seeding {url} ({spec.total_tasks} tasks)...", file=sys.stderr)
    started = time.perf_counter()
    await _recreate_mariadb(url)
    password_hash = await asyncio.to_thread(bench_password_hash)
    connection = await mariadb_connect(url)
    try:
        await _seed_dataset(mariadb_sink(connection), spec, password_hash)
        await connection.commit()
        await _analyze_mariadb(connection)
        marker = Marker(
            spec.key(), dt.datetime.now(dt.UTC).isoformat(), time.perf_counter() - started,
            spec.total_tasks,
        )  # fmt: skip
        await _mariadb_execute(connection, MARKER_DDL.replace("spec TEXT", "spec VARCHAR(512)"))
        await _mariadb_execute(
            connection, f"INSERT INTO {MARKER_TABLE} VALUES (%s, %s, %s, %s)", *astuple(marker)
        )
        await connection.commit()
    finally:
        connection.close()
    print(f"dataset: seeded in {marker.seconds:.1f}s")
    return marker


async def _run_mariadb(args: argparse.Namespace) -> list[SeededOrganization]:
    if args.create:
        await _recreate_mariadb(args.database_url)
    connection = await mariadb_connect(args.database_url)
    seeded = []
    try:
        for index in range(args.organizations):
            started = time.perf_counter()
            seeded.append(
                await seed_organization(
                    mariadb_sink(connection),
                    users=args.users,
                    projects=args.projects,
                    tasks=args.tasks,
                    batch=args.batch,
                    seed=args.seed + index,
                )
            )
            await connection.commit()
            elapsed = time.perf_counter() - started
            print(
                f"organization {index + 1}: {args.tasks} tasks in {elapsed:.1f}s", file=sys.stderr
            )
        await _analyze_mariadb(connection)
    finally:
        connection.close()
    return seeded


async def run(args: argparse.Namespace) -> list[SeededOrganization]:
    if is_mariadb(args.database_url):
        return await _run_mariadb(args)
    if args.create:
        await _recreate(args.database_url)
    connection = await asyncpg.connect(args.database_url)
    seeded = []
    try:
        for index in range(args.organizations):
            started = time.perf_counter()
            async with connection.transaction():
                seeded.append(
                    await seed_organization(
                        connection,
                        users=args.users,
                        projects=args.projects,
                        tasks=args.tasks,
                        batch=args.batch,
                        seed=args.seed + index,
                    )
                )
            elapsed = time.perf_counter() - started
            print(
                f"organization {index + 1}: {args.tasks} tasks in {elapsed:.1f}s", file=sys.stderr
            )
        # The steady state autovacuum would reach: statistics and a set visibility map.
        await connection.execute(
            "VACUUM ANALYZE users, organizations, memberships, projects, tasks"
        )
    finally:
        await connection.close()
    return seeded


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=BENCH_DATABASE_URL,
        help="postgresql://... or mariadb+asyncmy://...",
    )
    parser.add_argument("--create", action="store_true", help="(re)create and migrate the database")
    parser.add_argument("--organizations", type=int, default=1)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--projects", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    bench = parser.add_argument_group("benchmark dataset (make bench)")
    bench.add_argument(
        "--bench", action="store_true", help="build the benchmark dataset (skipped when present)"
    )
    bench.add_argument("--force", action="store_true", help="rebuild it even when present")
    bench.add_argument("--sqlite", type=Path, help="build it in this SQLite file instead")
    bench.add_argument("--big-organizations", type=int, default=DatasetSpec.big_organizations)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.bench:
        spec = DatasetSpec(big_organizations=args.big_organizations)
        if args.sqlite:
            build_sqlite(args.sqlite, spec, force=args.force)
        elif is_mariadb(args.database_url):
            asyncio.run(build_mariadb(args.database_url, spec, force=args.force))
        else:
            asyncio.run(build_postgres(args.database_url, spec, force=args.force))
        return
    seeded = asyncio.run(run(args))
    print(json.dumps([asdict(s) for s in seeded]))


if __name__ == "__main__":
    main()
