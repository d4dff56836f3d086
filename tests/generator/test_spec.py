"""`tenantry new-resource` input rules: names and field types, with errors naming the bad one."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tenantry.cli import main
from tenantry.generator import InvalidSpec, parse_spec

MODULES = Path(__file__).parents[2] / "src" / "tenantry" / "modules"


def test_a_valid_spec_gives_class_url_and_path_parameter_names() -> None:
    spec = parse_spec("line_items", ["label:str", "amount:decimal"], modules_dir=MODULES)
    assert (spec.singular, spec.class_name) == ("line_item", "LineItem")
    assert (spec.url, spec.id_param) == ("line-items", "lineItemId")
    assert [f.camel for f in spec.fields] == ["label", "amount"]
    assert parse_spec("categories", ["x:int"], modules_dir=MODULES).class_name == "Category"


@pytest.mark.parametrize(
    ("name", "fields", "message"),
    [
        ("Invoices", ["n:str"], "plural snake_case"),
        ("invoice", ["n:str"], "must be plural"),
        ("in-voices", ["n:str"], "plural snake_case"),
        ("projects", ["n:str"], "modules/projects exists already"),
        ("invoices", [], "at least one --field"),
        ("invoices", ["amount:money"], "field 'amount': unknown type 'money'"),
        ("invoices", ["amount"], "write name:type"),
        ("invoices", ["class:str"], "'class' is a Python keyword"),
        ("invoices", ["version:int"], "'version' is reserved"),
        ("invoices", ["n:str", "n:int"], "'n' is given twice"),
    ],
)
def test_bad_names_and_fields_are_refused_naming_the_culprit(
    name: str, fields: list[str], message: str
) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_spec(name, fields, modules_dir=MODULES)


def test_the_cli_reports_a_bad_type_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "src" / "tenantry" / "modules").mkdir(parents=True)
    (tmp_path / "src" / "tenantry" / "app.py").write_text("")
    result = CliRunner().invoke(
        main, ["new-resource", "invoices", "--field", "due:dat", "--root", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "unknown type 'dat'" in result.output
    assert not (tmp_path / "src" / "tenantry" / "modules" / "invoices").exists()
