"""Every KQL text kvguard ships parses, with zero errors, in Microsoft's Kusto language service
(`@kusto/language-service-next`, run by tests/kql_parse.js with the Node.js that runs Azurite)
against the schemas of the tables it reads: the README's queries, the workbook's items, the
Sentinel rule and the blast-radius query. Application Insights' and Key Vault's tables come from
their published column lists (tests/data/tables/), KvguardFindings_CL from its Bicep definition.
All texts go to one node process, so this stays fast."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

import pytest

from kvguard import blast_radius
from kvguard.findings_table import TABLE
from tests.infra.bicep_tree import INFRA, ROOT, Tree, variable

PARSER = ROOT / "tests" / "kql_parse.js"
TABLES = ROOT / "tests" / "data" / "tables"
LANGUAGE_SERVICE = ROOT / "node_modules" / "@kusto" / "language-service-next"
README_QUERIES = re.compile(r"<!-- queries:.*?-->(.*?)<!-- end of queries -->", re.DOTALL)
KUSTO_BLOCK = re.compile(r"```kusto\n(.*?)```", re.DOTALL)
# What a workbook puts in place of its parameters when it runs a query (a time range, its grain,
# and the Vault parameter's values quoted with ' as the parameter declares).
WORKBOOK_VALUES = {"{TimeRange}": "> ago(1d)", "{TimeRange:grain}": "1h", "{Vault}": "'*'"}


def published_tables() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(TABLES.glob("*.json"))]


def findings_table(trees: Mapping[str, Tree]) -> dict[str, Any]:
    return {"table": TABLE, "columns": variable(trees["modules/findings-log.bicep"], "columns")}


def readme_queries() -> list[str]:
    [section] = README_QUERIES.findall((ROOT / "README.md").read_text())
    return KUSTO_BLOCK.findall(section)


def workbook_query(text: str) -> str:
    for name, value in WORKBOOK_VALUES.items():
        text = text.replace(name, value)
    assert "{" not in text, f"a workbook parameter without a value here: {text}"
    return text


def workbook_queries() -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("query"), str):
                found.append(workbook_query(node["query"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads((INFRA / "workbook.json").read_text()))
    return found


def shipped_queries() -> dict[str, str]:
    texts = {f"readme-{i}": q for i, q in enumerate(readme_queries(), 1)}
    texts |= {f"workbook-{i}": q for i, q in enumerate(workbook_queries(), 1)}
    texts["sentinel-rule"] = (INFRA / "sentinel-rule.kql").read_text()
    texts |= {f"blast-radius-{name}": q for name, q in blast_radius.kql_texts().items()}
    return texts


Analysis = dict[str, Any]  # {"diagnostics": [...], "columns": [{"name", "type"}] or None}


def parse(tables: list[dict[str, Any]], texts: Mapping[str, str]) -> dict[str, Analysis]:
    """Each text's diagnostics and result columns from the Kusto language service, in one node process."""
    node = shutil.which("node")
    if node is None or not LANGUAGE_SERVICE.is_dir():
        pytest.fail("node or @kusto/language-service-next is missing: run `make test` (npm ci)", pytrace=False)
    request = {"tables": [{"name": t["table"], "columns": t["columns"]} for t in tables],
               "queries": [{"id": key, "text": text} for key, text in texts.items()]}
    done = subprocess.run([node, str(PARSER)], input=json.dumps(request), capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Analysis] = json.loads(done.stdout)
    return result


def errors(analysis: Analysis, text: str) -> list[str]:
    return [f"{d['code']} {d['message']} at {text[d['start']:d['start'] + max(d['length'], 1)]!r}"
            for d in analysis["diagnostics"] if d["severity"] == "Error"]


# Deliberately wrong texts beside the shipped ones: each must fail, or the check proves nothing.
WRONG = {
    "wrong-findings-column": f"{TABLE}\n| where Colour == 'red'",
    "wrong-audit-column": "AZKVAuditLogs\n| where identity_claim_oid_g == ''",
    "wrong-app-column": "AppRequests\n| summarize count() by Colour",
    "wrong-table": "SecurityEvents\n| take 1",
}


def parse_all(trees: Mapping[str, Tree]) -> dict[str, tuple[str, Analysis]]:
    """Every shipped text and the deliberately wrong ones, by id, with their analysis."""
    texts = {**shipped_queries(), **WRONG}
    result = parse([*published_tables(), findings_table(trees)], texts)
    return {key: (text, result[key]) for key, text in texts.items()}


@pytest.fixture
def parsed(kql: dict[str, tuple[str, Analysis]]) -> dict[str, tuple[str, Analysis]]:
    return kql


def test_every_shipped_query_parses_against_the_tables_it_reads(
    parsed: dict[str, tuple[str, Analysis]]
) -> None:
    problems = {key: errors(found, text) for key, (text, found) in parsed.items() if key not in WRONG}
    assert {key: found for key, found in problems.items() if found} == {}
    kinds = {key.rsplit("-", 1)[0] for key in problems}
    assert {"readme", "workbook", "sentinel", "blast-radius"} <= kinds
    assert sum(key.startswith("readme-") for key in problems) >= 5
    assert sum(key.startswith("workbook-") for key in problems) >= 10


def test_a_wrong_column_or_table_fails_the_check(parsed: dict[str, tuple[str, Analysis]]) -> None:
    for key in WRONG:
        text, found = parsed[key]
        assert errors(found, text), f"{key} parsed without an error: {text}"
    text, found = parsed["wrong-findings-column"]
    assert "Colour" in " ".join(errors(found, text))


def test_the_schemas_are_the_published_ones_and_the_bicep_table() -> None:
    tables = {t["table"]: {c["name"]: c["type"] for c in t["columns"]} for t in published_tables()}
    assert set(tables) == {"AppRequests", "AppTraces", "AppMetrics", "AzureDiagnostics", "AZKVAuditLogs"}
    assert tables["AppRequests"]["Properties"] == "dynamic" and tables["AppRequests"]["Success"] == "bool"
    assert tables["AppMetrics"]["Sum"] == "real"
    assert tables["AZKVAuditLogs"]["Identity"] == "dynamic"
    assert "identity_claim_oid_g" not in tables["AzureDiagnostics"]  # present only once a vault sent it


def test_is_anything_failing_gives_one_count_column(parsed: dict[str, tuple[str, Analysis]]) -> None:
    # A union of count() (long) and sum(Sum) (real) would split into Count_long and Count_real.
    [(text, analysis)] = [parsed[key] for key in parsed if key.startswith("readme-")
                          and parsed[key][0].lstrip().startswith("union")]
    assert analysis["columns"] == [{"name": "What", "type": "string"}, {"name": "Count", "type": "long"}], text
