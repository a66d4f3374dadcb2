"""What the workbook's panels show for the sample scenarios' rows of KvguardFindings_CL: the
panels' `where` filters are run over the rows that kvguard.findings_table writes, with the Vault
parameter set as an analyst sets it. A finding without a single vault shows under "All" and under
"(no single vault)", a change over several vaults under each of them, and the revert panel counts
remediations only."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from tests.infra.bicep_tree import INFRA
from tests.unit.test_findings_table import BILLING, HR_VAULT, sample_rows

NO_VAULT = "(no single vault)"
TOKEN = re.compile(r"\s*(?:(?P<string>'[^']*'|\"[^\"]*\")|(?P<number>\d+)|(?P<name>[A-Za-z_]\w*)"
                   r"|(?P<op>==|!=|>=|<=|>|<|\(|\)|,|\[|\]))")
FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "isempty": lambda v: v is None or v == "",
    "isnotempty": lambda v: v is not None and v != "",
    "iff": lambda condition, yes, no: yes if condition else no,
    "array_length": len,
    "set_intersect": lambda a, b: [v for v in a if v in b],
    "dynamic": lambda v: v,
}


def python_predicate(kql: str) -> str:
    """The KQL predicate of a `where` as a Python expression over `row`: the comparisons, and/or/not,
    `in (…)`, and the functions the workbook uses; anything else fails the test."""
    out, position = [], 0
    while position < len(kql.rstrip()):
        match = TOKEN.match(kql, position)
        assert match, f"cannot read {kql[position:]!r}"
        position = match.end()
        string, number, name, op = match["string"], match["number"], match["name"], match["op"]
        if string is not None or number is not None:
            out.append(string or number)
        elif op is not None:
            out.append(op)
        elif name in ("and", "or", "not"):
            out.append(name)
        elif name == "in":
            out.append("in _values")
        elif name in FUNCTIONS:
            out.append(f"_f[{name!r}]")
        else:
            out.append(f"row[{name!r}]")
    return " ".join(out)


def shown(query: str, vault: Sequence[str], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that pass the query's `where` stages, with {Vault} set to `vault` (quoted with '
    and joined with , as the parameter declares; "All" is its selectAllValue '*')."""
    [table, *stages] = [s.strip() for s in query.split("\n|")]
    assert table == "KvguardFindings_CL"
    text = "|".join(stages).replace("{Vault}", ",".join(f"'{v}'" for v in vault))
    predicates = [python_predicate(s.removeprefix("where ")) for s in text.split("|")
                  if s.startswith("where ") and "{TimeRange}" not in s]
    # The expressions come from the workbook file, translated token by token: no other names get in.
    scope = {"_f": FUNCTIONS, "_values": _values}
    return [row for row in rows if all(eval(p, scope, {"row": row}) for p in predicates)]


def _values(*items: Any) -> set[Any]:
    """KQL's `x in (a, b)`."""
    return set(items)


def workbook() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((INFRA / "workbook.json").read_text())
    return loaded


def panel(name: str) -> str:
    [item] = [i for i in workbook()["items"] if i.get("name") == name]
    query: str = item["content"]["query"]
    return query


def findings(rows: list[dict[str, Any]], vault: Sequence[str]) -> list[tuple[str, str]]:
    return [(r["Rule"], r["ResourceId"].rsplit("/", 1)[-1]) for r in shown(panel("findings-by-rule"), vault, rows)]


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return sample_rows("13") + sample_rows("21") + sample_rows("22")


def test_the_vault_parameter_offers_no_single_vault_and_all_is_a_wildcard() -> None:
    [parameters] = [i for i in workbook()["items"] if i["type"] == 9]
    [vault] = [p for p in parameters["content"]["parameters"] if p["name"] == "Vault"]
    assert vault["typeSettings"]["selectAllValue"] == "*" and vault["defaultValue"] == "value::all"
    assert f"'{NO_VAULT}'" in vault["query"] and vault["quote"] == "'" and vault["delimiter"] == ","


def test_under_all_every_finding_shows_those_without_a_vault_too(rows: list[dict[str, Any]]) -> None:
    every = [r for r in rows if r["RecordType"] == "finding"]
    assert len(findings(rows, ["*"])) == len(every) > 0
    assert ("KV-SELF-02", "func-kvguard-prod") in findings(rows, ["*"])
    assert sum(r["VaultId"] is None for r in every) >= 3


def test_no_single_vault_shows_kvguards_own_deployment_and_the_resource_group_grant(
    rows: list[dict[str, Any]]
) -> None:
    rules = {rule for rule, _ in findings(rows, [NO_VAULT])}
    assert {"KV-SELF-02", "KV-RBAC-01"} <= rules
    assert all(r["VaultId"] is None for r in shown(panel("findings-by-rule"), [NO_VAULT], rows))


def test_a_vault_shows_the_grants_over_it_from_a_broader_scope(rows: list[dict[str, Any]]) -> None:
    billing = findings(rows, [f"{BILLING}/providers/Microsoft.KeyVault/vaults/kv-billing-prod"])
    assert "KV-RBAC-01" in {rule for rule, _ in billing}  # granted on rg-billing, reaching two vaults
    hr = findings(rows, [HR_VAULT])
    assert "KV-RBAC-02" in {rule for rule, _ in hr}  # granted on the subscription, reaching kv-hr-prod only
    assert "KV-SELF-02" not in {rule for rule, _ in hr + billing}


def test_the_revert_panel_counts_remediations_not_alerts() -> None:
    rows = sample_rows("15") + sample_rows("17")  # a diagnostic setting restored, an endpoint rejected
    reverts = shown(panel("time-to-revert"), ["*"], rows)
    assert [r["Handler"] for r in reverts] == ["restore_diagnostic_setting", "reject_private_endpoint"]
    alerts_with_latency = [r for r in rows if r["ActionKind"] == "alert" and r["LatencyToRevertMs"] is not None]
    assert len(alerts_with_latency) == 4  # the Defender and detection-topic alerts the old panel counted
