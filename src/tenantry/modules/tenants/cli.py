"""`tenantry tenants list|provision|migrate|backup|restore|move|delete`: operating the
tenant databases.

Heavy imports happen inside the commands, so `tenantry --help` stays fast.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from tenantry.config import Settings

if TYPE_CHECKING:
    from tenantry.modules.tenants.service import Outcome, TenantDatabases

T = TypeVar("T")


def run_with_tenants(settings: Settings, work: Callable[[TenantDatabases], Awaitable[T]]) -> T:
    """Run `work` with the control database and its tenant databases, then close them."""
    from tenantry.core.db import Database
    from tenantry.core.storage import bind_storage, create_storage
    from tenantry.modules.tenants.service import TenantDatabases

    async def main() -> T:
        database = Database(settings)
        storage = create_storage(settings)  # backups, and the objects a deletion removes
        bind_storage(database, storage)
        tenants = TenantDatabases(settings, database)
        try:
            return await work(tenants)
        finally:
            await tenants.routing.dispose()
            await database.dispose()
            await storage.close()

    return asyncio.run(main())


class ProgressLines:
    """Progress of a command over many tenants, as each one finishes.

    On a terminal (and with a known total): a progress bar, and a line for each failure
    above it. Elsewhere (CI, a log file): one line per tenant,
    `[done/total] org action: detail (seconds)`, failures on stderr.
    """

    def __init__(self, total: int | None = None, *, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stdout
        self._bar: Any = None
        if total and self.stream.isatty():
            self._bar = click.progressbar(
                length=total, label="tenants", show_pos=True, show_eta=True, file=self.stream
            )
            self._bar.render_progress()

    def __call__(self, outcome: Outcome) -> None:
        self.done += 1
        counter = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        line = f"[{counter}] {outcome.organization_id} {outcome.action}"
        if outcome.detail:
            line += f": {outcome.detail}"
        line = f"{line} ({outcome.seconds:.1f} s)"
        if self._bar is None:
            click.echo(line, err=outcome.failed)
            return
        if outcome.failed:
            click.echo("\r\033[K" + line, file=self.stream)  # above the bar, which follows
        self._bar.update(1)
        if self.done >= (self.total or 0):
            self.finish()

    def finish(self) -> None:
        """End the bar (the terminal's cursor back), also when fewer tenants came by."""
        if self._bar is not None:
            self._bar.render_finish()
            self._bar = None


def summarize(outcomes: list[Outcome]) -> None:
    failed = [o for o in outcomes if o.failed]
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.action] = counts.get(outcome.action, 0) + 1
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "nothing to do"
    click.echo(f"tenantry: {summary}")
    if failed:
        click.echo(
            f"tenantry: {len(failed)} tenant(s) failed; fix them and run the command again "
            "(the others are done and are skipped)",
            err=True,
        )
        sys.exit(1)


def migrate_all_tenants(settings: Settings, concurrency: int) -> list[Outcome]:
    """Every serving tenant database to the head (`tenantry migrate` in database mode)."""

    async def work(tenants: TenantDatabases) -> list[Outcome]:
        progress = ProgressLines(len(await tenants.registry.ready_organizations()))
        try:
            return await tenants.migrate(concurrency=concurrency, progress=progress)
        finally:
            progress.finish()

    return run_with_tenants(settings, work)


def _database_mode(settings: Settings) -> Settings:
    if not settings.database_per_tenant:
        click.echo(
            "tenantry tenants: TENANCY_MODE is shared; there are no tenant databases", err=True
        )
        sys.exit(2)
    return settings


def _ids(values: tuple[str, ...]) -> list[uuid.UUID]:
    try:
        return [uuid.UUID(value) for value in values]
    except ValueError:
        raise click.BadParameter("organization ids are UUIDs") from None


