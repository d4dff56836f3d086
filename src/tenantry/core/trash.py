"""Who may look into the trash (`deleted=only`): callers allowed to restore, i.e. delete."""

from __future__ import annotations

from tenantry.core.errors import Forbidden
from tenantry.core.permissions import grants
from tenantry.core.tenancy import TenantContext


def require_trash_access(context: TenantContext, permission: str) -> bool:
    """403 unless `context` holds `permission` (e.g. `tasks:delete`) at least on own rows.

    Returns True when it holds it only on own rows (`:own`): the listing then shows only
    the rows the caller created.
    """
    if not grants(context.permissions, permission):
        raise Forbidden(f"Listing deleted records needs the {permission} permission")
    return permission not in context.permissions
