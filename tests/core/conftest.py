from tests.tenant_helpers import tenants

__all__ = ["tenants"]
