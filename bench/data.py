"""What the wrk scripts read: ids, tokens, cursors and write targets, as plain text files.

bench/run.py asks the database for the dataset's identities (`Dataset`), logs every
member in through the API, and writes one directory of data files per organization
group (the big organizations, the small one) for bench/wrk/scenarios.lua. Each file
holds one record per line, fields separated by spaces, the first field being the
organization's line number in `orgs.txt`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import re
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol
from urllib.parse import quote

import asyncpg
import httpx

from bench.seed import BENCH_PASSWORD, WORDS, mariadb_connect, mariadb_value, sqlite_value
from tenantry.core.listing import _write_cursor, created_at_key
from tenantry.modules.tasks.models import Task

SAMPLED_TASKS = 1000  # per organization: targets of get task
BULK_SETS = 20  # per big organization: sets of BULK_SIZE ids
BULK_SIZE = 50
CURSOR_DEPTH = 150_000  # rows before the deep cursor page (default sort createdAt desc)
LOGIN_CONCURRENCY = 4  # the app hashes 4 passwords at once (PASSWORD_HASH_CONCURRENCY)


@dataclass
class Organization:
    """One organization of the dataset as the scripts see it."""

    id: str
    slug: str
    members: list[tuple[str, str]]  # (user id, email)
    projects: list[str]
    tasks: list[tuple[str, str]]  # sampled live (project id, task id)
    tokens: list[str] = field(default_factory=list)
    cursor: str = ""


class Store(Protocol):
    """The queries bench/run.py needs, on PostgreSQL, MariaDB or the SQLite file."""

    random: str  # the SQL function of a random number

    async def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]: ...

    def placeholder(self, n: int) -> str: ...

    def param(self, value: Any) -> Any: ...

    def value(self, raw: Any) -> Any: ...

    async def close(self) -> None: ...


class PostgresStore:
    random = "random()"

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    @classmethod
    async def connect(cls, url: str) -> PostgresStore:
        return cls(await asyncpg.connect(url))

    async def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self.connection.fetch(sql, *params)]

    def placeholder(self, n: int) -> str:
        return f"${n}"

    def param(self, value: Any) -> Any:
        return value

    def value(self, raw: Any) -> Any:
        return str(raw) if isinstance(raw, uuid.UUID) else raw

    async def close(self) -> None:
        await self.connection.close()


class SqliteStore:
    random = "random()"

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path)

    async def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.connection:
            return [tuple(r) for r in self.connection.execute(sql, params).fetchall()]

    def placeholder(self, n: int) -> str:
        return f"?{n}"

    def param(self, value: Any) -> Any:
        if isinstance(value, str) and len(value) == 36 and value.count("-") == 4:
            return uuid.UUID(value).hex
        return sqlite_value(value)

    def value(self, raw: Any) -> Any:
        if isinstance(raw, str) and len(raw) == 32 and raw.isalnum():
            return str(uuid.UUID(raw))
        return raw

    async def close(self) -> None:
        self.connection.close()


class MariadbStore:
    """MariaDB through asyncmy (autocommit): `%s` placeholders, in order of appearance."""

    random = "RAND()"

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    @classmethod
    async def connect(cls, url: str) -> MariadbStore:
        connection = await mariadb_connect(url)
        await connection.autocommit(True)
        return cls(connection)

    async def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        ordered = [params[int(n) - 1] for n in _POSITIONAL.findall(sql)]
        async with self.connection.cursor() as cursor:
            await cursor.execute(_POSITIONAL.sub("%s", sql), ordered or None)
            return [tuple(r) for r in await cursor.fetchall()]

    def placeholder(self, n: int) -> str:
        return f"%({n})s"  # made positional by `rows`

    def param(self, value: Any) -> Any:
        return mariadb_value(value)

    def value(self, raw: Any) -> Any:
        return str(raw) if isinstance(raw, uuid.UUID) else raw

    async def close(self) -> None:
        self.connection.close()


_POSITIONAL = re.compile(r"%\((\d+)\)s")


async def _query(store: Store, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """`sql` with `{1}`, `{2}`... placeholders (and `{random}`), values converted both ways."""
    marks = [store.placeholder(n + 1) for n in range(len(params))]
    statement = sql.format(None, *marks, random=store.random)
    rows = await store.rows(statement, *(store.param(p) for p in params))
    return [tuple(store.value(v) for v in row) for row in rows]


def _moment(raw: Any) -> dt.datetime:
    moment = raw if isinstance(raw, dt.datetime) else dt.datetime.fromisoformat(raw)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


async def load_organizations(store: Store) -> list[Organization]:
    """Every bench organization (slug order: big ones, then `bench-small`) with samples."""
    organizations = []
    for org_id, slug in await _query(
        store, "SELECT id, slug FROM organizations WHERE slug LIKE 'bench-%' ORDER BY slug"
    ):
        members = await _query(
            store,
            "SELECT u.id, u.email FROM memberships m JOIN users u ON u.id = m.user_id "
            "WHERE m.organization_id = {1} ORDER BY u.email",
            org_id,
        )
        projects = await _query(
            store, "SELECT id FROM projects WHERE organization_id = {1} ORDER BY id", org_id
        )
        tasks = await _query(
            store,
            "SELECT project_id, id FROM tasks WHERE organization_id = {1} "
            "AND deleted_at IS NULL ORDER BY {random} LIMIT {2}",
            org_id,
            SAMPLED_TASKS,
        )
        organization = Organization(
            org_id, slug, [(m[0], m[1]) for m in members], [p[0] for p in projects],
            [(t[0], t[1]) for t in tasks],
        )  # fmt: skip
        organization.cursor = await deep_cursor(store, org_id)
        organizations.append(organization)
    return organizations


async def deep_cursor(store: Store, org_id: str) -> str:
    """The app's own cursor after the live row CURSOR_DEPTH deep (createdAt desc, id desc)."""
    found = await _query(
        store,
        "SELECT created_at, id FROM tasks WHERE organization_id = {1} AND deleted_at IS NULL "
        "ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET {2}",
        org_id,
        CURSOR_DEPTH - 1,
    )
    if not found:  # a small organization has no such depth
        return ""
    row = SimpleNamespace(created_at=_moment(found[0][0]), id=uuid.UUID(str(found[0][1])))
    return _write_cursor(created_at_key(Task.created_at), True, row, Task.id)


