"""Engine, sessions, the declarative `Base` and the column mixins every model is built from.

Dialects, one code path: `sqlite+aiosqlite` (embedded default), `postgresql+asyncpg` and
`mariadb+asyncmy` (production). Statements the dialects write differently live in
core/dml.py; migrations add PostgreSQL-only defences (row-level security).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from sqlalchemy import DateTime, ForeignKey, Integer, MetaData, TypeDecorator, Uuid, event, text
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, declared_attr, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry
from uuid_utils.compat import uuid7

from tenantry.config import Settings

if TYPE_CHECKING:
    from tenantry.core.tenantdb import TenantRouting

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_BEGIN_IMMEDIATE = "sqlite_begin_immediate"
# The bind argument (`Session.get_bind(**bind_arguments)`) by which the tenancy listener
# tells the routing that a statement asked to read across organizations (core/tenancy.py
# sets it, core/tenantdb.py `TenantRouting.bind_for` refuses such a read of tenant rows).
ACROSS_TENANTS_BIND = "across_tenants"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Clock:
    """The time plan and trial checks see: the wall clock, unless a test moves it."""

    def __init__(self) -> None:
        self.source: Callable[[], dt.datetime] = utcnow

    def now(self) -> dt.datetime:
        return self.source()


def new_id() -> uuid.UUID:
    """A time-ordered UUIDv7: new rows land at the right edge of the primary-key B-tree."""
    return uuid7()


NAIVE_UTC_DIALECTS = frozenset({"sqlite", "mariadb"})


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite and MariaDB store them naive,
    MariaDB as DATETIME(6): microseconds kept, no time zone conversion)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "mariadb":
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name in NAIVE_UTC_DIALECTS else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        moment: dt.datetime = value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime(), uuid.UUID: Uuid()}


class UUIDPrimaryKey:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id, sort_order=-100)


class Timestamped:
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, sort_order=90)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow, sort_order=91)


class SoftDeletable:
    deleted_at: Mapped[dt.datetime | None] = mapped_column(default=None, sort_order=92)

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class AuditColumns:
    """Who created and last changed a row (a user id; API keys act for their creator)."""

    created_by: Mapped[uuid.UUID | None] = mapped_column(default=None, sort_order=93)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(default=None, sort_order=94)


class Versioned:
    """Optimistic concurrency: every UPDATE is `... WHERE version = :seen`, then bumps it."""

    version: Mapped[int] = mapped_column(Integer, default=1, nullable=False, sort_order=95)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.__table__.c.version}  # type: ignore[attr-defined]


class TenantOwned:
    """Marker + column for rows that belong to one organization.

    The tenancy layer (`core/tenancy.py`) scopes every ORM statement on a subclass to
    the request's organization and stamps `organization_id` on insert.
    """

    @declared_attr
    def organization_id(cls) -> Mapped[uuid.UUID]:
        # A foreign key to the tenant for the product's models. Models on another metadata
        # (the tenancy tests' probe tables) have no `organizations` table to point to.
        if getattr(cls, "metadata", None) is Base.metadata:
            return mapped_column(
                ForeignKey("organizations.id", ondelete="CASCADE"),
                index=False,
                nullable=False,
                sort_order=-90,
            )
        return mapped_column(index=False, nullable=False, sort_order=-90)


class ControlPlane:
    """Marker for a `TenantOwned` model that stays in the control database when each
    organization has a database of its own (`TENANCY_MODE=database`): rows the platform
    reads before it knows the tenant's database, or across organizations (API keys,
    invitations, usage counters). Every other `TenantOwned` model lives in the tenant's
    database; models that are not `TenantOwned` live in the control database.
    """


class Companion:
    """Marker for a `TenantOwned` model whose rows record another change (audit entries):
    in database mode a row goes to the database its transaction changed — the tenant's when
    the transaction wrote tenant-database rows, the control database otherwise — so it
    commits together with the change it records (core/tenantdb.py)."""


# A session event and its listener (`before_flush`, `after_commit`, `do_orm_execute`, ...).
SessionListener = tuple[str, Callable[..., Any]]


T = TypeVar("T")


class Wired(Generic[T]):
    """The typed key of one service in `SessionWiring`, declared once by the module that
    owns the service (`STORAGE: Wired[Storage] = Wired("storage")`)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Wired({self.name!r})"


