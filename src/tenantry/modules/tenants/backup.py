"""Backups of one tenant database with the database's own tools, and the proofs a copy is whole.

- PostgreSQL: `pg_dump --format=custom` (one consistent snapshot while writes continue)
  and `pg_restore --single-transaction --exit-on-error` (all or nothing). The tools are
  found on `PATH`; the connection reaches them through libpq's environment (`PGHOST`,
  `PGPORT`, `PGUSER`, `PGDATABASE`) and a temporary 0600 password file (`PGPASSFILE`),
  never through the command line (which every local user can read in `ps`).
- SQLite: the online backup API (`sqlite3.Connection.backup`) copies the file in one step
  inside one read transaction, so the copy is the state of one moment even while other
  connections write (WAL mode lets them go on meanwhile).

A dump is a local file (`Dump`); `store_backup` streams it into the storage backend under
a server-made key and `load_backup` brings it back (checking the SHA-256 recorded when it
was stored). `restore_database` only ever restores into a *fresh* database — an empty
PostgreSQL database or a SQLite path with no file yet — and refuses anything else: the
caller restores next to the live database and then switches the registry to the copy.

`checksum_tables` proves a move or a restore kept every row: per table the row count and an
order-independent checksum over every column (each row hashed, the hashes summed mod 2^64),
computed inside one snapshot. Checksums compare between databases of the same dialect.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tenantry.core.errors import NotFound
from tenantry.core.storage import Storage, StoredObject, check_key, make_key

Dialect = Literal["postgresql", "sqlite"]

DEFAULT_TOOL_TIMEOUT_SECONDS = 3600.0
CONNECT_TIMEOUT_SECONDS = 10
LOCK_WAIT_TIMEOUT = "60s"  # pg_dump waits this long for its share locks, then fails
STDERR_LIMIT = 4000  # characters of a tool's stderr kept in an error
CHUNK_BYTES = 1024 * 1024
BACKUP_CONTENT_TYPE = "application/octet-stream"
_PG_MAGIC = b"PGDMP"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_EXTENSIONS: dict[Dialect, str] = {"postgresql": "pgdump", "sqlite": "sqlite"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_MOD64 = 1 << 64
# libpq variables that choose the server, the account or its password: ours come from the
# URL only, so a stray one in the process environment cannot redirect a dump or restore.
# The others (PGSSLROOTCERT, PGSSLMODE, PGTZ...) pass through to the tools.
_TARGET_VARIABLES = frozenset(
    {
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGDATABASE",
        "PGUSER",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGOPTIONS",
    }
)
# The sum of each row's first 64 bits of md5(row as text); numeric, so it cannot overflow.
_PG_ROW_HASH_SUM = "coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint::numeric), 0)"


class BackupError(Exception):
    """A backup or restore that did not happen; the message is safe to show an operator
    (it names host, port and database, never a password)."""


class DumpInvalid(BackupError):
    """The dump is absent, truncated, corrupted or of the other dialect."""


class TargetNotFresh(BackupError):
    """The restore target already holds data: restores go into a fresh database only."""


@dataclass(frozen=True)
class Dump:
    """A backup on local disk. The caller owns the file (`discard` removes it)."""

    path: Path
    dialect: Dialect
    size: int
    sha256: str

    @property
    def extension(self) -> str:
        return _EXTENSIONS[self.dialect]

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class TableChecksum:
    rows: int
    checksum: int  # sum of the rows' 64-bit hashes, mod 2^64 (row order does not matter)


# --- URLs ----------------------------------------------------------------------------


def dialect_of(url: str | URL) -> Dialect:
    name = make_url(url).get_backend_name()
    if name == "postgresql":
        return "postgresql"
    if name == "sqlite":
        return "sqlite"
    raise BackupError(f"backups support PostgreSQL and SQLite, not {name}")


def describe(url: str | URL) -> str:
    """`host:port/database` (PostgreSQL) or the file path (SQLite): what errors may name."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or "(memory)"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def _sqlite_path(url: str | URL) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError("a SQLite backup needs a database file path")
    return Path(database)


# --- backup ----------------------------------------------------------------------------


