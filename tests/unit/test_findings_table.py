"""The rows of KvguardFindings_CL for the sample scenarios: every row says what was changed, a
change that reaches several vaults lists them and names no single one, and a broader-scope role
assignment names its scope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kvguard.findings_table import COLUMNS, rows
from kvguard.replay import build_run, replay
from kvguard.scenario import load_scenario

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "scenarios"
SUBSCRIPTION = "/subscriptions/5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"
BILLING = f"{SUBSCRIPTION}/resourceGroups/rg-billing"
HR_VAULT = f"{SUBSCRIPTION}/resourceGroups/rg-hr/providers/Microsoft.KeyVault/vaults/kv-hr-prod"


def sample_rows(prefix: str) -> list[dict[str, Any]]:
    [path] = SAMPLES.glob(f"{prefix}-*.yaml")
    return [row for outcome in replay(build_run(load_scenario(path))).outcomes for row in rows(outcome)]


def test_every_row_of_every_sample_names_the_changed_resource_and_its_vaults() -> None:
    for path in sorted(SAMPLES.glob("*.yaml")):
        for row in sample_rows(path.name.split("-")[0]):
            assert set(row) == set(COLUMNS)
            assert row["ResourceId"], (path.name, row)
            assert isinstance(row["Vaults"], list)
            assert row["VaultId"] == (row["Vaults"][0] if len(row["Vaults"]) == 1 else None), (path.name, row)


def test_a_role_assignment_over_a_resource_group_lists_its_vaults_and_scope() -> None:
    [grant] = [r for r in sample_rows("21") if r["Rule"] == "KV-RBAC-01" and r["RecordType"] == "finding"]
    assert grant["VaultId"] is None
    assert grant["Scope"] == BILLING
    assert grant["ResourceId"].startswith(f"{BILLING}/providers/Microsoft.Authorization/roleAssignments/")
    assert sorted(grant["Vaults"]) == [f"{BILLING}/providers/Microsoft.KeyVault/vaults/kv-billing-keys",
                                       f"{BILLING}/providers/Microsoft.KeyVault/vaults/kv-billing-prod"]
    [revert] = [r for r in sample_rows("21") if r["Handler"] == "remove_role_assignment"]
    assert revert["ResourceId"] == grant["ResourceId"] and revert["Vaults"] == grant["Vaults"]


def test_a_subscription_scope_assignment_over_one_vault_names_that_vault() -> None:
    [privileged] = [r for r in sample_rows("22") if r["Rule"] == "KV-RBAC-02" and r["RecordType"] == "finding"]
    assert privileged["Scope"] == SUBSCRIPTION
    assert privileged["Vaults"] == [HR_VAULT] and privileged["VaultId"] == HR_VAULT
    assert privileged["ResourceId"].startswith(f"{SUBSCRIPTION}/providers/Microsoft.Authorization/roleAssignments/")


def test_a_change_to_kvguards_own_deployment_says_what_was_changed() -> None:
    findings = [r for r in sample_rows("13") if r["RecordType"] == "finding"]
    assert [r["Rule"] for r in findings] == ["KV-SELF-02", "KV-SELF-02"]
    assert all(r["VaultId"] is None and r["Vaults"] == [] and r["Scope"] is None for r in findings)
    assert [r["ResourceId"].rsplit("/", 2)[-2] for r in findings] == ["sites", "eventSubscriptions"]
