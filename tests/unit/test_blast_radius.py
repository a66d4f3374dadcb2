"""The blast-radius queries take only well-formed ids into their text, read each audit table by its
own columns (AzureDiagnostics' optional ones only through `column_ifexists`), every text sent is
listed by `kql_texts`, grants of roles get their radius in the vaults they cover, and the summary
line reads well."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from kvguard.blast_radius import (
    AZURE_DIAGNOSTICS,
    PROBE_QUERY,
    RESOURCE_SPECIFIC,
    Activity,
    Operation,
    activity_query,
    enrich,
    kql_texts,
    summary,
)
from kvguard.detection import Finding

VAULT = "/subscriptions/5d4c3b2a-1908-4f7e-8d6c-b5a493827160/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-a"
OTHER = VAULT.replace("kv-a", "kv-b")
PRINCIPAL = "3c2b1a09-f8e7-4d6c-9b5a-493827160f5e"
OPTIONAL_DIAGNOSTICS_COLUMNS = ("identity_claim_oid_g",
                                "identity_claim_http_schemas_microsoft_com_identity_claims_objectidentifier_g", "id_s")
SINCE, UNTIL = datetime(2026, 11, 27, 10, 4, tzinfo=UTC), datetime(2026, 11, 27, 10, 5, tzinfo=UTC)


def test_the_resource_specific_query_reads_azkvauditlogs_by_its_own_columns() -> None:
    query = activity_query(RESOURCE_SPECIFIC, [VAULT], PRINCIPAL)
    assert query.startswith("AZKVAuditLogs\n")
    assert f"_ResourceId in~ ('{VAULT}')" in query and f"Principal =~ '{PRINCIPAL}'" in query
    assert "Identity.claim.oid" in query and "split(Id, '/')" in query
    # AZKVAuditLogs has neither the category columns nor AzureDiagnostics' flattened claims
    assert not re.search(r"\b(Category|ResourceProvider|identity_claim_\w+|id_s)\b", query)
    assert not re.search(r"(?<!_)\bResourceId\b", query)


def test_the_azure_diagnostics_query_names_its_optional_columns_only_through_column_ifexists() -> None:
    query = activity_query(AZURE_DIAGNOSTICS, [VAULT], PRINCIPAL)
    assert query.startswith("AzureDiagnostics\n") and "Category == 'AuditEvent'" in query
    assert f"_ResourceId in~ ('{VAULT}')" in query and f"Principal =~ '{PRINCIPAL}'" in query
    for column in OPTIONAL_DIAGNOSTICS_COLUMNS:
        assert query.count(column) == query.count(f"column_ifexists('{column}', '')") == 1, column


def test_several_vaults_are_one_query() -> None:
    query = activity_query(RESOURCE_SPECIFIC, [VAULT, OTHER], PRINCIPAL)
    assert f"_ResourceId in~ ('{VAULT}', '{OTHER}')" in query and "by Vault = tolower(_ResourceId)" in query


def test_kql_texts_are_every_text_the_blast_radius_sends() -> None:
    texts = kql_texts()
    assert texts["probe"] == PROBE_QUERY and PROBE_QUERY.startswith("union isfuzzy=true (AZKVAuditLogs")
    assert texts["activity AZKVAuditLogs"].startswith("AZKVAuditLogs\n")
    assert texts["activity AzureDiagnostics"].startswith("AzureDiagnostics\n")
    assert len(texts) == 3


@pytest.mark.parametrize(("vaults", "principal"), [
    ([VAULT + "' or 1==1 //"], PRINCIPAL),
    ([VAULT, "/subscriptions/x/resourceGroups/rg"], PRINCIPAL),
    ([], PRINCIPAL),
    ([VAULT], "' | take 1000000 //"),
    ([VAULT], "user@contoso.example"),
    ([VAULT], "------------------------------------"),
])
@pytest.mark.parametrize("table", [RESOURCE_SPECIFIC, AZURE_DIAGNOSTICS])
def test_anything_but_vault_ids_and_an_object_id_is_refused(table: str, vaults: list[str], principal: str) -> None:
    with pytest.raises(ValueError):
        activity_query(table, vaults, principal)  # type: ignore[arg-type]


def finding(rule: str, **evidence: Any) -> Finding:
    return Finding(rule, "a grant", "high", 70, evidence, (), None)


class Answering:
    """An audit log that answers every question with the same operations, and notes the questions."""

    def __init__(self, operations: list[Operation]) -> None:
        self.operations = operations
        self.asked: list[tuple[list[str], str]] = []

    def activity(self, vault_ids: Sequence[str], principal_id: str, since: datetime, until: datetime) -> Activity:
        self.asked.append((list(vault_ids), principal_id))
        return Activity(self.operations, RESOURCE_SPECIFIC)


def test_a_role_grant_is_enriched_in_the_vaults_it_covers_and_names_each_operations_vault() -> None:
    role_grant = finding("KV-RBAC-01", principalId=PRINCIPAL.upper(), vaults=[VAULT, OTHER])
    privileged = finding("KV-RBAC-02", principalId=PRINCIPAL, vaults=[VAULT])
    log = Answering([Operation("SecretGet", "secrets/db", 2, OTHER.lower())])
    enriched, not_a_grant = enrich([role_grant, privileged], [VAULT], SINCE, UNTIL, log)
    assert log.asked == [([VAULT, OTHER], PRINCIPAL)]
    radius = enriched.evidence["blast_radius"]
    assert radius["operations"] == [{"operation": "SecretGet", "object": "secrets/db", "count": 2, "vault": OTHER}]
    assert radius["table"] == "AZKVAuditLogs" and radius["total"] == 2
    assert "blast_radius" not in not_a_grant.evidence
    assert summary(radius) == ("2 operation(s) between 2026-11-27T10:04:00+00:00 and 2026-11-27T10:05:00+00:00: "
                               "SecretGet kv-b/secrets/db (2)")


def test_an_access_policy_grant_is_enriched_in_its_vault() -> None:
    grant = finding("KV-AP-01", objectId=PRINCIPAL)
    log = Answering([Operation("SecretList", "", 1, VAULT.lower())])
    [enriched] = enrich([grant], [VAULT], SINCE, UNTIL, log)
    assert log.asked == [([VAULT], PRINCIPAL)]
    assert enriched.evidence["blast_radius"]["operations"] == [{"operation": "SecretList", "object": "", "count": 1}]


def test_summary_lines() -> None:
    radius = {"from": "2026-11-27T10:04:05+00:00", "to": "2026-11-27T10:04:07+00:00", "total": 3,
              "operations": [{"operation": "SecretGet", "object": "secrets/db", "count": 2},
                             {"operation": "SecretList", "object": "", "count": 1}]}
    assert summary(radius) == ("3 operation(s) between 2026-11-27T10:04:05+00:00 and 2026-11-27T10:04:07+00:00: "
                               "SecretGet secrets/db (2), SecretList (1)")
    assert summary({**radius, "operations": [], "total": 0}) == (
        "0 operation(s) between 2026-11-27T10:04:05+00:00 and 2026-11-27T10:04:07+00:00: none recorded")
    failed = "audit log query failed: HttpResponseError"
    assert summary({"error": failed}) == failed
    assert summary(None) is None
