"""The `tenantry` command: serve, migrate, openapi (and more as features land)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from tenantry.config import Settings, SettingsError, load_settings


def _settings(**overrides: object) -> Settings:
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
        settings.secret()  # a dev key is created (and persisted) before workers fork
    except SettingsError as exc:
        click.echo(f"tenantry: {exc}", err=True)
        sys.exit(2)
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tenantry")
def main() -> None:
    """tenantry — the backend a multi-tenant SaaS starts from.

    Settings come from the environment and `.env` (see the README's configuration table).
    """


@main.command()
@click.option("--host", envvar="HOST", default=None, help="Interface to bind [HOST, 127.0.0.1].")
@click.option("--port", envvar="PORT", type=int, default=None, help="Port [PORT, 8000].")
@click.option(
    "--workers",
    default=None,
    metavar="N|auto",
    help="Worker processes, each a full API process; `auto` = one per core "
    "[default: auto with ENV=production (1 without REDIS_URL), 1 otherwise].",
)
@click.option("--reload", is_flag=True, help="Restart on code changes (development only).")
@click.option(
    "--migrate/--no-migrate",
    "migrate_first",
    default=None,
    help="Apply migrations before serving [default: only when ENV=development].",
)
@click.option(
    "--no-worker",
    is_flag=True,
    help="Do not run jobs in this process (run `tenantry worker` processes instead).",
)
def serve(
    host: str | None,
    port: int | None,
    workers: str | None,
    reload: bool,
    migrate_first: bool | None,
    no_worker: bool,
) -> None:
    """Serve the HTTP API with uvicorn (and, by default without Redis, the job worker)."""
    import uvicorn

    if no_worker:
        os.environ["JOBS_EMBEDDED_WORKER"] = "false"  # also seen by --workers/--reload children
    settings = _settings(host=host, port=port)
    if reload and settings.is_production:
        raise click.UsageError("--reload is for development; refusing with ENV=production")
    count, note = worker_count(settings, workers)
    if note is not None:
        click.echo(f"tenantry: {note}", err=True)
    problem = multi_process_problem(settings, count)
    if problem is not None:
        raise click.UsageError(problem)
    if count > 1:
        _prepare_worker_processes(settings, count)
    if migrate_first if migrate_first is not None else settings.should_auto_migrate:
        _migrate(settings)
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": ",".join(settings.trusted_proxies) or None,
        "server_header": False,
        # On SIGTERM, in-flight requests get this long, then are cancelled: a client that
        # never finishes its request cannot keep the process alive.
        "timeout_graceful_shutdown": settings.graceful_shutdown_seconds,
    }
    if count > 1 or reload:
        uvicorn.run(
            "tenantry.app:app_factory", factory=True, workers=count, reload=reload, **common
        )
    else:
        from tenantry.app import create_app
        from tenantry.core import collector

        application = create_app(settings)
        collector.settle()
        uvicorn.run(application, **common)


def worker_count(settings: Settings, requested: str | None) -> tuple[int, str | None]:
    """The processes `serve --workers` starts, and a note to print when it chose for you.

    Production defaults to one process per core (one Python process uses one core at
    most); without REDIS_URL that default falls back to one process, since several
    would not share their cache (`multi_process_problem`). Asked for explicitly, `auto`
    or N is honoured — or refused by `multi_process_problem`.
    """
    cores = os.cpu_count() or 1
    if requested is None:
        if not settings.is_production:
            return 1, None
        if settings.redis_url is None and cores > 1:
            return 1, "serving with 1 process: one per core (--workers auto) needs REDIS_URL"
        return cores, None
    if requested.strip().lower() == "auto":
        return cores, None
    if not requested.strip().isdigit() or int(requested) < 1:
        raise click.BadParameter(
            f"{requested!r} is not a number >= 1 or `auto`", param_hint="--workers"
        )
    return int(requested), None


def _prepare_worker_processes(settings: Settings, workers: int) -> None:
    """Settings the worker processes inherit through the environment (spawned children).

    - Password hashes: `PASSWORD_HASH_CONCURRENCY` counts per process; by default the
      processes share cores - 1 hashing threads between them (at least one each).
    - Metrics: every process writes to `PROMETHEUS_MULTIPROC_DIR` so that `/metrics`
      (answered by any one of them) adds all of them up; a fresh directory under
      VAR_DIR when it is not set.
    """
    if "PASSWORD_HASH_CONCURRENCY" not in os.environ:
        cores = os.cpu_count() or 1
        os.environ["PASSWORD_HASH_CONCURRENCY"] = str(max(1, (cores - 1) // workers))
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        directory = Path(settings.var_dir) / "metrics"
        shutil.rmtree(directory, ignore_errors=True)  # counts of an earlier run
        directory.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def multi_process_problem(settings: Settings, workers: int) -> str | None:
    """Why `serve --workers N` must not start, or None.

    Without Redis every process has its own cache, rate-limit buckets and list totals: a
    revocation, a membership change or a write is seen at once only by the process that
    made it. Tolerable on a laptop, not in production.
    """
    if workers > 1 and settings.is_production and settings.redis_url is None:
        return (
            f"--workers {workers} needs REDIS_URL in production: without Redis each process "
            "keeps its own cache, rate limits and list totals (set REDIS_URL=redis://host:6379/0, "
            "or serve with --workers 1)"
        )
    return None


@main.command()
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=256),
    default=None,
    help="Jobs run at once by this process [JOBS_CONCURRENCY, 4].",
)
def worker(concurrency: int | None) -> None:
    """Run background jobs until SIGTERM (graceful: running jobs finish or are released)."""
    from tenantry.core.jobs.runtime import run_worker_process
    from tenantry.core.logging import configure_logging
    from tenantry.sessions import worker_setup

    settings = _settings(jobs_concurrency=concurrency)
    configure_logging(settings)
    asyncio.run(run_worker_process(settings, setup=worker_setup))


@main.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="TENANCY_MODE=database: tenant databases migrated at once.",
)
def migrate(concurrency: int) -> None:
    """Apply database migrations up to the latest revision (in database mode: the control
    database, then every tenant database)."""
    settings = _settings()
    _migrate(settings)
    click.echo("tenantry: database is at the latest revision")
    if settings.database_per_tenant:
        from tenantry.modules.tenants.cli import migrate_all_tenants, summarize

        summarize(migrate_all_tenants(settings, concurrency))


def _migrate(settings: Settings) -> None:
    from tenantry.core.db import Database
    from tenantry.core.migrate import upgrade_to_head

    if settings.is_sqlite:
        Database(settings)  # creates the directory of the SQLite file
    upgrade_to_head(settings.database_url)


@main.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file instead of standard output.",
)
def openapi(output: Path | None) -> None:
    """Write the OpenAPI document (JSON)."""
    from tenantry.app import create_app

    spec = create_app(_settings()).openapi()
    text = json.dumps(spec, indent=2, sort_keys=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"tenantry: wrote {output}", err=True)


@main.command()
@click.option("--email", required=True, help="The super admin's email address.")
@click.option(
    "--password",
    envvar="TENANTRY_SUPERUSER_PASSWORD",
    default=None,
    help="[env TENANTRY_SUPERUSER_PASSWORD] Prompted for when absent.",
)
def createsuperuser(email: str, password: str | None) -> None:
    """Create a SUPER_ADMIN account (or promote an existing one)."""
    import asyncio

    from tenantry.modules.users.admin_cli import ensure_super_admin, validate_new_account

    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        email, password = validate_new_account(email, password)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    created = asyncio.run(ensure_super_admin(_settings(), email, password))
    click.echo(f"tenantry: super admin {email} {'created' if created else 'promoted'}")


@main.command()
def seed() -> None:
    """Create a super admin and a demo user (idempotent); prints their credentials."""
    import asyncio

    from tenantry.modules.users.admin_cli import seed_accounts

    for line in asyncio.run(seed_accounts(_settings())):
        click.echo(f"tenantry: {line}")


@main.command("new-resource")
@click.argument("name")
@click.option(
    "--field",
    "fields",
    multiple=True,
    metavar="NAME:TYPE",
    help="A field (repeatable); TYPE is str, text, int, decimal, bool, date, datetime or uuid.",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=Path(),
    help="The project checkout to write into [current directory].",
)
def new_resource(name: str, fields: tuple[str, ...], root: Path) -> None:
    """Generate a tenant resource NAME (plural snake_case) like projects.

    Writes modules/NAME (model, schemas, service, router), a migration, tests, and
    registers the router, the permissions and the walker entries
    (docs/adding-a-resource.md).
    """
    from tenantry.generator import InvalidSpec, generate, parse_spec
    from tenantry.generator.writer import GenerationError

    root = root.resolve()
    if not (root / "src" / "tenantry" / "app.py").exists():
        raise click.UsageError(f"{root} is not a tenantry checkout (no src/tenantry/app.py)")
    try:
        spec = parse_spec(name, list(fields), modules_dir=root / "src" / "tenantry" / "modules")
        written = generate(root, spec)
    except (InvalidSpec, GenerationError) as exc:
        raise click.UsageError(str(exc)) from None
    for path in written:
        click.echo(f"tenantry: wrote {path.relative_to(root)}")


def _tenants_group() -> click.Group:
    from tenantry.modules.tenants.cli import tenants_group

    return tenants_group(_settings)


main.add_command(_tenants_group())

if __name__ == "__main__":
    main()
