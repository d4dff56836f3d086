"""Seed a PostgreSQL database with large tenants, fast (COPY, not INSERT per row).

    uv run python -m bench.seed --create --tasks 200000 \\
        --database-url postgresql://postgres@127.0.0.1:5432/tenantry_bench

`--create` creates the database (dropped first when it exists) and migrates it to head.
Each organization (a row on the `pro` plan, active) gets `--users` members (the first
is the owner; unusable password), `--projects`
projects and `--tasks` tasks spread over them, with realistic spreads: creation times
over the last year, every status and priority, a third unassigned, half without due date,
5 % soft-deleted. Rows are written with COPY in batches (`--batch`), as the migrating
(table-owning) user so row-level security does not apply. The generated ids are printed
as JSON for the tools that use the dataset (bench/plans.py, load tests).

Reusable: `seed_organization(connection, ...)` seeds one organization on an open asyncpg
connection.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
from uuid_utils.compat import uuid7

from tenantry.core.migrate import upgrade_to_head

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


async def _copy(
    connection: asyncpg.Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    await connection.copy_records_to_table(table, records=rows, columns=list(columns))


async def seed_users(
    connection: asyncpg.Connection, count: int, rng: random.Random, now: dt.datetime
) -> list[uuid.UUID]:
    ids = [_time_ordered_id(now, rng) for _ in range(count)]
    rows = [
        (i, f"seed-{i.hex}@example.com", UNUSABLE_PASSWORD, "USER", True, False, 0, now, now)
        for i in ids
    ]
    columns = (
        "id", "email", "password_hash", "role", "is_active", "mfa_enabled",
        "mfa_failed_attempts", "created_at", "updated_at",
    )  # fmt: skip
    await _copy(connection, "users", columns, rows)
    return ids


async def seed_tenant(
    connection: asyncpg.Connection,
    organization_id: uuid.UUID,
    user_ids: Sequence[uuid.UUID],
    now: dt.datetime,
) -> None:
    """The organization row (an active paid plan) and its members: the first user owns it."""
    slug = f"seed-{organization_id.hex[:12]}"
    await _copy(
        connection,
        "organizations",
        ("id", "name", "slug", "plan", "subscription_status", "created_by", "created_at",
         "updated_at"),
        [(organization_id, f"Seed {slug}", slug, "pro", "active", user_ids[0], now, now)],
    )  # fmt: skip
    roles = ["owner", *(["member"] * (len(user_ids) - 1))]
    await _copy(
        connection,
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
    connection: asyncpg.Connection,
    *,
    organization_id: uuid.UUID | None = None,
    users: int = 20,
    projects: int = 50,
    tasks: int = 200_000,
    batch: int = 20_000,
    seed: int = 1,
) -> SeededOrganization:
    """One organization with its users, projects and tasks (COPY in batches)."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    organization_id = organization_id or uuid7()
    user_ids = await seed_users(connection, users, rng, now)
    owner = user_ids[0]
    await seed_tenant(connection, organization_id, user_ids, now)
    project_moments = _moments(projects, rng, now)
    project_rows = [
        (_time_ordered_id(m, rng), organization_id, f"Project {i} {rng.choice(WORDS)}", None,
         "active" if rng.random() < 0.8 else "archived", m, m, None, owner, owner, 1)
        for i, m in enumerate(project_moments)
    ]  # fmt: skip
    await _copy(connection, "projects", PROJECT_COLUMNS, project_rows)
    project_ids = [row[0] for row in project_rows]
    rows = _task_rows(organization_id, owner, project_ids, user_ids, _moments(tasks, rng, now), rng)
    while chunk := [row for _, row in zip(range(batch), rows, strict=False)]:
        await _copy(connection, "tasks", TASK_COLUMNS, chunk)
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


async def run(args: argparse.Namespace) -> list[SeededOrganization]:
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
    parser.add_argument("--database-url", required=True, help="postgresql://user@host:port/db")
    parser.add_argument("--create", action="store_true", help="(re)create and migrate the database")
    parser.add_argument("--organizations", type=int, default=1)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--projects", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    seeded = asyncio.run(run(parse_args(argv)))
    print(json.dumps([asdict(s) for s in seeded]))


if __name__ == "__main__":
    main()
