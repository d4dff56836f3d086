"""`tenantry new-resource NAME --field name:type ...`: a tenant resource like projects."""

from tenantry.generator.spec import FIELD_TYPES, Field, InvalidSpec, ResourceSpec, parse_spec
from tenantry.generator.writer import generate

__all__ = ["FIELD_TYPES", "Field", "InvalidSpec", "ResourceSpec", "generate", "parse_spec"]
