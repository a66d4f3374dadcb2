"""Defender for Cloud assessment metadata: one per rule of infra/rules.json, named by the rule's
assessment GUID, with values Defender accepts for every rule in the catalog."""

from __future__ import annotations

import json
from typing import Any

from tests.infra.bicep_tree import INFRA, Tree, accessor, body, loop, only_resource

# Defender's enumerations (Microsoft.Security/assessmentMetadata 2021-06-01).
CATEGORIES = {"Compute", "Networking", "Data", "IdentityAndAccess", "IoT"}
THREATS = {
    "accountBreach",
    "dataExfiltration",
    "dataSpillage",
    "maliciousInsider",
    "elevationOfPrivilege",
    "threatResistance",
    "missingCoverage",
    "denialOfService",
}
LEVELS = {"Low", "Moderate", "High"}


def catalog() -> list[dict]:
    return json.loads((INFRA / "rules.json").read_text())


def literal(tree: Tree, name: str) -> Any:
    return tree["variables"][name]["value"]


def test_metadata_is_one_resource_per_rule_of_rules_json(trees: dict[str, Tree]) -> None:
    tree = trees["modules/assessments.bicep"]
    rules = tree["variables"]["rules"]["value"]["function"]
    assert rules["type"] == "load_json_content"
    assert rules["parameters"]["file_path"] == "../rules.json"
    entry = only_resource(tree, "Microsoft.Security/assessmentMetadata")
    spec = loop(entry)
    assert spec is not None and spec["detail"]["array_name"] == "rules"
    metadata = body(entry)
    assert spec["detail"]["item_name"] == "rule"
    assert accessor(metadata["name"]) == "rule.assessment"
    properties = metadata["properties"]
    assert properties["displayName"] == "kvguard ${rule.id}: ${rule.title}"
    assert accessor(properties["description"]) == "rule.rationale"
    assert properties["assessmentType"] == "CustomerManaged"
    severity = properties["severity"]["operator"]
    assert severity["type"] == "index_accessor"
    assert severity["operands"]["operand_1"] == "severities"
    assert accessor(severity["operands"]["operand_2"]) == "rule.severity"


def test_every_protected_subscription_gets_the_metadata(trees: dict[str, Tree]) -> None:
    assert trees["modules/protect.bicep"]["modules"]["assessments"]["detail"]["path"] == "assessments.bicep"


def test_severity_map(trees: dict[str, Tree]) -> None:
    severities = literal(trees["modules/assessments.bicep"], "severities")
    assert severities == {"low": "Low", "medium": "Medium", "high": "High", "critical": "High"}
    assert {rule["severity"] for rule in catalog()} <= set(severities)


def test_every_rule_family_has_valid_defender_attributes(trees: dict[str, Tree]) -> None:
    families = literal(trees["modules/assessments.bicep"], "families")
    unknown = sorted({rule["id"] for rule in catalog() if rule["id"].split("-")[1] not in families})
    assert not unknown, f"rule families without Defender attributes in assessments.bicep: {unknown}"
    for name, family in families.items():
        assert set(family["categories"]) <= CATEGORIES, name
        assert set(family["threats"]) <= THREATS, name
        assert family["userImpact"] in LEVELS and family["implementationEffort"] in LEVELS, name


def test_every_remediation_handler_has_a_description(trees: dict[str, Tree]) -> None:
    remediations = literal(trees["modules/assessments.bicep"], "remediations")
    missing = sorted({r["remediation"] for r in catalog() if r["remediation"] and r["remediation"] not in remediations})
    assert not missing, f"remediation handlers without a description in assessments.bicep: {missing}"
    assert all(isinstance(text, str) and len(text) > 20 for text in remediations.values())
