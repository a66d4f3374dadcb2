"""The README's rule table is generated from the catalog, and current (infra/rules.json, the other
generated copy, is checked by tests/infra/test_rules_file.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvguard.catalog import RULES
from kvguard.cli import README_TABLE, rules_markdown, with_rules_table

ROOT = Path(__file__).resolve().parents[2]
STALE = "is out of date with the rule definitions: run `make docs`"


def test_the_readme_rule_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert with_rules_table(readme) == readme, f"README.md's rule table {STALE}"


def test_the_table_has_a_row_per_rule_and_marks_opt_in_remediation() -> None:
    rows = rules_markdown().splitlines()[2:]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == list(RULES)
    assert [row for row in rows if "(opt-in)" in row] == [
        row for row in rows if any(f"| {r.id} |" in row for r in RULES.values()
                                   if r.remediation and not r.remediate_by_default)
    ]


def test_a_stale_table_is_replaced_and_missing_markers_are_an_error() -> None:
    start, end = README_TABLE
    stale = f"intro\n{start}\n| rule | old |\n{end}\noutro\n"
    assert with_rules_table(stale) == f"intro\n{start}\n{rules_markdown()}{end}\noutro\n"
    with pytest.raises(ValueError, match="markers are missing"):
        with_rules_table("no table here\n")