async def patch_candidates(
    store: Store, organizations: Sequence[Organization], count: int
) -> list[tuple[int, str, str]]:
    """`count` random live tasks of `organizations`: (org line number, project id, task id)."""
    lines = {org.id: n + 1 for n, org in enumerate(organizations)}
    marks = ", ".join(f"{{{n + 2}}}" for n in range(len(organizations)))
    rows = await _query(
        store,
        f"SELECT organization_id, project_id, id FROM tasks WHERE organization_id IN ({marks}) "
        "AND deleted_at IS NULL ORDER BY {random} LIMIT {1}",
        count,
        *[org.id for org in organizations],
    )
    return [(lines[r[0]], r[1], r[2]) for r in rows]


async def current_versions(store: Store, task_ids: Sequence[str]) -> dict[str, int]:
    """The version (ETag) of each task right now."""
    versions: dict[str, int] = {}
    for start in range(0, len(task_ids), 500):
        chunk = task_ids[start : start + 500]
        marks = ", ".join(f"{{{n + 1}}}" for n in range(len(chunk)))
        for task_id, version in await _query(
            store, f"SELECT id, version FROM tasks WHERE id IN ({marks})", *chunk
        ):
            versions[task_id] = int(version)
    return versions


async def busy_connections(store: Store) -> int:
    """Connections to the bench database other than ours running a query or holding a
    transaction open (0 on SQLite).

    An abandoned login waits for its password hash with its transaction open ("idle in
    transaction"), holding a pool connection the next scenario's requests would queue for.
    """
    if isinstance(store, MariadbStore):
        found = await store.rows(
            "SELECT count(*) FROM information_schema.processlist WHERE db = DATABASE() "
            "AND id <> CONNECTION_ID() AND (command <> 'Sleep' OR id IN "
            "(SELECT trx_mysql_thread_id FROM information_schema.innodb_trx))"
        )
        return int(found[0][0])
    if not isinstance(store, PostgresStore):
        return 0
    found = await store.rows(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state IS NOT NULL AND state <> 'idle' AND pid <> pg_backend_pid()"
    )
    return int(found[0][0])


