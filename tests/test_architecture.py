"""Architecture lints: the conventions that keep isolation and the unit of work structural.

Each rule is a function over a source tree, run on `src/tenantry` and, to prove it can
fail, on small synthetic trees.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

SRC = Path(__file__).resolve().parent.parent / "src" / "tenantry"

Rule = Callable[[Path], list[str]]


def python_files(root: Path) -> Iterator[tuple[str, str]]:
    """(path relative to the package root with forward slashes, source) for every file."""
    for path in sorted(root.rglob("*.py")):
        yield path.relative_to(root).as_posix(), path.read_text(encoding="utf-8")


def imported_modules(source: str) -> Iterator[str]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def is_router_file(relative: str) -> bool:
    return relative.startswith("modules/") and (
        relative.endswith("/router.py") or "/routers/" in relative
    )


# --- rules --------------------------------------------------------------------------

ALL_TENANTS = re.compile(r"\ball_tenants\b|\bALL_TENANTS\b")
ALL_TENANTS_ALLOWED = ("modules/admin/", "core/jobs/", "migrations/")
ALL_TENANTS_ALLOWED_FILES = ("core/tenancy.py", "core/tenantdb.py", "core/rls.py", "core/jobs.py")


def all_tenants_only_in_platform_admin_code(root: Path) -> list[str]:
    """The escape hatch from tenant scoping appears only where platform-wide work lives."""
    return [
        f"{relative}: all_tenants outside modules/admin/"
        for relative, source in python_files(root)
        if ALL_TENANTS.search(source)
        and not relative.startswith(ALL_TENANTS_ALLOWED)
        and relative not in ALL_TENANTS_ALLOWED_FILES
    ]


COMMIT = re.compile(r"\.commit\(")


def no_commit_in_modules(root: Path) -> list[str]:
    """Services flush; the unit of work (core/routing.py, the job runner) commits once."""
    return [
        f"{relative}: .commit() in a feature module"
        for relative, source in python_files(root)
        if relative.startswith("modules/") and COMMIT.search(source)
    ]


HTTP_EXCEPTION = re.compile(r"\bHTTPException\b")


def http_exception_only_in_routers(root: Path) -> list[str]:
    """Feature code raises AppError subclasses; HTTP is the routers' (and core's) business."""
    return [
        f"{relative}: HTTPException outside a router"
        for relative, source in python_files(root)
        if relative.startswith("modules/")
        and not is_router_file(relative)
        and HTTP_EXCEPTION.search(source)
    ]


SESSION_CALL = re.compile(
    r"\bsession\.(execute|scalars?|get|add|add_all|delete|flush|refresh|merge|commit|rollback)\("
)


def routers_do_not_touch_the_database(root: Path) -> list[str]:
    """Routers parse, authorize, call a service: no query, no SQLAlchemy."""
    problems = []
    for relative, source in python_files(root):
        if not is_router_file(relative):
            continue
        if any(module.split(".")[0] == "sqlalchemy" for module in imported_modules(source)):
            problems.append(f"{relative}: a router imports sqlalchemy")
        if SESSION_CALL.search(source):
            problems.append(f"{relative}: a router uses the session itself")
    return problems


def core_does_not_import_modules(root: Path) -> list[str]:
    """Dependencies point one way: modules → core, never back."""
    return [
        f"{relative}: core imports {module}"
        for relative, source in python_files(root)
        if relative.startswith("core/")
        for module in imported_modules(source)
        if module.startswith(("tenantry.modules", "tenantry.app"))
    ]


ROUTER_MODULE = re.compile(r"^tenantry\.modules\.\w+\.(router|routers)\b")


def nothing_imports_a_router_but_the_app(root: Path) -> list[str]:
    """A service never imports a router; only app.py wires routers in."""
    return [
        f"{relative}: imports {module}"
        for relative, source in python_files(root)
        if relative != "app.py" and not is_router_file(relative)
        for module in imported_modules(source)
        if ROUTER_MODULE.match(module)
    ]


HOT_READ_MACHINERY = ("core/hotreads.py", "core/tenancy.py", "core/db.py")
HAND_BUILT_SCOPE = re.compile(r"\borganization_id\b|\bdeleted_at\b|\bSCOPE_ORG_PARAM\b|scope_org")
RAW_DRIVER = re.compile(r"\bdriver_connection\b|\bget_raw_connection\b|\bScopedRead\(")


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name):
            return func.id
        if isinstance(func, ast.Attribute):
            return func.attr
    return None


def hot_reads_are_scoped_by_tenancy(root: Path) -> list[str]:
    """A read that skips the ORM criteria gets its scope from `scoped_select`, only.

    Every `HotRead(...)` wraps a `scoped_select(...)` call written in place, which names
    neither `organization_id` nor `deleted_at` (no hand-built, partial or missing scope);
    nothing outside the machinery reaches the raw driver connection or builds a
    `ScopedRead` itself.
    """
    found: list[str] = []
    for relative, source in python_files(root):
        if relative in HOT_READ_MACHINERY:
            continue
        if RAW_DRIVER.search(source):
            found.append(f"{relative}: raw driver access or a hand-made ScopedRead")
        for node in ast.walk(ast.parse(source)):
            if _call_name(node) != "HotRead":
                continue
            assert isinstance(node, ast.Call)
            inner = node.args[0] if len(node.args) == 1 and not node.keywords else None
            if inner is None or _call_name(inner) != "scoped_select":
                found.append(f"{relative}:{node.lineno}: HotRead not built by scoped_select")
            elif HAND_BUILT_SCOPE.search(ast.unparse(inner)):
                found.append(f"{relative}:{node.lineno}: hot read filters the scope by hand")
    return found


GLOBAL_SESSION_LISTENER = re.compile(
    r"event\.(?:listen|listens_for|contains)\(\s*(?:orm\.)?(?:Async)?Session\b"
)


def no_listener_on_the_global_session(root: Path) -> list[str]:
    """Session listeners go on our session classes (core/db.py `Database.listen`)."""
    return [
        f"{relative}: a listener on SQLAlchemy's global Session"
        for relative, source in python_files(root)
        if GLOBAL_SESSION_LISTENER.search(source)
    ]


SESSION_INFO_KEY = re.compile(r"\.info(?:\[|\.get\(|\.setdefault\(|\.pop\()\s*([^,\])\s]+)")
# The string keys still carried in `session.info`, each with why it stays (a new one fails:
# pass a typed parameter, or provide a service through `Database.wiring`, instead).
SESSION_INFO_ALLOWED: dict[tuple[str, str], str] = {
    ("core/counts.py", "_WRITTEN"): "organizations written in this transaction (listener state)",
    ("core/db.py", "_ORG_HELD"): "the pooled connection's app.org_id (connection record info)",
    ("core/db.py", "_CLAIMED"): "whether this checkout set app.org_id (connection record info)",
    ("core/jobs/session.py", '"after_commit"'): "the job's unit of work (same as requests)",
    ("core/jobs/session.py", '"job_id"'): "the running job, read by its enqueues",
    ("core/routing.py", '"after_commit"'): "callbacks run after the unit of work commits",
    ("core/routing.py", '"after_rollback"'): "callbacks run when it rolls back",
    ("core/tenancy.py", "_TENANT_KEY"): "the bound tenant context (read by the listeners)",
    ("core/tenancy.py", "_RLS_PENDING_KEY"): "the RLS setting to send with the next flush",
    ("modules/audit/service.py", "_REQUEST_KEY"): "request metadata stamped on audit entries",
    ("modules/plans/usage.py", "_PENDING_RECORDS"): "records counted once committed",
}


def no_new_session_info_keys(root: Path) -> list[str]:
    """Cross-cutting state in `session.info` stays within the allow-list above."""
    return [
        f"{relative}: session.info key {key} is not allowed"
        for relative, source in python_files(root)
        for key in SESSION_INFO_KEY.findall(source)
        if (relative, key) not in SESSION_INFO_ALLOWED
    ]


RULES: list[Rule] = [
    all_tenants_only_in_platform_admin_code,
    no_commit_in_modules,
    http_exception_only_in_routers,
    routers_do_not_touch_the_database,
    core_does_not_import_modules,
    nothing_imports_a_router_but_the_app,
    hot_reads_are_scoped_by_tenancy,
    no_listener_on_the_global_session,
    no_new_session_info_keys,
]


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_source_tree_follows(rule: Rule) -> None:
    assert rule(SRC) == []


# --- the rules can fail -------------------------------------------------------------


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for relative, source in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return tmp_path


UNSCOPED_QUERY = "rows = await session.execute(stmt.execution_options(all_tenants=True))\n"


def test_all_tenants_outside_admin_is_caught(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "modules/admin/service.py": UNSCOPED_QUERY,
            "modules/projects/service.py": UNSCOPED_QUERY,
            "modules/tasks/service.py": "opts = {ALL_TENANTS: True}\n",
            "core/cache.py": "# all_tenants\n",
        },
    )
    assert all_tenants_only_in_platform_admin_code(root) == [
        "core/cache.py: all_tenants outside modules/admin/",
        "modules/projects/service.py: all_tenants outside modules/admin/",
        "modules/tasks/service.py: all_tenants outside modules/admin/",
    ]


def test_unscoped_or_hand_scoped_hot_reads_are_caught(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "modules/good/service.py": "R = HotRead(scoped_select(M, where=(t.c.id == p,)))\n",
            "modules/bare/service.py": "R = HotRead(select(t).where(t.c.id == p))\n",
            "modules/own/service.py": (
                "R = HotRead(scoped_select(M, where=(t.c.organization_id == o,)))\n"
            ),
            "modules/raw/service.py": "rows = await (await c.get_raw_connection()).fetch(q)\n",
            "modules/fake/service.py": "R = HotRead(ScopedRead(select(t), ('t',)))\n",
        },
    )
    assert hot_reads_are_scoped_by_tenancy(root) == [
        "modules/bare/service.py:1: HotRead not built by scoped_select",
        "modules/fake/service.py: raw driver access or a hand-made ScopedRead",
        "modules/fake/service.py:1: HotRead not built by scoped_select",
        "modules/own/service.py:1: hot read filters the scope by hand",
        "modules/raw/service.py: raw driver access or a hand-made ScopedRead",
    ]


def test_a_listener_on_the_global_session_is_caught(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "core/db.py": "event.listen(self.sync_session_class, 'before_flush', f)\n",
            "core/counts.py": "event.listen(Session, 'after_commit', f)\n",
            "modules/audit/models.py": "@event.listens_for(Session, 'before_flush')\n",
        },
    )
    assert no_listener_on_the_global_session(root) == [
        "core/counts.py: a listener on SQLAlchemy's global Session",
        "modules/audit/models.py: a listener on SQLAlchemy's global Session",
    ]


def test_a_new_session_info_key_is_caught(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "core/routing.py": 'session.info.setdefault("after_commit", [])\n',
            "modules/tasks/service.py": 'session.info["tasks_seen"] = seen\n',
            "core/tenancy.py": "ctx = session.info.get(_OTHER_KEY)\n",
        },
    )
    assert no_new_session_info_keys(root) == [
        "core/tenancy.py: session.info key _OTHER_KEY is not allowed",
        'modules/tasks/service.py: session.info key "tasks_seen" is not allowed',
    ]


def test_commit_in_a_module_is_caught(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "modules/projects/service.py": "await session.commit()\n",
            "core/routing.py": "await session.commit()\n",
        },
    )
    assert no_commit_in_modules(root) == [
        "modules/projects/service.py: .commit() in a feature module"
    ]


def test_http_exception_in_a_service_is_caught(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "modules/projects/service.py": "from fastapi import HTTPException\n",
            "modules/projects/router.py": "from fastapi import HTTPException\n",
        },
    )
    assert http_exception_only_in_routers(root) == [
        "modules/projects/service.py: HTTPException outside a router"
    ]


def test_query_in_a_router_is_caught(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "modules/projects/router.py": (
                "from sqlalchemy import select\nrows = await session.scalars(select(X))\n"
            ),
            "modules/projects/service.py": "from sqlalchemy import select\n",
        },
    )
    assert routers_do_not_touch_the_database(root) == [
        "modules/projects/router.py: a router imports sqlalchemy",
        "modules/projects/router.py: a router uses the session itself",
    ]


def test_wrong_way_imports_are_caught(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "core/jobs.py": "from tenantry.modules.projects import service\n",
            "modules/tasks/service.py": "from tenantry.modules.projects.router import router\n",
            "app.py": "from tenantry.modules.projects.router import router\n",
        },
    )
    assert core_does_not_import_modules(root) == [
        "core/jobs.py: core imports tenantry.modules.projects",
        "core/jobs.py: core imports tenantry.modules.projects.service",
    ]
    assert nothing_imports_a_router_but_the_app(root) == [
        "modules/tasks/service.py: imports tenantry.modules.projects.router",
        "modules/tasks/service.py: imports tenantry.modules.projects.router.router",
    ]


def _sync_callables(app: Any) -> list[str]:
    """Route endpoints and dependencies written as plain `def` (FastAPI threads those)."""

    def is_async(call: Any) -> bool:
        return any(
            inspect.iscoroutinefunction(c) or inspect.isasyncgenfunction(c)
            for c in (call, getattr(call, "__call__", None))  # noqa: B004 - dependency objects
        )

    found: set[str] = set()

    def walk(dependant: Dependant, path: str) -> None:
        for sub in dependant.dependencies:
            if sub.call is not None and not is_async(sub.call):
                found.add(f"{path}: {getattr(sub.call, '__qualname__', sub.call)}")
            walk(sub, path)

    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute):
            walk(route.dependant, route.path_format)
            if not is_async(route.original_route.endpoint):
                found.add(f"{route.path_format}: endpoint")
    return sorted(found)


def test_every_endpoint_and_dependency_is_async(app: Any) -> None:
    # A plain `def` dependency runs in FastAPI's thread pool: a thread hand-off per call on
    # every request (measured on the hot path; docs/performance.md).
    assert _sync_callables(app) == []


def _sync_dependency() -> int:
    return 1


def test_a_sync_dependency_is_caught() -> None:
    api = FastAPI()

    @api.get("/x")
    async def endpoint(_value: Annotated[int, Depends(_sync_dependency)]) -> int:
        return 1

    assert _sync_callables(api) == ["/x: _sync_dependency"]