class SessionWiring:
    """What the sessions of one `Database` (requests and job attempts) can reach.

    `create_app` and `tenantry worker` provide each service once — the mailer binding,
    the storage, the job transport, the list-total cache, the usage store — and the code
    that needs one asks for it by its typed key (`wiring_of(session).get(STORAGE)`):
    visible where it is wired, checked by mypy, no string keys in `session.info`.
    """

    __slots__ = ("_services",)

    def __init__(self) -> None:
        self._services: dict[Wired[Any], Any] = {}

    def provide(self, key: Wired[T], service: T | None) -> None:
        """Make `service` these sessions' `key` (None: none any more)."""
        if service is None:
            self._services.pop(key, None)
        else:
            self._services[key] = service

    def get(self, key: Wired[T]) -> T | None:
        service: T | None = self._services.get(key)
        return service


_UNWIRED = SessionWiring()  # sessions that no Database made (a script's, a library's)


def wiring_of(session: Session | AsyncSession) -> SessionWiring:
    """The wiring of the `Database` whose session this is."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    wiring = getattr(type(sync), "wiring", None)
    return wiring if isinstance(wiring, SessionWiring) else _UNWIRED


class AppSession(Session):
    """The sync session class of tenantry: listeners go on (subclasses of) this class only,
    never on SQLAlchemy's global `Session`, so nothing happens to other sessions of the
    process and nothing depends on what was imported first."""

    # The services of the Database this session class belongs to (`Database.wiring`).
    wiring: ClassVar[SessionWiring] = _UNWIRED
    # Database per tenant (core/tenantdb.py): where tenant-database rows go; None in the
    # default shared mode, where every statement runs on the one engine.
    routing: ClassVar[TenantRouting | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # This transaction wrote rows of the tenant's database (its companions follow).
        self.wrote_tenant_rows = False
        # Made by `Database.session(write=True)` (requests other than GET/HEAD/OPTIONS, job
        # attempts): database per tenant refuses such a session an organization whose
        # database is being restored or moved (core/tenantdb.py `TenantRouting`).
        self.writes = False

    def get_bind(
        self,
        mapper: Any = None,
        *,
        clause: Any = None,
        bind: Any = None,
        **kwargs: Any,
    ) -> Any:
        """The engine of a statement: the bound organization's tenant database for the
        rows that live there (database mode), else the session's own (control) engine."""
        across_tenants = bool(kwargs.pop(ACROSS_TENANTS_BIND, False))
        routing = self.routing
        if routing is not None and bind is None:
            routed = routing.bind_for(self, mapper, clause, across_tenants=across_tenants)
            if routed is not None:
                return routed
        return super().get_bind(mapper, clause=clause, bind=bind, **kwargs)


class AppAsyncSession(AsyncSession):
    sync_session_class = AppSession


