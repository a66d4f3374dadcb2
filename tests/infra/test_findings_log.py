"""The findings table and the workbook: the Bicep declares exactly the columns the app writes, the
rule routes the app's stream to that table, it is off by default behind one parameter, and every
workbook query names only tables, columns, attributes and metrics that exist in what the app
writes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from kvguard.findings_table import COLUMNS, STREAM, TABLE
from kvguard.outcome import Outcome
from kvguard.telemetry import outcome_fields
from tests.infra.bicep_tree import INFRA, Tree, accessor, body, condition, only_resource, variable
from tests.infra.test_hardening import settings

WORKBOOK = INFRA / "workbook.json"

# The workspace tables of Application Insights that the workbook reads, with the columns it may use
# (from the published AppRequests / AppMetrics schemas).
APP_INSIGHTS = {
    "AppRequests": {"TimeGenerated", "Name", "Success", "DurationMs", "ResultCode", "OperationId", "Properties"},
    "AppMetrics": {"TimeGenerated", "Name", "Sum", "Count", "Min", "Max", "Properties"},
    "AppTraces": {"TimeGenerated", "Message", "SeverityLevel", "OperationId", "Properties"},
}
# KQL operators, functions and keywords the queries use; anything else must be a known column or a
# name the query defines itself.
KQL = {
    "where", "summarize", "count", "countif", "by", "bin", "order", "desc", "asc", "project", "extend", "top",
    "take", "distinct", "make_set", "dcount", "max", "min", "sum", "percentile", "isnotempty", "isempty", "in",
    "and", "or", "not", "false", "true", "startswith", "has", "contains", "ago", "now", "iff", "dynamic",
    "array_length", "set_intersect",
}


def findings_module(trees: dict[str, Tree]) -> Tree:
    return trees["modules/findings-log.bicep"]


def test_the_table_and_the_stream_declare_exactly_the_columns_the_app_writes(trees: dict[str, Tree]) -> None:
    tree = findings_module(trees)
    declared = {c["name"]: c["type"] for c in variable(tree, "columns")}
    assert declared == dict(COLUMNS)
    assert list(declared) == list(COLUMNS)
    assert variable(tree, "tableName") == TABLE
    table = body(only_resource(tree, "Microsoft.OperationalInsights/workspaces/tables"))
    assert table["name"] == "tableName" and table["properties"]["schema"]["columns"] == "columns"
    rule = body(only_resource(tree, "Microsoft.Insights/dataCollectionRules"))["properties"]
    assert list(rule["streamDeclarations"]) == ["'${streamName}'"]
    assert rule["streamDeclarations"]["'${streamName}'"]["columns"] == "columns"
    assert variable(tree, "streamName") == "Custom-${tableName}" and f"Custom-{TABLE}" == STREAM
    [flow] = rule["dataFlows"]
    assert flow["streams"] == ["streamName"] and flow["outputStream"] == "streamName"
    [destination] = rule["destinations"]["logAnalytics"]
    assert flow["destinations"] == [destination["name"]]
    assert accessor(destination["workspaceResourceId"]) == "workspace.id"
    assert accessor(rule["dataCollectionEndpointId"]) == "endpoint.id"


def test_off_by_default_one_parameter_turns_it_on_and_the_app_gets_its_settings(trees: dict[str, Tree]) -> None:
    main = trees["main.bicep"]
    assert main["parameters"]["deployFindingsLog"]["default"] is False
    module = main["modules"]["findingsLog"]
    assert condition(module) == "deployFindingsLog"
    assert accessor(body(module)["params"]["principalId"]) == "identity.outputs.principalId"
    params = body(main["modules"]["app"])["params"]
    for name, output in (("findingsLogEndpoint", "endpoint"), ("findingsLogRuleId", "ruleId")):
        operands = params[name]["operator"]["operands"]
        assert operands["condition"] == "deployFindingsLog" and operands["false_value"] == ""
        assert accessor(operands["true_value"]) == f"findingsLog.outputs.{output}"
    named = settings(trees)
    assert named["KVGUARD_INGESTION_ENDPOINT"] == "findingsLogEndpoint"
    assert named["KVGUARD_INGESTION_RULE_ID"] == "findingsLogRuleId"
    outputs = findings_module(trees)["outputs"]
    assert accessor(outputs["endpoint"]["value"]) == "endpoint.properties.logsIngestion.endpoint"
    assert accessor(outputs["ruleId"]["value"]) == "rule.properties.immutableId"


def test_the_workbook_is_deployed_from_infra_workbook_json(trees: dict[str, Tree]) -> None:
    workbook = body(only_resource(findings_module(trees), "Microsoft.Insights/workbooks"))
    loaded = workbook["properties"]["serializedData"]["function"]
    assert loaded["type"] == "load_text_content"
    assert (INFRA / "modules" / loaded["parameters"]["file_path"]).resolve() == WORKBOOK
    assert accessor(workbook["properties"]["sourceId"]) == "workspace.id"


def queries(node: Any) -> list[str]:
    """Every KQL text in the workbook: query items and query-backed parameters."""
    found: list[str] = []
    if isinstance(node, dict):
        if isinstance(node.get("query"), str):
            found.append(node["query"])
        for value in node.values():
            found += queries(value)
    elif isinstance(node, list):
        for value in node:
            found += queries(value)
    return found


# The span attributes kvguard writes: its outcome fields, caller fields included.
WRITTEN_ATTRIBUTES = {
    f"kvguard.{name}" for name in outcome_fields(Outcome("e", "processed", ""), with_caller=True)
}


def metric_names() -> set[str]:
    text = (INFRA.parent / "kvguard" / "otel.py").read_text()
    return set(re.findall(r'create_(?:counter|histogram)\(\s*"([^"]+)"', text))


def check_query(text: str) -> list[str]:
    """The problems of one query: an unknown table, column, attribute or metric name."""
    problems = []
    strings = re.findall(r"'([^']*)'|\"([^\"]*)\"", text)
    literals = {a or b for a, b in strings}
    bare = re.sub(r"'[^']*'|\"[^\"]*\"", " ", re.sub(r"\{[A-Za-z:]+\}", " ", text))
    table = bare.split("|", 1)[0].strip()
    columns = set(COLUMNS) if table == TABLE else APP_INSIGHTS.get(table)
    if columns is None:
        return [f"unknown table {table!r}"]
    defined = set(re.findall(r"\b([A-Za-z_]\w*)\s*=(?!=)", bare))
    for word in re.findall(r"\b[A-Za-z_]\w*\b", bare.split("|", 1)[1] if "|" in bare else ""):
        if word not in columns and word not in defined and word.lower() not in KQL:
            problems.append(f"{table}: unknown column or function {word!r}")
    metrics = metric_names()
    for literal in literals:
        if literal.startswith("kvguard.") and literal not in metrics | WRITTEN_ATTRIBUTES | {"kvguard.delivery"}:
            problems.append(f"{table}: kvguard writes no metric, span or attribute {literal!r}")
    return problems


def test_the_workbook_parses_and_has_the_panels_operators_ask_for() -> None:
    workbook = json.loads(WORKBOOK.read_text())
    assert workbook["version"] == "Notebook/1.0"
    titles = " | ".join(item["content"].get("title", "") for item in workbook["items"] if item["type"] == 3)
    for panel in ("by rule", "by severity", "Remediations", "Failed", "Top callers", "revert", "Per vault"):
        assert panel in titles, f"no panel {panel!r} in {titles}"
    assert len(queries(workbook)) >= 10


@pytest.mark.parametrize("text", queries(json.loads(WORKBOOK.read_text())), ids=lambda q: q.split("\n")[-1][:40])
def test_every_workbook_query_names_only_what_the_app_writes(text: str) -> None:
    assert check_query(text) == []


def test_the_query_check_catches_an_unknown_column_table_and_metric() -> None:
    assert check_query(f"{TABLE}\n| where Colour == 'red'") == [f"{TABLE}: unknown column or function 'Colour'"]
    assert check_query("SecurityEvent\n| take 1") == ["unknown table 'SecurityEvent'"]
    assert check_query("AppMetrics\n| where Name == 'kvguard.nope'") == [
        "AppMetrics: kvguard writes no metric, span or attribute 'kvguard.nope'"
    ]
    assert check_query(f"{TABLE}\n| summarize N = count() by Rule\n| order by N desc") == []


def test_the_audit_workspace_for_the_blast_radius_is_optional_and_read_only(trees: dict[str, Tree]) -> None:
    main = trees["main.bicep"]
    assert main["parameters"]["auditWorkspaceResourceId"]["default"] == ""
    module = main["modules"]["auditWorkspaceAccess"]
    assert module["detail"]["path"] == "modules/audit-workspace-access.bicep"
    negated = condition(module)["operator"]
    assert negated["type"] == "not"
    assert negated["operands"]["bool_value"]["function"]["parameters"]["item_to_test"] == "auditWorkspaceResourceId"
    # deployed in the workspace's own subscription and resource group
    scope = body(module)["scope"]["function"]
    assert scope["type"] == "resource_group"
    assert scope["parameters"]["resource_group_name"]["operator"]["operands"]["operand_2"] == 4
    assert scope["parameters"]["subscription_id"]["operator"]["operands"]["operand_2"] == 2
    operands = body(main["modules"]["app"])["params"]["auditWorkspaceId"]["operator"]["operands"]
    assert accessor(operands["false_value"]) == "auditWorkspaceAccess.outputs.customerId"
    assert settings(trees)["KVGUARD_AUDIT_WORKSPACE_ID"] == "auditWorkspaceId"
    outputs = trees["modules/audit-workspace-access.bicep"]["outputs"]
    assert accessor(outputs["customerId"]["value"]) == "workspace.properties.customerId"
