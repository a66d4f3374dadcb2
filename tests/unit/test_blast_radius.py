"""The blast-radius query takes only well-formed ids into its text, and the summary line reads well."""

from __future__ import annotations

import pytest

from kvguard.adapters.loganalytics import activity_query
from kvguard.blast_radius import summary

VAULT = "/subscriptions/5d4c3b2a-1908-4f7e-8d6c-b5a493827160/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-a"
PRINCIPAL = "3c2b1a09-f8e7-4d6c-9b5a-493827160f5e"


def test_the_query_filters_on_the_vault_and_the_principal() -> None:
    query = activity_query(VAULT, PRINCIPAL)
    assert f"_ResourceId =~ '{VAULT}'" in query
    assert f"column_ifexists('identity_claim_oid_g', '') =~ '{PRINCIPAL}'" in query
    assert query.startswith("AzureDiagnostics") and "Category == 'AuditEvent'" in query


@pytest.mark.parametrize(("vault", "principal"), [
    (VAULT + "' or 1==1 //", PRINCIPAL),
    ("/subscriptions/x/resourceGroups/rg", PRINCIPAL),
    (VAULT, "' | take 1000000 //"),
    (VAULT, "user@contoso.example"),
])
def test_anything_but_a_vault_id_and_an_object_id_is_refused(vault: str, principal: str) -> None:
    with pytest.raises(ValueError):
        activity_query(vault, principal)


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