class Database:
    """The engine, the session classes and the session factories of one app instance.

    Each instance has session classes of its own, with the listeners of core (tenant
    scoping, RLS, list-total invalidation) registered here, and those of feature modules
    added by whoever builds the app (`listen`, see tenantry/sessions.py).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.database_url
        self.is_sqlite = settings.is_sqlite
        self.engine = _create_engine(settings)
        self.wiring = SessionWiring()  # see SessionWiring; filled by whoever builds the app
        self.sync_session_class: type[AppSession] = type(
            "DatabaseSession", (AppSession,), {"__module__": __name__, "wiring": self.wiring}
        )
        self.session_class: type[AppAsyncSession] = type(
            "DatabaseAsyncSession",
            (AppAsyncSession,),
            {"__module__": __name__, "sync_session_class": self.sync_session_class},
        )
        self._listening: set[SessionListener] = set()
        # tenancy and counts import this module: imported here, when the first one is built.
        from tenantry.core.counts import COUNT_LISTENERS
        from tenantry.core.tenancy import TENANCY_LISTENERS, watch_mappers

        watch_mappers()
        self.listen(TENANCY_LISTENERS)
        self.listen(COUNT_LISTENERS)
        self.sessions = async_sessionmaker(
            self.engine, class_=self.session_class, expire_on_commit=False, autoflush=False
        )
        # SQLite: write transactions start with BEGIN IMMEDIATE so two writers queue on
        # the busy timeout instead of failing with SQLITE_BUSY when upgrading a read lock.
        write_engine = (
            self.engine.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
            if self.is_sqlite
            else self.engine
        )
        self.write_sessions = async_sessionmaker(
            write_engine, class_=self.session_class, expire_on_commit=False, autoflush=False
        )

    def listen(self, listeners: Iterable[SessionListener]) -> None:
        """Register `listeners` on this database's sessions (idempotent)."""
        for name, listener in listeners:
            # Remembered here, not asked of `event.contains`: SQLAlchemy's registry is keyed
            # by id(), and a new class can reuse a collected one's id (seen in the suite).
            if (name, listener) not in self._listening:
                self._listening.add((name, listener))
                event.listen(self.sync_session_class, name, listener)

    def route_tenants(self, routing: TenantRouting) -> None:
        """Database per tenant: this database is the control database, and each bound
        session sends tenant-database rows to its organization's database."""
        self.sync_session_class.routing = routing
        self.listen(routing.listeners())

    @property
    def routing(self) -> TenantRouting | None:
        return self.sync_session_class.routing

    def session(self, *, write: bool = True) -> AsyncSession:
        session = (self.write_sessions if write else self.sessions)()
        sync = session.sync_session
        if isinstance(sync, AppSession):
            sync.writes = write
        return session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction: committed on success, rolled back on error."""
        async with self.session() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


def _create_engine(settings: Settings) -> AsyncEngine:
    if settings.is_sqlite:
        return create_engine_for(settings, settings.database_url, pool_size=5, max_overflow=5)
    if settings.is_mariadb:
        return _create_mariadb_engine(settings)
    return create_engine_for(
        settings,
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
    )


def create_engine_for(
    settings: Settings, url: str, *, pool_size: int, max_overflow: int
) -> AsyncEngine:
    """An engine on `url` (SQLite or PostgreSQL) configured as the app's own: the control
    database's, and each tenant database's in database mode (core/tenantdb.py)."""
    if url.startswith("sqlite"):
        _ensure_sqlite_directory(url)
        engine = create_async_engine(
            url,
            echo=settings.database_echo,
            connect_args={"timeout": 30},
            pool_size=pool_size,
            max_overflow=max_overflow,
        )
        _configure_sqlite(engine)
        return engine
    connect_args: dict[str, Any] = {"server_settings": {"application_name": "tenantry"}}
    if settings.database_app_role:
        # The session's default role, so even RESET ROLE stays on it: a role without
        # BYPASSRLS that owns nothing, so row-level security applies (core/rls.py).
        connect_args["server_settings"]["role"] = settings.database_app_role
    if settings.database_statement_timeout_ms:
        connect_args["server_settings"]["statement_timeout"] = str(
            settings.database_statement_timeout_ms
        )
    engine = create_async_engine(
        url,
        echo=settings.database_echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=settings.database_pool_timeout,
        # No `pool_pre_ping`: it costs a round trip per checkout (measured: the most
        # expensive single statement of a cached read). `_drop_closed_connections`
        # catches what the ping would (a server restart closes the socket, asyncpg
        # marks the connection closed) without leaving the process.
        pool_recycle=1800,
        connect_args=connect_args,
    )
    event.listen(engine.sync_engine, "checkout", _drop_closed_connections)
    install_org_setting_tracking(engine)
    return engine


# Every MariaDB connection: strict SQL mode (errors, not truncation or zero dates; ANSI
# quotes off so SQLAlchemy's backticks stay the only identifier quoting), UTC for NOW()
# and TIMESTAMP conversions, utf8mb4 with its case-insensitive collation, and statements
# cut off after the statement timeout like PostgreSQL's `statement_timeout`.
MARIADB_SQL_MODE = (
    "STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ZERO_DATE,NO_ZERO_IN_DATE,"
    "NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO"
)
MARIADB_CHARSET = "utf8mb4"
MARIADB_COLLATION = "utf8mb4_unicode_520_ci"
# Seconds InnoDB waits for a row lock before error 1205 (mapped to 503, core/errors.py).
MARIADB_LOCK_WAIT_TIMEOUT_S = 10


def mariadb_session_statements(settings: Settings) -> list[str]:
    statements = [
        f"SET NAMES {MARIADB_CHARSET} COLLATE {MARIADB_COLLATION}",
        f"SET SESSION sql_mode = '{MARIADB_SQL_MODE}'",
        "SET SESSION time_zone = '+00:00'",
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        f"SET SESSION innodb_lock_wait_timeout = {MARIADB_LOCK_WAIT_TIMEOUT_S}",
    ]
    if settings.database_statement_timeout_ms:
        seconds = settings.database_statement_timeout_ms / 1000
        statements.append(f"SET SESSION max_statement_time = {seconds:g}")
    return statements


def _create_mariadb_engine(settings: Settings) -> AsyncEngine:
    engine = create_async_engine(
        settings.database_url,
        echo=settings.database_echo,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout,
        # MariaDB closes idle connections after `wait_timeout` (8 h by default); a
        # connection older than this is replaced, and pre-ping catches a restarted server
        # (asyncmy has no cheap "is closed" flag to check as asyncpg has).
        pool_recycle=1800,
        pool_pre_ping=True,
        connect_args={"charset": MARIADB_CHARSET, "autocommit": False},
    )
    statements = mariadb_session_statements(settings)

    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()

    event.listen(engine.sync_engine, "connect", _on_connect)
    return engine


def _drop_closed_connections(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Hand out no connection the server has closed: the pool replaces it instead."""
    raw = getattr(dbapi_connection, "_connection", None)
    if raw is not None and raw.is_closed():
        raise DisconnectionError("connection closed by the server")


