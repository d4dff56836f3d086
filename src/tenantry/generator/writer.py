"""Write a generated resource into a project checkout and register it where it belongs.

New files: `modules/<name>/` (models, schemas, deps, service, router), an Alembic
revision after the current head, `tests/<name>/` (tests and the walker entries). Edits,
each at a marker line so they stay small and reviewable: the resource in
`core/permissions.py` (RESOURCES), its router in `app.py`, its walker in
`tests/orgs/routes.py`. Nothing is written if any target exists already.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from tenantry.generator.spec import ResourceSpec

PERMISSIONS_MARKER = "    # new-resource: resources"
WALKER_MARKER = "    # new-resource: walker"
ROUTER_MARKER = "    return api\n"


class GenerationError(RuntimeError):
    """The project is not in a state the generator can write into (reason in the message)."""


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("tenantry.generator", "templates"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - Python source, not HTML
    )


def _head_revision(versions: Path) -> str:
    """The single head of the migration chain (by reading `revision`/`down_revision`)."""
    revisions: dict[str, str | None] = {}
    for path in versions.glob("*.py"):
        text = path.read_text()
        rev = re.search(r'^revision: str = "([^"]+)"', text, re.M)
        down = re.search(r'^down_revision: str \| None = (?:"([^"]+)"|None)', text, re.M)
        if rev:
            revisions[rev.group(1)] = down.group(1) if down else None
    heads = set(revisions) - {d for d in revisions.values() if d}
    if len(heads) != 1:
        raise GenerationError(f"expected one migration head, found {sorted(heads)}")
    return heads.pop()


def _next_revision(head: str) -> str:
    number = re.match(r"\d+", head)
    return (
        f"{int(number.group()) + 1:04d}"
        if number
        else dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M")
    )


def generate(root: Path, spec: ResourceSpec, *, format_code: bool = True) -> list[Path]:
    """Write `spec` into the project at `root`; return the files written or changed."""
    src = root / "src" / "tenantry"
    versions = src / "migrations" / "versions"
    head = _head_revision(versions)
    revision = _next_revision(head)
    env = _environment()
    context = {
        "r": spec,
        "revision": revision,
        "down_revision": head,
        "down_revision_literal": f'"{head}"',
        "today": dt.date.today().isoformat(),
        "sqla_imports": ", ".join(
            sorted({f.type.column.split("(")[0] for f in spec.fields} - {"UTCDateTime"})
        ),
        "needs_annotated": any(f.type.schema.startswith("Annotated") for f in spec.fields),
    }
    module = src / "modules" / spec.name
    tests = root / "tests" / spec.name
    files = {
        module / "__init__.py": "",
        module / "models.py": "models.py.j2",
        module / "schemas.py": "schemas.py.j2",
        module / "deps.py": "deps.py.j2",
        module / "service.py": "service.py.j2",
        module / "router.py": "router.py.j2",
        versions / f"{revision}_{spec.name}.py": "migration.py.j2",
        tests / "__init__.py": "",
        tests / "conftest.py": "tests_conftest.py.j2",
        tests / "walker.py": "walker.py.j2",
        tests / f"test_{spec.name}.py": "test_resource.py.j2",
    }
    existing = [path for path in files if path.exists()] + [
        p for p in (module, tests) if p.exists()
    ]
    if existing:
        raise GenerationError(f"refusing to overwrite {existing[0].relative_to(root)}")
    edits = _planned_edits(root, spec)
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(env.get_template(template).render(context) if template else "")
    for path, text in edits.items():
        path.write_text(text)
    written = [*files, *edits]
    if format_code:
        _format([p for p in written if p.suffix == ".py"], root)
    return written


def _insert_before(text: str, marker: str, line: str, where: Path) -> str:
    if marker not in text:
        raise GenerationError(f"marker {marker.strip()!r} not found in {where}")
    index = text.index(marker)
    return text[:index] + line + text[index:]


def _planned_edits(root: Path, spec: ResourceSpec) -> dict[Path, str]:
    """The new text of each registration file (computed before anything is written)."""
    permissions = root / "src" / "tenantry" / "core" / "permissions.py"
    app = root / "src" / "tenantry" / "app.py"
    routes = root / "tests" / "orgs" / "routes.py"
    for path in (permissions, app, routes):
        if not path.exists():
            raise GenerationError(f"{path.relative_to(root)} is missing")
    edits = {
        permissions: _insert_before(
            permissions.read_text(), PERMISSIONS_MARKER, f'    "{spec.name}",\n', permissions
        ),
        routes: _insert_before(routes.read_text(), WALKER_MARKER, f'    "{spec.name}",\n', routes),
        app: _register_router(app.read_text(), spec, app),
    }
    return edits


def _register_router(text: str, spec: ResourceSpec, where: Path) -> str:
    alias = f"{spec.name}_router"
    line = f"from tenantry.modules.{spec.name}.router import router as {alias}\n"
    lines = text.splitlines(keepends=True)
    block = [i for i, ln in enumerate(lines) if ln.startswith("from tenantry.modules.")]
    if not block:
        raise GenerationError(f"no feature router imports found in {where}")
    position = next((i for i in block if lines[i] > line), block[-1] + 1)
    lines.insert(position, line)
    text = "".join(lines)
    return _insert_before(text, ROUTER_MARKER, f"    api.append({alias})\n", where)


def _format(paths: list[Path], root: Path) -> None:
    """ruff format + import sorting of what was written (skipped when ruff is absent)."""
    names = [str(p) for p in paths]
    for args in (["check", "--fix", "--select", "I", "--quiet"], ["format", "--quiet"]):
        try:
            subprocess.run(  # noqa: S603 - fixed arguments, our own files
                [sys.executable, "-m", "ruff", *args, *names], cwd=root, check=False
            )
        except OSError:
            return
