from tests.tenant_helpers import tenant_app, tenants

__all__ = ["tenant_app", "tenants"]