def _ensure_sqlite_directory(url: str) -> None:
    path = url.split(":///", 1)[1].split("?", 1)[0] if ":///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the driver so BEGIN is ours (see "begin").
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(SQLITE_BEGIN_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# --- PostgreSQL: the organization setting of a pooled connection ------------------------
#
# Row-level security (core/rls.py) reads `app.org_id`. It is set at *session* level on
# the pooled connection and the value each connection holds is tracked in its pool entry's
# `info` (which SQLAlchemy clears when the DBAPI connection is replaced), so a request of
# the organization the connection last served sends nothing: a read is one round trip.
# The invariants, each guarded by tests/core/test_org_setting.py:
# - every use of a checked-out connection first makes the setting match its user: the
#   tenancy listeners and core/hotreads.py *claim* the connection with their organization
#   (none for an unbound session); any other statement (a raw `engine.connect()`, a job,
#   a migration) on an unclaimed connection first resets the setting to none;
# - a value sent inside a transaction is only *pending* until that transaction commits
#   (a rolled back transaction reverts a session-level `set_config`); a rollback also
#   forgets the committed value (a failed COMMIT looks like a rollback), so the next
#   user sends it again;
# - the platform-wide RLS bypass flag stays transaction-local (core/tenancy.py).

ORG_SETTING_SQL = "SELECT set_config('app.org_id', $1, false)"
_SET_ORG_SETTING = text("SELECT set_config('app.org_id', :org, false)")
_ORG_HELD = "tenantry_org_setting"  # the committed session-level value ("" = none)
_ORG_PENDING = "tenantry_org_setting_pending"  # sent in the open transaction
_CLAIMED = "tenantry_org_setting_claimed"  # this checkout's user has set it


def held_org_setting(info: dict[Any, Any]) -> str | None:
    """The `app.org_id` this connection holds now (None: unknown, must be sent)."""
    if _ORG_PENDING in info:
        pending: str = info[_ORG_PENDING]
        return pending
    held: str | None = info.get(_ORG_HELD)
    return held


def claim_org_setting(connection: Connection, organization: str) -> None:
    """Make `connection`'s `app.org_id` be `organization` ("" for none), sending only if needed.

    `connection` is the sync Connection of a session's transaction (or of an ORM flush).
    """
    info = connection.info
    info[_CLAIMED] = True
    if held_org_setting(info) == organization:
        return
    info.pop(_ORG_PENDING, None)
    info.pop(_ORG_HELD, None)  # unknown until the statement went through
    connection.execute(_SET_ORG_SETTING, {"org": organization})
    if connection.in_transaction():
        info[_ORG_PENDING] = organization
    else:
        info[_ORG_HELD] = organization


def mark_org_setting_sent(info: dict[Any, Any], organization: str) -> None:
    """After `ORG_SETTING_SQL` went through outside a transaction (core/hotreads.py)."""
    info[_CLAIMED] = True
    info.pop(_ORG_PENDING, None)
    info[_ORG_HELD] = organization


def mark_org_setting_claimed(info: dict[Any, Any]) -> None:
    info[_CLAIMED] = True


def forget_org_setting(info: dict[Any, Any]) -> None:
    info.pop(_ORG_PENDING, None)
    info.pop(_ORG_HELD, None)


def install_org_setting_tracking(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine
    event.listen(sync_engine, "connect", _fresh_connection)
    event.listen(sync_engine, "checkout", _new_checkout)
    event.listen(sync_engine, "before_cursor_execute", _reset_unclaimed)
    event.listen(sync_engine, "commit", _committed)
    event.listen(sync_engine, "rollback", _rolled_back)
    event.listen(sync_engine, "rollback_savepoint", _rolled_back_savepoint)
    event.listen(sync_engine, "reset", _pool_reset)


def _fresh_connection(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_ORG_HELD] = ""  # a new server session has no `app.org_id`


def _new_checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    record.info[_CLAIMED] = False


def _reset_unclaimed(
    connection: Connection,
    cursor: Any,
    _statement: str,
    _parameters: Any,
    _context: Any,
    _many: bool,
) -> None:
    """A statement on a connection nobody claimed: it runs with no organization."""
    info = connection.info
    if info.get(_CLAIMED, True):
        return
    info[_CLAIMED] = True
    if held_org_setting(info) == "":
        return
    info.pop(_ORG_PENDING, None)
    info.pop(_ORG_HELD, None)
    # The same DBAPI cursor, before the statement: no event recursion, same transaction.
    cursor.execute(ORG_SETTING_SQL, ("",))
    if connection.in_transaction():
        info[_ORG_PENDING] = ""
    else:
        info[_ORG_HELD] = ""


def _committed(connection: Connection) -> None:
    info = connection.info
    if _ORG_PENDING in info:
        info[_ORG_HELD] = info.pop(_ORG_PENDING)


def _rolled_back(connection: Connection) -> None:
    # An invalidated connection (the server closed it mid-transaction) has no DBAPI
    # connection to ask about: its pool entry's info goes with it when it is replaced.
    if not connection.invalidated:
        forget_org_setting(connection.info)


def _rolled_back_savepoint(connection: Connection, _name: Any, _context: Any) -> None:
    if not connection.invalidated:
        forget_org_setting(connection.info)


def _pool_reset(dbapi_connection: Any, record: Any, _state: Any) -> None:
    """Before the pool's rollback on check-in: only an open transaction is reverted."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is None or driver.is_in_transaction():
        forget_org_setting(record.info)
