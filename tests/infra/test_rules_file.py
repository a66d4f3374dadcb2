"""infra/rules.json (read by assessments.bicep) is the rule catalog exactly as the code has it."""

from __future__ import annotations

import json

from kvguard.catalog import RULES
from tests.infra.bicep_tree import INFRA

REGENERATE = "infra/rules.json is out of date with the rule catalog: run `make docs`"


def test_rules_json_is_the_catalog() -> None:
    expected = [rule.catalog_entry() for rule in RULES.values()]
    actual = json.loads((INFRA / "rules.json").read_text())
    if actual != expected:
        by_id = {entry.get("id"): entry for entry in actual}
        wanted = {entry["id"]: entry for entry in expected}
        changed = sorted(i for i in wanted.keys() & by_id.keys() if wanted[i] != by_id[i])
        missing = sorted(wanted.keys() - by_id.keys())
        extra = sorted(str(i) for i in by_id.keys() - wanted.keys())
        order = "" if changed or missing or extra else " (same rules, different order)"
        raise AssertionError(f"{REGENERATE}; changed {changed}, missing {missing}, extra {extra}{order}")


def test_catalog_is_not_empty_and_assessment_names_are_unique() -> None:
    actual = json.loads((INFRA / "rules.json").read_text())
    assert actual, REGENERATE
    names = [entry["assessment"] for entry in actual]
    assert len(set(names)) == len(names)
