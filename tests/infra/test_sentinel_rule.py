"""The Sentinel analytics rule: off by default behind deploySentinelRule (and only with the
findings table), a scheduled rule whose window equals its schedule (every row raises one alert,
not two), Sentinel's severities with kvguard's own kept, entities for the caller, its IP and the
affected vault or resource, one incident per finding; every column the rule names is one its
query returns (as the Kusto language service types the query over KvguardFindings_CL)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest

from tests.infra.bicep_tree import INFRA, Tree, accessor, body, condition, only_resource, variable

RULE_QUERY = INFRA / "sentinel-rule.kql"


def rule_properties(trees: Mapping[str, Tree]) -> Mapping[str, Any]:
    rule = body(only_resource(trees["modules/sentinel-rule.bicep"], "Microsoft.SecurityInsights/alertRules"))
    assert rule["kind"] == "Scheduled" and rule["scope"] == "workspace"
    properties: Mapping[str, Any] = rule["properties"]
    return properties


@pytest.fixture
def result_columns(kql: dict[str, tuple[str, Any]]) -> dict[str, str]:
    text, analysis = kql["sentinel-rule"]
    assert text == RULE_QUERY.read_text()
    assert [d for d in analysis["diagnostics"] if d["severity"] == "Error"] == []
    return {c["name"]: c["type"] for c in analysis["columns"]}


def test_off_by_default_and_only_with_the_findings_table(trees: Mapping[str, Tree]) -> None:
    main = trees["main.bicep"]
    assert main["parameters"]["deploySentinelRule"]["default"] is False
    module = main["modules"]["sentinelRule"]
    assert module["detail"]["path"] == "modules/sentinel-rule.bicep"
    both = condition(module)["operator"]
    assert both["type"] == "and"
    assert set(both["operands"].values()) == {"deployFindingsLog", "deploySentinelRule"}
    assert accessor(body(module)["params"]["workspaceName"]) == "monitoring.outputs.logAnalyticsName"
    assert body(module)["dependsOn"] == ["findingsLog"]


def test_the_window_equals_the_schedule_and_the_query_is_the_shipped_file(trees: Mapping[str, Tree]) -> None:
    tree = trees["modules/sentinel-rule.bicep"]
    properties = rule_properties(trees)
    assert properties["queryFrequency"] == properties["queryPeriod"] == "schedule"
    assert tree["parameters"]["schedule"]["default"] == "PT5M"
    loaded = properties["query"]["function"]
    assert loaded["type"] == "load_text_content"
    assert (INFRA / "modules" / loaded["parameters"]["file_path"]).resolve() == RULE_QUERY
    assert properties["eventGroupingSettings"]["aggregationKind"] == "AlertPerResult"
    onboarding = body(only_resource(tree, "Microsoft.SecurityInsights/onboardingStates"))
    assert onboarding["name"] == "default" and variable(tree, onboarding["scope"]) == "workspace"


def test_severity_is_sentinels_with_kvguards_own_kept(
    trees: Mapping[str, Tree], result_columns: dict[str, str]
) -> None:
    properties = rule_properties(trees)
    severity_column = properties["alertDetailsOverride"]["alertSeverityColumnName"]
    assert result_columns[severity_column] == "string"
    assert properties["customDetails"]["KvguardSeverity"] == "KvguardSeverity" in result_columns
    mapping = re.search(rf"{severity_column} = case\((.*?)\),\n", RULE_QUERY.read_text(), re.DOTALL)
    assert mapping and mapping[1] == 'Severity in ("critical", "high"), "High", Severity == "medium", "Medium", "Low"'


def test_entities_are_the_caller_its_ip_and_the_affected_resource(
    trees: Mapping[str, Tree], result_columns: dict[str, str]
) -> None:
    mapped = {(e["entityType"], f["identifier"]): f["columnName"]
              for e in rule_properties(trees)["entityMappings"] for f in e["fieldMappings"]}
    assert mapped == {("Account", "AadUserId"): "CallerId", ("Account", "FullName"): "CallerUpn",
                      ("IP", "Address"): "CallerIp", ("AzureResource", "ResourceId"): "AffectedResource"}
    assert set(mapped.values()) <= set(result_columns)
    assert 'AffectedResource = iff(isnotempty(VaultId), VaultId, ResourceId)' in RULE_QUERY.read_text()


def test_one_incident_per_finding_and_every_named_column_is_returned(
    trees: Mapping[str, Tree], result_columns: dict[str, str]
) -> None:
    properties = rule_properties(trees)
    grouping = properties["incidentConfiguration"]["groupingConfiguration"]
    assert properties["incidentConfiguration"]["createIncident"] is True
    assert grouping["enabled"] is True and grouping["matchingMethod"] == "Selected"
    assert grouping["groupByCustomDetails"] == ["FindingId"]
    assert "FindingId" in properties["customDetails"]
    named = set(properties["customDetails"].values())
    for text in properties["alertDetailsOverride"].values():
        named |= set(re.findall(r"\{\{(\w+)\}\}", text))
    assert named - set(result_columns) == set()