def tenants_group(load: Callable[[], Settings]) -> click.Group:
    """The `tenants` command group; `load` reads the settings (the CLI's, exiting on errors)."""

    @click.group("tenants")
    def tenants() -> None:
        """Database per tenant (TENANCY_MODE=database): list, provision, migrate, backup,
        restore, move."""

    @tenants.command("list")
    def list_() -> None:
        """Every tenant database: organization, state, server, database, revision, size."""
        settings = _database_mode(load())

        async def work(tenants: TenantDatabases) -> None:
            async with tenants.database.session(write=False) as session:
                rows, total = await tenants.list_tenants(session, offset=0, limit=1_000_000)
            for row in rows:
                size = "-" if row.size_bytes is None else str(row.size_bytes)
                click.echo(
                    f"{row.organization_id}  {row.state:<12} {row.server}  {row.database}  "
                    f"{row.schema_revision or '-'}  {size}"
                )
            click.echo(f"tenantry: {total} tenant database(s)")

        run_with_tenants(settings, work)

    @tenants.command()
    @click.argument("organization_ids", nargs=-1)
    @click.option(
        "--grace",
        type=float,
        default=600.0,
        show_default=True,
        help="Seconds after which a half-made database of an organization that does not "
        "exist is a crash's leftover (younger ones may be a creation in flight).",
    )
    def provision(organization_ids: tuple[str, ...], grace: float) -> None:
        """Provision the given organizations' databases, or (none given) repair everything:
        finish or remove half-made databases and provision organizations without one."""
        settings = _database_mode(load())
        wanted = _ids(organization_ids)

        async def work(tenants: TenantDatabases) -> list[Outcome]:
            progress = ProgressLines(len(wanted) if wanted else None)
            if not wanted:
                return await tenants.repair(grace_seconds=grace, progress=progress)
            outcomes = []
            try:
                for organization_id in wanted:
                    outcome = await tenants.provision_existing(organization_id)
                    progress(outcome)
                    outcomes.append(outcome)
            finally:
                progress.finish()
            return outcomes

        summarize(run_with_tenants(settings, work))

    @tenants.command()
    @click.argument("organization_ids", nargs=-1)
    @click.option("--all", "every", is_flag=True, help="Every serving tenant database.")
    @click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
    def migrate(organization_ids: tuple[str, ...], every: bool, concurrency: int) -> None:
        """Upgrade tenant databases to the latest revision (resumable: those already at it
        are skipped; a failure is reported and the others continue)."""
        settings = _database_mode(load())
        wanted = _ids(organization_ids)
        if not wanted and not every:
            raise click.UsageError("name organization ids or pass --all")

        async def work(tenants: TenantDatabases) -> list[Outcome]:
            total = len(wanted) if wanted else len(await tenants.registry.ready_organizations())
            progress = ProgressLines(total)
            try:
                return await tenants.migrate(
                    None if every else wanted, concurrency=concurrency, progress=progress
                )
            finally:
                progress.finish()

        summarize(run_with_tenants(settings, work))

    @tenants.command()
    @click.argument("organization_id")
    @click.option(
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Where to write the backup (default: backup-<org>-<day>.<pgdump|sqlite> here).",
    )
    def backup(organization_id: str, output: Path | None) -> None:
        """Back up one organization's database to a local file."""
        settings = _database_mode(load())
        (org,) = _ids((organization_id,))

        async def work(tenants: TenantDatabases) -> Path:
            step("dumping the database")
            dump = await tenants.operations.backup(org)
            day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
            target = output or Path(f"backup-{org}-{day}.{dump.extension}")
            shutil.move(dump.path, target)
            step(f"{dump.size} bytes, sha256 {dump.sha256}")
            return target

        click.echo(f"tenantry: backup written to {_run(settings, work)}")

    @tenants.command()
    @click.argument("organization_id")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    def restore(organization_id: str, file: Path) -> None:
        """Restore FILE (a backup of this organization) into a fresh database on its server
        and switch to it; the old database is dropped. Writes are refused meanwhile."""
        settings = _database_mode(load())
        (org,) = _ids((organization_id,))

        async def work(tenants: TenantDatabases) -> str:
            await _repair_first(tenants, org)
            done = await tenants.operations.restore(org, file, progress=step)
            return f"restored into {done.database} on {done.server} ({done.seconds:.1f} s)"

        click.echo(f"tenantry: {_run(settings, work)}")

    @tenants.command()
    @click.argument("organization_id")
    @click.option("--server", required=True, help="The target server, as `tenants list` names it.")
    def move(organization_id: str, server: str) -> None:
        """Move one organization's database to another server (writes refused meanwhile,
        reads served; an interrupted earlier move of it is undone first)."""
        settings = _database_mode(load())
        (org,) = _ids((organization_id,))

        async def work(tenants: TenantDatabases) -> str:
            await _repair_first(tenants, org)
            done = await tenants.operations.move(org, server, progress=step)
            return f"moved to {done.database} on {done.server} ({done.seconds:.1f} s)"

        click.echo(f"tenantry: {_run(settings, work)}")

    @tenants.command()
    @click.argument("organization_id")
    @click.option(
        "--confirm",
        "confirmation",
        required=True,
        metavar="SLUG",
        help="The organization's slug, typed again: what is dropped cannot be restored.",
    )
    def delete(organization_id: str, confirmation: str) -> None:
        """Delete one organization for good: its stored files (uploads, exports, backups
        made through the API) are removed and its database — every project, task, file
        record and resource audit entry — is dropped; backups written to local files with
        `tenants backup` stay yours to keep. The organization stays in the control
        database, soft-deleted, for its audit log."""
        settings = _database_mode(load())
        (org,) = _ids((organization_id,))

        async def work(tenants: TenantDatabases) -> str:
            return await hard_delete(tenants, org, confirmation)

        click.echo(f"tenantry: {_run(settings, work)}")

    return tenants