async def backup_database(
    url: str | URL,
    *,
    directory: Path | None = None,
    timeout_seconds: float = DEFAULT_TOOL_TIMEOUT_SECONDS,
) -> Dump:
    """A consistent dump of the database at `url`, written to a new file in `directory`
    (the system's temp directory by default); `BackupError` when it cannot be made."""
    dialect = dialect_of(url)
    target = _new_dump_path(directory, dialect)
    try:
        if dialect == "postgresql":
            await _pg_dump(make_url(url), target, timeout_seconds)
        else:
            await asyncio.wait_for(
                asyncio.to_thread(_sqlite_backup, _sqlite_path(url), target), timeout_seconds
            )
    except BaseException as exc:
        target.unlink(missing_ok=True)
        if isinstance(exc, TimeoutError):
            where = describe(url)
            raise BackupError(f"backup of {where} timed out after {timeout_seconds:g} s") from exc
        raise
    size, digest = await asyncio.to_thread(_file_digest, target)
    return Dump(path=target, dialect=dialect, size=size, sha256=digest)


def _new_dump_path(directory: Path | None, dialect: Dialect) -> Path:
    return _private_file(directory, f"tenantry-{uuid.uuid4().hex}.{_EXTENSIONS[dialect]}")


def _private_file(directory: Path | None, name: str) -> Path:
    """A new, empty file readable by this user only (a dump holds a whole tenant's data);
    the tools and the backup API write into it and keep its mode."""
    folder = directory or Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return path


async def _pg_dump(url: URL, target: Path, timeout_seconds: float) -> None:
    await _run_tool(
        "pg_dump",
        [
            "--format=custom",
            f"--lock-wait-timeout={LOCK_WAIT_TIMEOUT}",
            f"--file={target}",
        ],
        url,
        timeout_seconds,
    )
    if not await asyncio.to_thread(_non_empty_file, target):
        raise BackupError(f"pg_dump of {describe(url)} wrote no file")