async def reset_after_run(store: Store, seeded_at: str) -> None:
    """Remove the tasks and sessions a run added, so every run starts from the same rows.

    The audit log is append-only (a trigger refuses deletes); its entries stay.
    """
    for sql in (
        "DELETE FROM tasks WHERE created_at > {1}",
        "DELETE FROM refresh_tokens",
        "DELETE FROM auth_sessions",
    ):
        params = (_moment(seeded_at),) if "{1}" in sql else ()
        await _query(store, sql, *params)


class LoginFailed(Exception):
    """A bench member could not log in (the dataset or the server is not what we expect)."""


async def log_in_everyone(base_url: str, organizations: Sequence[Organization]) -> None:
    """A real login per member (POST /auth/login), the access token kept on its organization."""
    slots = asyncio.Semaphore(LOGIN_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:

        async def login(email: str) -> str:
            async with slots:
                response = await client.post(
                    "/api/v1/auth/login", json={"email": email, "password": BENCH_PASSWORD}
                )
            if response.status_code != 200:
                raise LoginFailed(f"login of {email}: {response.status_code} {response.text}")
            token: str = response.json()["data"]["accessToken"]
            return token

        for org in organizations:
            org.tokens = list(await asyncio.gather(*(login(e) for _, e in org.members)))


def _write(path: Path, lines: Sequence[Sequence[object]]) -> None:
    path.write_text("".join(" ".join(str(f) for f in line) + "\n" for line in lines))


def write_data_dir(directory: Path, organizations: Sequence[Organization], seed: int) -> None:
    """The data files of one organization group (see bench/wrk/scenarios.lua)."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    numbered = list(enumerate(organizations, start=1))
    _write(directory / "orgs.txt", [[org.id] for org in organizations])
    _write(directory / "tokens.txt", [[n, t] for n, org in numbered for t in org.tokens])
    _write(directory / "emails.txt", [[e] for _, org in numbered for _, e in org.members])
    _write(directory / "password.txt", [[BENCH_PASSWORD]])
    _write(directory / "members.txt", [[n, u] for n, org in numbered for u, _ in org.members])
    _write(directory / "projects.txt", [[n, p] for n, org in numbered for p in org.projects])
    _write(directory / "tasks.txt", [[n, p, t] for n, org in numbered for p, t in org.tasks])
    _write(directory / "cursors.txt", [[n, quote(org.cursor)] for n, org in numbered])
    _write(directory / "words.txt", [[w] for w in WORDS])
    _write(directory / "bulk.txt", [[n, ",".join(ids)] for n, ids in bulk_sets(numbered, rng)])


def bulk_sets(
    numbered: Sequence[tuple[int, Organization]], rng: random.Random
) -> list[tuple[int, list[str]]]:
    """BULK_SETS disjoint sets of BULK_SIZE task ids per organization, each sorted.

    Disjoint and in one order, two bulk updates running at once either touch different
    rows or wait for each other: never the deadlock of two sets locking rows in turn.
    """
    sets = []
    for n, org in numbered:
        ids = [t for _, t in org.tasks]
        rng.shuffle(ids)
        for start in range(0, min(len(ids), BULK_SETS * BULK_SIZE), BULK_SIZE):
            chunk = ids[start : start + BULK_SIZE]
            if len(chunk) == BULK_SIZE:
                sets.append((n, sorted(chunk)))
    return sets


def write_patch_pool(
    directory: Path, targets: Sequence[tuple[int, str, str]], versions: dict[str, int]
) -> int:
    """patch.txt: tasks to patch once each, with the version their ETag carries now."""
    lines = [[n, p, t, versions[t]] for n, p, t in targets if t in versions]
    _write(directory / "patch.txt", lines)
    return len(lines)
