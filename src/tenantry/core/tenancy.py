"""The tenant context and the automatic scoping of every ORM statement.

A session is either *bound* to one `TenantContext` (`bind_tenant`) or *unbound* (the
default). Three session listeners make isolation structural:

- `do_orm_execute`: every ORM SELECT/UPDATE/DELETE gets, through `with_loader_criteria`
  (which also reaches joins, relationship loads and eager loads), `organization_id = :org`
  on each `TenantOwned` entity and `deleted_at IS NULL` on those that are also
  `SoftDeletable`. On an unbound session a statement touching a `TenantOwned` model
  raises `TenantScopeError` — reads included (docs/decisions.md says why).
- `before_flush`: inserts of `TenantOwned` rows are stamped with the organization and
  `created_by`/`updated_by`, updates with `updated_by`; a write with no context, or of
  another organization's row, raises.
- on PostgreSQL, the bound organization (or none, unbound) is also handed to the
  database for the row-level security policies of `core/rls.py`: at session level on
  the pooled connection, sent only when the connection holds another value
  (`core/db.py`, "the organization setting of a pooled connection").

Execution options: `include_deleted=True` keeps soft-deleted rows (trash, restore).
`all_tenants=True` drops the organization criteria: the one escape hatch, for platform
admin code only (tests/test_architecture.py enforces where it may appear). It reads one
database: with a database per tenant, an unbound read of tenant rows with it is refused
(core/tenantdb.py `TenantRouting.bind_for`); such reads go through `TenantReads`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, Uuid, bindparam, event, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, with_loader_criteria
from sqlalchemy.orm.interfaces import ORMOption

from tenantry.core.db import (
    ACROSS_TENANTS_BIND,
    AuditColumns,
    SoftDeletable,
    TenantOwned,
    claim_org_setting,
)

INCLUDE_DELETED = "include_deleted"
ALL_TENANTS = "all_tenants"

_TENANT_KEY = "tenant_context"
_RLS_PENDING_KEY = "tenant_rls_pending"
_SET_ALL_TENANTS = text("SELECT set_config('app.all_tenants', :flag, true)")


class TenantScopeError(RuntimeError):
    """A programming error: tenant data touched without (or outside) the bound context."""


@dataclass(frozen=True, slots=True)
class TenantContext:
    """Who acts, in which organization, with which permissions (resolved once per request)."""

    organization_id: uuid.UUID
    user_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    role: str | None = None
    permissions: frozenset[str] = frozenset()
    plan: str | None = None
    # The organization's plan state (modules/plans/state.py `Subscription`; typed `object`
    # because core does not import feature modules: read it with plans' `subscription_of`).
    subscription: object | None = None

    @property
    def actor_id(self) -> uuid.UUID | None:
        """The user written to `created_by`/`updated_by` (an API key acts for its creator)."""
        return self.user_id

    @classmethod
    def system(
        cls, organization_id: uuid.UUID, *, acting_user_id: uuid.UUID | None = None
    ) -> TenantContext:
        """The context of work the platform does for an organization (a background job)."""
        return cls(organization_id=organization_id, user_id=acting_user_id)


def bind_tenant(session: Session | AsyncSession, context: TenantContext) -> None:
    """Scope every later statement and write of `session` to `context`'s organization.

    Binding again to the same organization replaces the context (e.g. a refined principal);
    binding to another organization raises: one session never serves two tenants.
    """
    info = session.info
    current: TenantContext | None = info.get(_TENANT_KEY)
    if current is not None and current.organization_id != context.organization_id:
        raise TenantScopeError("session already bound to another organization")
    info[_TENANT_KEY] = context
    if current is None:
        _forget_other_tenants_rows(session, context.organization_id)
        if session.in_transaction():
            info[_RLS_PENDING_KEY] = True  # the transaction began unbound: tell PostgreSQL


def _forget_other_tenants_rows(session: Session | AsyncSession, organization_id: uuid.UUID) -> None:
    # `session.get()` answers from the identity map without SQL: rows loaded before binding
    # (e.g. with all_tenants) must not be found there afterwards.
    for obj in list(session.identity_map.values()):
        if isinstance(obj, TenantOwned):
            loaded = inspect(obj).dict.get("organization_id")
            if loaded != organization_id:
                session.expunge(obj)


def unbind_tenant(session: Session | AsyncSession) -> None:
    """Back to the unbound state: tenant data becomes unreachable again."""
    if session.info.pop(_TENANT_KEY, None) is not None and session.in_transaction():
        session.info[_RLS_PENDING_KEY] = True


def tenant_of(session: Session | AsyncSession) -> TenantContext | None:
    context: TenantContext | None = session.info.get(_TENANT_KEY)
    return context


def require_tenant(session: Session | AsyncSession) -> TenantContext:
    context = tenant_of(session)
    if context is None:
        raise TenantScopeError("no tenant context bound to this session")
    return context


# --- automatic criteria ---------------------------------------------------------------


_SOFT_DELETE_TARGETS: list[tuple[type[Any], ...]] = []


def _soft_deletable_tenant_models() -> tuple[type[Any], ...]:
    """Every mapped class that is both `TenantOwned` and `SoftDeletable` (computed once)."""
    if not _SOFT_DELETE_TARGETS:
        found: list[type[Any]] = []
        stack: list[type[Any]] = list(TenantOwned.__subclasses__())
        while stack:
            cls = stack.pop()
            stack.extend(cls.__subclasses__())
            if issubclass(cls, SoftDeletable) and inspect(cls, raiseerr=False) is not None:
                found.append(cls)
        _SOFT_DELETE_TARGETS.append(tuple(found))
    return _SOFT_DELETE_TARGETS[0]


def _models_changed(*_args: Any) -> None:
    _SOFT_DELETE_TARGETS.clear()
    _tenant_options.cache_clear()
    _not_deleted_options.cache_clear()


@lru_cache(maxsize=4096)
def _tenant_options(organization_id: uuid.UUID, include_deleted: bool) -> tuple[ORMOption, ...]:
    # Built once per (organization, include_deleted) and reused by every statement. The
    # lambda's closure value becomes a bound parameter: the compiled SQL is shared by all
    # organizations.
    scope = with_loader_criteria(
        TenantOwned, lambda cls: cls.organization_id == organization_id, include_aliases=True
    )
    return (scope, *_not_deleted_options(include_deleted))


@lru_cache(maxsize=2)
def _not_deleted_options(include_deleted: bool) -> tuple[ORMOption, ...]:
    if include_deleted:
        return ()
    return tuple(
        with_loader_criteria(model, lambda cls: cls.deleted_at.is_(None), include_aliases=True)
        for model in _soft_deletable_tenant_models()
    )


_tenant_mapper_cache: dict[Mapper[Any], bool] = {}


def _is_tenant_mapper(mapper: Mapper[Any]) -> bool:
    known = _tenant_mapper_cache.get(mapper)
    if known is None:
        known = _tenant_mapper_cache[mapper] = issubclass(mapper.class_, TenantOwned)
    return known


def _touches_tenant_rows(state: ORMExecuteState) -> bool:
    return any(_is_tenant_mapper(mapper) for mapper in state.all_mappers)


def _scope_statement(state: ORMExecuteState) -> Any:
    session = state.session
    info = session.info
    if info.get(_RLS_PENDING_KEY):
        _send_org_to_database(session)
    if state.is_column_load or not (state.is_select or state.is_update or state.is_delete):
        if state.is_insert:
            _check_bulk_insert(state)
        return None
    if state.is_relationship_load and _carries_tenant_scope(state.statement):
        return None  # the parent statement's criteria propagated to this load already
    options = state.execution_options
    context: TenantContext | None = info.get(_TENANT_KEY)
    include_deleted = bool(options.get(INCLUDE_DELETED, False))
    if options.get(ALL_TENANTS, False):
        # Told to the routing too: in database mode a tenant table's rows are in each
        # organization's own database, which an unbound read cannot reach (it refuses).
        state.bind_arguments[ACROSS_TENANTS_BIND] = True
        state.statement = state.statement.options(*_not_deleted_options(include_deleted))
        return _run_across_tenants(state)
    if context is None:
        if _touches_tenant_rows(state):
            raise TenantScopeError(
                "tenant-owned rows queried on a session with no tenant context "
                "(bind_tenant first; platform admin code may use all_tenants)"
            )
        return None
    state.statement = state.statement.options(
        *_tenant_options(context.organization_id, include_deleted)
    )
    return None


def _carries_tenant_scope(statement: Any) -> bool:
    return any(
        getattr(option, "root_entity", None) is TenantOwned
        for option in getattr(statement, "_with_options", ())
    )


def _run_across_tenants(state: ORMExecuteState) -> Any:
    """Run the statement with the RLS bypass on, then switch it off again."""
    session = state.session
    if session.get_bind().dialect.name != "postgresql":
        return None
    connection = session.connection()
    connection.execute(_SET_ALL_TENANTS, {"flag": "on"})
    result = state.invoke_statement()
    if state.execution_options.get("stream_results", False):
        return result  # rows still to come: the bypass stays on for this transaction
    frozen = result.freeze()  # asyncpg has fetched every row: switch the bypass off again
    connection.execute(_SET_ALL_TENANTS, {"flag": "off"})
    return frozen()


def _check_bulk_insert(state: ORMExecuteState) -> None:
    """`execute(insert(Model), rows)`: each row dict is stamped in place, like a flush."""
    if not _touches_tenant_rows(state):
        return
    context: TenantContext | None = state.session.info.get(_TENANT_KEY)
    if context is None:
        raise TenantScopeError("tenant-owned rows inserted with no tenant context")
    statement: Any = state.statement
    if getattr(statement, "_values", None) or getattr(statement, "_multi_values", None):
        raise TenantScopeError(
            "insert(...).values() on a tenant-owned model is not stamped: use session.add() "
            "or session.execute(insert(Model), [rows])"
        )
    rows = state.parameters
    if rows is None:
        raise TenantScopeError("insert of a tenant-owned model without rows")
    model = state.bind_mapper.class_ if state.bind_mapper is not None else None
    audited = model is not None and issubclass(model, AuditColumns)
    for row in [rows] if isinstance(rows, dict) else rows:
        _stamp_row(row, context, audited)


def _stamp_row(row: Any, context: TenantContext, audited: bool) -> None:
    organization_id = row.setdefault("organization_id", context.organization_id)
    if organization_id != context.organization_id:
        raise TenantScopeError("row inserted for another organization than the bound one")
    if audited and context.actor_id is not None:
        row.setdefault("created_by", context.actor_id)
        row.setdefault("updated_by", context.actor_id)


# --- reads outside the ORM: the same scope, built by one function --------------------

SCOPE_ORG_PARAM = "scope_org"


@dataclass(frozen=True, slots=True)
class ScopedRead:
    """A Core SELECT whose every tenant table is scoped; only `scoped_select` makes one.

    The organization is the bound parameter `scope_org`, which the executor
    (`core/hotreads.py`) fills from the session's bound `TenantContext` — never from the
    caller — so a statement shared by all organizations cannot run unscoped.
    """

    statement: Select[Any]
    tables: tuple[str, ...]
    model: type[Any] | None = (
        None  # the model read (its database in database mode: core/tenantdb.py)
    )


def scoped_select(
    model: type[TenantOwned],
    *,
    joins: tuple[tuple[type[TenantOwned], ColumnElement[bool]], ...] = (),
    where: tuple[ColumnElement[bool], ...] = (),
) -> ScopedRead:
    """`SELECT model.* FROM model JOIN ...` with `organization_id = :scope_org` and
    `deleted_at IS NULL` on the model and on every joined model — the criteria
    `_scope_statement` adds to ORM statements, for the hot reads that skip the ORM.
    """
    table = _tenant_table(model)
    criteria: list[ColumnElement[bool]] = [*_table_scope(model)]
    source: Any = table
    for joined, onclause in joins:
        source = source.join(_tenant_table(joined), onclause)
        criteria.extend(_table_scope(joined))
    statement = select(*table.c).select_from(source).where(*criteria, *where)
    return ScopedRead(statement, (table.name, *(_tenant_table(m).name for m, _ in joins)), model)


def _tenant_table(model: type[Any]) -> Table:
    if not (isinstance(model, type) and issubclass(model, TenantOwned)):
        raise TenantScopeError(f"{model!r} is not a tenant-owned model")
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


def _table_scope(model: type[TenantOwned]) -> list[ColumnElement[bool]]:
    table = _tenant_table(model)
    criteria = [table.c.organization_id == bindparam(SCOPE_ORG_PARAM, type_=Uuid())]
    if issubclass(model, SoftDeletable):
        criteria.append(table.c.deleted_at.is_(None))
    return criteria


# --- writes ---------------------------------------------------------------------------


def _stamp_and_check_writes(session: Session, _flush_context: Any, _instances: Any) -> None:
    context: TenantContext | None = session.info.get(_TENANT_KEY)
    for obj in session.new:
        if isinstance(obj, TenantOwned):
            _check_insert(obj, context)
    for obj in session.dirty:
        if isinstance(obj, TenantOwned) and session.is_modified(obj):
            own = _check_owned(obj, context, "updated")
            if isinstance(obj, AuditColumns) and own.actor_id is not None:
                obj.updated_by = own.actor_id
    for obj in session.deleted:
        if isinstance(obj, TenantOwned):
            _check_owned(obj, context, "deleted")
    if session.info.get(_RLS_PENDING_KEY):
        _send_org_to_database(session)


def _check_insert(obj: TenantOwned, context: TenantContext | None) -> None:
    if context is None:
        raise TenantScopeError(f"{type(obj).__name__} inserted with no tenant context")
    current = obj.organization_id
    if current is None:
        obj.organization_id = context.organization_id
    elif current != context.organization_id:
        raise TenantScopeError(f"{type(obj).__name__} inserted for another organization")
    if isinstance(obj, AuditColumns) and context.actor_id is not None:
        if obj.created_by is None:
            obj.created_by = context.actor_id
        if obj.updated_by is None:
            obj.updated_by = context.actor_id


def _check_owned(obj: TenantOwned, context: TenantContext | None, verb: str) -> TenantContext:
    if context is None:
        raise TenantScopeError(f"{type(obj).__name__} {verb} with no tenant context")
    if obj.organization_id != context.organization_id:
        raise TenantScopeError(f"{type(obj).__name__} of another organization {verb}")
    return context


# --- PostgreSQL: the context for row-level security ------------------------------------


def _after_begin(session: Session, _transaction: Any, connection: Any) -> None:
    session.info.pop(_RLS_PENDING_KEY, None)
    if connection.dialect.name != "postgresql":
        return
    claim_org_setting(connection, _org_setting(session))


def _send_org_to_database(session: Session) -> None:
    session.info.pop(_RLS_PENDING_KEY, None)
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return
    claim_org_setting(connection, _org_setting(session))


def _org_setting(session: Session) -> str:
    """The `app.org_id` this session's statements must run with ("" for none)."""
    context: TenantContext | None = session.info.get(_TENANT_KEY)
    return str(context.organization_id) if context is not None else ""


# Registered by every `Database` on its own session class (core/db.py).
TENANCY_LISTENERS = (
    ("do_orm_execute", _scope_statement),
    ("before_flush", _stamp_and_check_writes),
    ("after_begin", _after_begin),
)


def watch_mappers() -> None:
    """Recompute the tenant-owned mappers when a model is mapped later (idempotent)."""
    if not event.contains(Mapper, "after_mapper_constructed", _models_changed):
        event.listen(Mapper, "after_mapper_constructed", _models_changed)


__all__ = [
    "ALL_TENANTS",
    "INCLUDE_DELETED",
    "SCOPE_ORG_PARAM",
    "TENANCY_LISTENERS",
    "ScopedRead",
    "TenantContext",
    "TenantScopeError",
    "bind_tenant",
    "require_tenant",
    "scoped_select",
    "tenant_of",
    "unbind_tenant",
    "watch_mappers",
]
