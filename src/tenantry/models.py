"""Discovery of what features declare: their models (for metadata) and tasks (job handlers).

Lives at the package top level, not in `core`, because core never imports `modules`.
"""

from __future__ import annotations

import importlib
import pkgutil

# Infrastructure tables owned by core (the jobs outbox); features' models are found below.
CORE_MODEL_MODULES = ("tenantry.core.jobs.models", "tenantry.core.idempotency")


def import_feature_modules(kind: str) -> None:
    """Import `tenantry.modules.<feature>.<kind>` for every feature that has one."""
    import tenantry.modules

    for module in pkgutil.iter_modules(tenantry.modules.__path__):
        if not module.ispkg:
            continue
        name = f"tenantry.modules.{module.name}.{kind}"
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def import_all_models() -> None:
    """Every table into `Base.metadata` (migrations, tests)."""
    for name in CORE_MODEL_MODULES:
        importlib.import_module(name)
    import_feature_modules("models")
