"""What the generator is asked for, validated: a plural snake_case name and typed fields."""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from pathlib import Path

IDENTIFIER = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


@dataclass(frozen=True)
class FieldType:
    python: str  # annotation in models and response schemas
    column: str  # SQLAlchemy type in the model
    migration: str  # the same type in the migration
    schema: str  # annotation in request schemas (with limits)
    sample: str  # a valid value (Python literal of the JSON sent by tests)
    other: str  # a second valid value, different from `sample`
    searchable: bool = False


FIELD_TYPES: dict[str, FieldType] = {
    "str": FieldType(
        "str",
        "String(200)",
        "sa.String(length=200)",
        "Annotated[str, Field(min_length=1, max_length=200)]",
        '"alpha"',
        '"beta"',
        searchable=True,
    ),
    "text": FieldType(
        "str",
        "Text",
        "sa.Text()",
        "Annotated[str, Field(max_length=10_000)]",
        '"some text"',
        '"other text"',
        searchable=True,
    ),
    "int": FieldType("int", "Integer", "sa.Integer()", "int", "7", "8"),
    "decimal": FieldType(
        "Decimal",
        "Numeric(18, 2)",
        "sa.Numeric(precision=18, scale=2)",
        "Annotated[Decimal, Field(max_digits=18, decimal_places=2)]",
        '"12.50"',
        '"13.25"',
    ),
    "bool": FieldType("bool", "Boolean", "sa.Boolean()", "bool", "True", "False"),
    "date": FieldType("dt.date", "Date", "sa.Date()", "dt.date", '"2026-01-31"', '"2026-02-28"'),
    "datetime": FieldType(
        "dt.datetime",
        "UTCDateTime(timezone=True)",
        "UTCDateTime(timezone=True)",
        "AwareDatetime",
        '"2026-01-31T10:00:00Z"',
        '"2026-02-28T11:30:00Z"',
    ),
    "uuid": FieldType(
        "uuid.UUID",
        "Uuid",
        "sa.Uuid()",
        "uuid.UUID",
        '"0195a1b2-0000-7000-8000-000000000001"',
        '"0195a1b2-0000-7000-8000-000000000002"',
    ),
}

# Columns every tenant record already has (core/db.py mixins) and names the code uses.
RESERVED_FIELDS = frozenset(
    {
        "id",
        "organization_id",
        "created_at",
        "updated_at",
        "deleted_at",
        "created_by",
        "updated_by",
        "version",
        "metadata",
        "registry",
        "deleted",
        "search",
        "sort_by",
        "sort_order",
        "page",
        "limit",
        "cursor",
        "offset",
    }
)


class InvalidSpec(ValueError):
    """A resource name or field the generator refuses, with the reason."""


@dataclass(frozen=True)
class Field:
    name: str
    type_name: str

    @property
    def type(self) -> FieldType:
        return FIELD_TYPES[self.type_name]

    @property
    def camel(self) -> str:
        return camel(self.name)


@dataclass(frozen=True)
class ResourceSpec:
    name: str  # plural snake_case: table, module, permission prefix
    fields: tuple[Field, ...]

    @property
    def singular(self) -> str:
        return singular(self.name)

    @property
    def class_name(self) -> str:
        return "".join(part.capitalize() for part in self.singular.split("_"))

    @property
    def url(self) -> str:
        return self.name.replace("_", "-")

    @property
    def id_param(self) -> str:
        return camel(self.singular) + "Id"

    @property
    def label(self) -> str:
        return self.singular.replace("_", " ")

    @property
    def searchable(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.type.searchable)

    @property
    def type_names(self) -> frozenset[str]:
        return frozenset(f.type_name for f in self.fields)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith(("sses", "xes", "ches", "shes", "zes")):
        return name[:-2]
    return name[:-1]


def parse_spec(name: str, fields: list[str], *, modules_dir: Path) -> ResourceSpec:
    """Validate `name` and `fields` ("name:type"); `InvalidSpec` names the first bad one."""
    if not IDENTIFIER.fullmatch(name) or len(name) > 40:
        raise InvalidSpec(f"resource name {name!r}: use a plural snake_case identifier (invoices)")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise InvalidSpec(f"resource name {name!r} is a Python keyword")
    if not name.endswith("s") or name.endswith("ss") or len(singular(name)) < 2:
        raise InvalidSpec(f"resource name {name!r} must be plural (invoices, line_items)")
    if (modules_dir / name).exists():
        raise InvalidSpec(f"resource name {name!r}: modules/{name} exists already")
    if not fields:
        raise InvalidSpec("give at least one --field name:type")
    parsed: list[Field] = []
    for item in fields:
        field_name, sep, type_name = item.partition(":")
        if not sep or not IDENTIFIER.fullmatch(field_name):
            raise InvalidSpec(f"field {item!r}: write name:type with a snake_case name")
        if keyword.iskeyword(field_name) or keyword.issoftkeyword(field_name):
            raise InvalidSpec(f"field {field_name!r} is a Python keyword")
        if field_name in RESERVED_FIELDS:
            raise InvalidSpec(f"field {field_name!r} is reserved (every record has it already)")
        if type_name not in FIELD_TYPES:
            known = ", ".join(FIELD_TYPES)
            raise InvalidSpec(f"field {field_name!r}: unknown type {type_name!r} (use {known})")
        if any(f.name == field_name for f in parsed):
            raise InvalidSpec(f"field {field_name!r} is given twice")
        parsed.append(Field(field_name, type_name))
    return ResourceSpec(name, tuple(parsed))
