"""Import every module's models so `Base.metadata` knows all tables (migrations, tests)."""

from __future__ import annotations

import importlib
import pkgutil

import tenantry.modules


def import_all_models() -> None:
    for module in pkgutil.iter_modules(tenantry.modules.__path__):
        if module.ispkg:
            try:
                importlib.import_module(f"tenantry.modules.{module.name}.models")
            except ModuleNotFoundError as exc:
                if exc.name != f"tenantry.modules.{module.name}.models":
                    raise