def _non_empty_file(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _sqlite_backup(source: Path, target: Path) -> None:
    if not source.is_file():
        raise BackupError(f"no SQLite database at {source}")
    # One step (pages=-1): the whole copy is made inside one read transaction, so it is
    # the state of one moment; writers keep going meanwhile (WAL).
    with (
        contextlib.closing(sqlite3.connect(source, timeout=30)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst, pages=-1)
        _sqlite_check(dst, str(target))


def _sqlite_check(connection: sqlite3.Connection, name: str) -> None:
    try:
        result = connection.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        raise DumpInvalid(f"{name} is not a sound SQLite database: {exc}") from exc
    if result != [("ok",)]:
        problems = "; ".join(str(row[0]) for row in result[:3])
        raise DumpInvalid(f"{name} is not a sound SQLite database: {problems}")


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


# --- restore ---------------------------------------------------------------------------


async def restore_database(
    dump: Dump | Path,
    url: str | URL,
    *,
    privileges: bool = True,
    timeout_seconds: float = DEFAULT_TOOL_TIMEOUT_SECONDS,
) -> None:
    """Restore `dump` into the FRESH database at `url` (an empty PostgreSQL database, or a
    SQLite path where no database exists yet), all or nothing.

    `DumpInvalid` for a missing, corrupted or other-dialect dump and `TargetNotFresh` for
    a target with data, both before the target is touched; a restore that fails midway
    leaves the target as it was (PostgreSQL: one transaction; SQLite: the file appears
    by an atomic link once complete). `privileges=False` leaves out the dump's GRANTs
    (for a server that lacks the roles they name). Objects belong to the restoring user.
    """
    path = dump.path if isinstance(dump, Dump) else Path(dump)
    dialect = dialect_of(url)
    found = await asyncio.to_thread(_dump_dialect, path)
    if found != dialect:
        raise DumpInvalid(f"{path.name} is a {found} dump; {describe(url)} is {dialect}")
    if dialect == "postgresql":
        await _pg_restore(path, make_url(url), privileges, timeout_seconds)
    else:
        publication = _Publication()  # past the timeout, the thread must not publish
        copying = asyncio.ensure_future(
            asyncio.to_thread(_sqlite_restore, path, _sqlite_path(url), publication)
        )
        try:
            await asyncio.wait_for(asyncio.shield(copying), timeout_seconds)
        except TimeoutError as exc:
            if publication.abandon():
                message = f"restore into {describe(url)} timed out after {timeout_seconds:g} s"
                raise BackupError(message) from exc
            await copying  # it was already publishing: the restore is done, not timed out
        except BaseException:
            publication.abandon()
            raise


def _dump_dialect(path: Path) -> Dialect:
    try:
        with path.open("rb") as file:
            head = file.read(len(_SQLITE_MAGIC))
    except FileNotFoundError as exc:
        raise DumpInvalid(f"there is no dump at {path}") from exc
    if head.startswith(_PG_MAGIC):
        return "postgresql"
    if head == _SQLITE_MAGIC:
        return "sqlite"
    raise DumpInvalid(f"{path.name} is neither a pg_dump archive nor a SQLite database")


async def _pg_restore(path: Path, url: URL, privileges: bool, timeout_seconds: float) -> None:
    where = describe(url)
    # The archive's table of contents first: a damaged header fails here, target untouched.
    try:
        await _run_tool("pg_restore", ["--list", str(path)], None, timeout_seconds)
    except BackupError as exc:
        raise DumpInvalid(f"{path.name} is not a readable pg_dump archive: {exc}") from exc
    if not await _postgres_is_empty(url):
        raise TargetNotFresh(f"{where} already holds tables: restore into a fresh database")
    arguments = ["--single-transaction", "--exit-on-error", "--no-owner"]
    if not privileges:
        arguments.append("--no-acl")
    arguments += [f"--dbname={_conninfo_dbname(url.database or 'postgres')}", str(path)]
    await _run_tool("pg_restore", arguments, url, timeout_seconds)


async def _postgres_is_empty(url: URL) -> bool:
    engine = create_async_engine(_async_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            count = await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
                    " AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
                )
            )
    except Exception as exc:
        raise BackupError(f"cannot reach {describe(url)}: {type(exc).__name__}") from exc
    finally:
        await engine.dispose()
    return int(count or 0) == 0


class _Publication:
    """Who decides first: the restoring thread (it publishes the copy) or the caller's
    timeout (nothing may appear). One lock, so a caller told "timed out" never finds the
    database published afterwards, and a copy being published is never reported as failed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._decided: str | None = None

    def claim(self) -> bool:
        """The thread: True if it may publish (the caller has not given up)."""
        with self._lock:
            if self._decided is None:
                self._decided = "publish"
            return self._decided == "publish"

    def abandon(self) -> bool:
        """The caller: True if the thread will not publish."""
        with self._lock:
            if self._decided is None:
                self._decided = "abandon"
            return self._decided == "abandon"


def _sqlite_restore(dump: Path, target: Path, publication: _Publication) -> None:
    with contextlib.closing(sqlite3.connect(f"{dump.resolve().as_uri()}?mode=ro", uri=True)) as src:
        _sqlite_check(src, dump.name)
        if target.exists() and target.stat().st_size > 0:
            raise TargetNotFresh(f"{target} already exists: restore into a fresh database")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.restoring")
        try:
            with contextlib.closing(sqlite3.connect(partial)) as dst:
                src.backup(dst, pages=-1)
            if not publication.claim():
                return
            if target.exists():  # an empty file stands for the fresh database
                target.unlink()
            # A hard link publishes the complete file and fails if another restore got
            # there first (os.replace would silently overwrite it).
            try:
                os.link(partial, target)
            except FileExistsError as exc:
                raise TargetNotFresh(f"{target} appeared during the restore") from exc
        finally:
            partial.unlink(missing_ok=True)


# --- size and checksums -------------------------------------------------------------------


async def database_size_bytes(url: str | URL) -> int:
    """Bytes the database takes on disk: `pg_database_size`, or the SQLite file with its
    write-ahead log."""
    if dialect_of(url) == "sqlite":
        path = _sqlite_path(url)
        if not path.is_file():
            raise BackupError(f"no SQLite database at {path}")
        wal = path.with_name(path.name + "-wal")
        return path.stat().st_size + (wal.stat().st_size if wal.is_file() else 0)
    engine = create_async_engine(_async_url(make_url(url)), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            size = await connection.scalar(text("SELECT pg_database_size(current_database())"))
    finally:
        await engine.dispose()
    return int(size)


async def postgres_database_sizes(
    server_url: str | URL, databases: Sequence[str]
) -> dict[str, int]:
    """`{database: bytes}` for the `databases` of one PostgreSQL server, in one query over
    one connection to `server_url` (any database of that server): what `GET /admin/tenants`
    wants for many tenants at once. Names the server does not have are left out."""
    if dialect_of(server_url) != "postgresql":
        raise BackupError("postgres_database_sizes reads a PostgreSQL server")
    engine = create_async_engine(_async_url(make_url(server_url)), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT datname, pg_database_size(oid) FROM pg_database"
                    " WHERE datname = ANY(:names)"
                ),
                {"names": list(databases)},
            )
            return {str(name): int(size) for name, size in rows}
    finally:
        await engine.dispose()


async def checksum_tables(url: str | URL, tables: Iterable[str]) -> dict[str, TableChecksum]:
    """`{table: TableChecksum(rows, checksum)}` for `tables`, read in one snapshot.

    Each row is hashed over all its columns (PostgreSQL: md5 of the row's text form with
    UTC, ISO dates and exact floats; SQLite: BLAKE2b of the row's values), and the hashes
    are summed mod 2^64, so the figure does not depend on row order but does on every
    value, and a duplicated or a lost row changes it.
    """
    names = [_table_name(table) for table in tables]
    if dialect_of(url) == "sqlite":
        return await asyncio.to_thread(_sqlite_checksums, _sqlite_path(url), names)
    return await _postgres_checksums(make_url(url), names)


def _table_name(table: str) -> str:
    if not _IDENTIFIER.fullmatch(table):
        raise BackupError(f"{table!r} is not a plain table name")
    return table


async def _postgres_checksums(url: URL, tables: Sequence[str]) -> dict[str, TableChecksum]:
    engine = create_async_engine(
        _async_url(url), poolclass=NullPool, isolation_level="REPEATABLE READ"
    )
    result: dict[str, TableChecksum] = {}
    try:
        async with engine.connect() as connection:
            # The row's text form depends on these settings: fix them so two servers agree.
            for setting in (
                "SET LOCAL timezone = 'UTC'",
                "SET LOCAL datestyle = 'ISO, YMD'",
                "SET LOCAL intervalstyle = 'postgres'",
                "SET LOCAL extra_float_digits = 1",
                "SET LOCAL bytea_output = 'hex'",
            ):
                await connection.execute(text(setting))
            for table in tables:
                exists = await connection.scalar(
                    text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f'"{table}"'}
                )
                if not exists:
                    raise BackupError(f"{describe(url)} has no table {table}")
                statement = f'SELECT count(*), {_PG_ROW_HASH_SUM} FROM "{table}" AS t'  # noqa: S608
                row = (await connection.execute(text(statement))).one()
                result[table] = TableChecksum(rows=int(row[0]), checksum=int(row[1]) % _MOD64)
    finally:
        await engine.dispose()
    return result


def _sqlite_checksums(path: Path, tables: Sequence[str]) -> dict[str, TableChecksum]:
    if not path.is_file():
        raise BackupError(f"no SQLite database at {path}")
    result: dict[str, TableChecksum] = {}
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
        connection.execute("BEGIN")  # one snapshot for every table
        try:
            for table in tables:
                found = connection.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
                ).fetchone()
                if found is None:
                    raise BackupError(f"{path} has no table {table}")
                rows = 0
                total = 0
                cursor = connection.execute(f'SELECT * FROM "{table}"')  # noqa: S608 (checked name)
                while batch := cursor.fetchmany(1000):
                    for row in batch:
                        digest = hashlib.blake2b(repr(row).encode(), digest_size=8).digest()
                        total += int.from_bytes(digest, "big")
                        rows += 1
                result[table] = TableChecksum(rows=rows, checksum=total % _MOD64)
        finally:
            connection.rollback()
    return result


# --- storage -----------------------------------------------------------------------------


async def store_backup(storage: Storage, dump: Dump, *, organization_id: uuid.UUID) -> StoredObject:
    """Stream `dump` into storage under `orgs/<orgId>/backups/<uuid7>.<pgdump|sqlite>`.

    The caller records the returned object as a file of the organization (e.g.
    `files.service.add_stored_file`, content type `BACKUP_CONTENT_TYPE`), which makes it
    listable and downloadable like an export.
    """
    key = make_key("orgs", str(organization_id), "backups", extension=dump.extension)
    stored = await storage.put(key, _read_chunks(dump.path), content_type=BACKUP_CONTENT_TYPE)
    if stored.sha256 != dump.sha256:  # the file changed under us: keep nothing
        await storage.delete(key)
        raise BackupError("the dump changed while it was being stored")
    return stored


async def load_backup(
    storage: Storage,
    key: str,
    *,
    expected_sha256: str | None = None,
    directory: Path | None = None,
) -> Dump:
    """Bring the stored backup `key` back to a local file, checked against
    `expected_sha256` (the digest recorded when it was stored) when given.

    `DumpInvalid` when the object is absent, of neither dialect, or its bytes differ.
    """
    check_key(key)
    try:
        stream = await storage.get(key)
    except NotFound as exc:
        raise DumpInvalid(f"there is no stored backup {key}") from exc
    path = _private_file(directory, f"tenantry-{uuid.uuid4().hex}.restore")
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("wb") as file:
            async for chunk in stream:
                digest.update(chunk)
                size += len(chunk)
                await asyncio.to_thread(file.write, chunk)
        if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
            raise DumpInvalid(f"stored backup {key} does not match its recorded SHA-256")
        dialect = await asyncio.to_thread(_dump_dialect, path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Dump(path=path, dialect=dialect, size=size, sha256=digest.hexdigest())


async def _read_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
            yield chunk


# --- the PostgreSQL tools -------------------------------------------------------------------


def _async_url(url: URL) -> URL:
    return url.set(drivername="postgresql+asyncpg")


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not on PATH (install the PostgreSQL client tools)")
    return found


async def _run_tool(
    name: str, arguments: list[str], url: URL | None, timeout_seconds: float
) -> None:
    """Run a libpq tool with the connection in its environment; `BackupError` with its
    stderr (secrets removed) when it fails or outlives `timeout_seconds`."""
    executable = _tool(name)
    env = {key: value for key, value in os.environ.items() if key not in _TARGET_VARIABLES}
    env["PGCONNECT_TIMEOUT"] = str(CONNECT_TIMEOUT_SECONDS)
    env["PGAPPNAME"] = f"tenantry-{name}"
    secrets: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tenantry-pg-") as scratch:
        if url is not None:
            env.update(_libpq_environment(url))
            if url.password:
                password = str(url.password)
                secrets.append(password)
                env["PGPASSFILE"] = _write_passfile(Path(scratch), password)
        process = await asyncio.create_subprocess_exec(
            executable,
            *arguments,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            _out, err = await asyncio.wait_for(process.communicate(), timeout_seconds)
        except BaseException as exc:  # timeout or cancellation: the tool must not live on
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            if isinstance(exc, TimeoutError):
                where = describe(url) if url is not None else "the archive"
                message = f"{name} on {where} timed out after {timeout_seconds:g} s"
                raise BackupError(message) from exc
            raise
    if process.returncode != 0:
        message = err.decode("utf-8", "replace").strip()[-STDERR_LIMIT:]
        for secret in secrets:
            message = message.replace(secret, "***")
        where = f" on {describe(url)}" if url is not None else ""
        raise BackupError(f"{name}{where} failed (exit {process.returncode}): {message}")


def _libpq_environment(url: URL) -> dict[str, str]:
    env = {
        "PGHOST": url.host or "localhost",
        "PGPORT": str(url.port or 5432),
        "PGDATABASE": url.database or "postgres",
    }
    if url.username:
        env["PGUSER"] = url.username
    sslmode = url.query.get("sslmode") or url.query.get("ssl")
    if isinstance(sslmode, str):
        env["PGSSLMODE"] = sslmode
    return env


def _conninfo_dbname(database: str) -> str:
    """`dbname='...'`: a name containing `=` would otherwise be read as a conninfo string."""
    quoted = database.replace("\\", "\\\\").replace("'", "\\'")
    return f"dbname='{quoted}'"


def _write_passfile(folder: Path, password: str) -> str:
    """A libpq password file (0600, removed with `folder`) matching any host and database."""
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    path = folder / "pgpass"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(f"*:*:*:*:{escaped}\n")
    return str(path)