async def hard_delete(tenants: TenantDatabases, org: uuid.UUID, slug: str) -> str:
    """`tenants delete`: the slug must match; the caches of every serving process are told
    (the same cache object the app builds, so near-cached copies are dropped too)."""
    from tenantry.app import create_access_cache, create_redis
    from tenantry.core.errors import NotFound, ValidationFailed
    from tenantry.core.jobs.session import unit_of_work
    from tenantry.modules.orgs.models import Organization

    settings = tenants.settings
    redis = create_redis(settings)
    cache = create_access_cache(settings, redis)
    try:
        async with unit_of_work(tenants.database) as session:
            found = await session.get(Organization, org)
            if found is None:
                raise NotFound(f"No organization {org}")
            if found.slug != slug:
                raise ValidationFailed(
                    f"--confirm {slug!r} is not the slug of {org} ({found.slug!r}); "
                    "nothing was deleted"
                )
            await tenants.hard_delete_organization(session, cache, org)
        return f"organization {found.slug} ({org}) deleted and its database dropped"
    finally:
        await cache.close()
        if redis is not None:
            await redis.aclose()


def step(message: str) -> None:
    """A progress line of backup/restore/move."""
    click.echo(f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] {message}")


async def _repair_first(tenants: TenantDatabases, org: uuid.UUID) -> None:
    done = await tenants.operations.repair_interrupted(org)
    if done is not None:
        step(f"repaired: {done}")


def _run(settings: Settings, work: Callable[[TenantDatabases], Awaitable[T]]) -> T:
    """Run `work`; an operation refused or abandoned is one line on stderr and exit 1."""
    from tenantry.core.errors import AppError
    from tenantry.modules.tenants.backup import BackupError
    from tenantry.modules.tenants.operations import OperationFailed

    try:
        return run_with_tenants(settings, work)
    except (AppError, OperationFailed, BackupError) as error:
        message = getattr(error, "message", None) or str(error)
        click.echo(f"tenantry: {message}", err=True)
        sys.exit(1)
