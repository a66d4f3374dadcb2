"""AuthorizationGateway: the real azure-mgmt-authorization client against the local HTTPS ARM fake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvguard.adapters.authorization import AuthorizationGateway
from kvguard.ports import PermanentError, TransientError
from kvguard.roles import role_from_arm
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake

SUB = "6f1c0a52-7d3e-4b8a-9e21-5c4d3b2a1f00"
RG = f"/subscriptions/{SUB}/resourceGroups/rg-payments"
VAULT_ID = f"{RG}/providers/Microsoft.KeyVault/vaults/kv-payments-01"
MG = "/providers/Microsoft.Management/managementGroups/mg-root"
DEFINITIONS = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions"
SECRETS_USER = f"{DEFINITIONS}/4633458b-17de-408a-b874-0445c86b69e6"
CUSTOM = f"{DEFINITIONS}/c0c0a000-1111-4222-8333-444455556666"


def assignment(scope: str, name: str, role: str = SECRETS_USER) -> dict[str, Any]:
    return {"id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}", "name": name,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {"roleDefinitionId": role, "principalId": "badc0de0-7777-4888-9999-aaaabbbbcccc",
                           "principalType": "User", "scope": scope, "createdBy": "someone"}}


AT_VAULT = assignment(VAULT_ID, "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e")
AT_GROUP = assignment(RG, "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f")
AT_MG = assignment(MG, "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a")
ON_SECRET = assignment(f"{VAULT_ID}/secrets/db-password", "3e4f5a6b-7c8d-4e9f-8a0b-1c2d3e4f5a6b")


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        for doc in (AT_VAULT, AT_GROUP, AT_MG, ON_SECRET):
            running.add_authorization(doc)
        running.add_authorization({
            "id": CUSTOM, "name": CUSTOM.rsplit("/", 1)[-1], "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {"roleName": "payments operator", "type": "CustomRole",
                           "permissions": [{"actions": [], "dataActions": ["Microsoft.KeyVault/vaults/secrets/*"]}]},
        })
        yield running


@pytest.fixture
def gateway(fake: ArmFake, tmp_path: Path) -> Iterator[AuthorizationGateway]:
    gw = AuthorizationGateway(FakeCredential(), endpoint=fake.base_url,
                              connection_verify=str(fake.write_ca_bundle(tmp_path / "ca.pem")),
                              retry_total=1, retry_backoff_factor=0.01, retry_backoff_max=0.05)
    yield gw
    gw.close()


def test_get_returns_the_raw_arm_json_or_none(gateway: AuthorizationGateway) -> None:
    assert gateway.get(AT_VAULT["id"]) == AT_VAULT  # every field ARM sent, REST names
    assert gateway.get(ON_SECRET["id"]) == ON_SECRET
    assert gateway.get(AT_MG["id"]) == AT_MG
    assert gateway.get(f"{VAULT_ID}/providers/Microsoft.Authorization/roleAssignments/gone") is None


def test_a_custom_role_definition_is_read_and_judged(gateway: AuthorizationGateway) -> None:
    definition = gateway.get(CUSTOM)
    assert definition is not None and role_from_arm(definition).reads_secret_values
    assert gateway.get(CUSTOM.replace("c0c0a000", "d0d0a000")) is None


def test_delete_answers_200_then_204_and_both_are_success(gateway: AuthorizationGateway, fake: ArmFake) -> None:
    assert gateway.delete(AT_VAULT["id"]) is True
    assert fake.authorization_resource(AT_VAULT["id"]) is None
    assert gateway.delete(AT_VAULT["id"]) is False  # 204: already gone
    statuses = [r.method for r in fake.requests_to("DELETE", "/roleAssignments/")]
    assert statuses == ["DELETE", "DELETE"]


def test_only_role_assignments_are_deleted(gateway: AuthorizationGateway) -> None:
    with pytest.raises(PermanentError, match="role assignments only"):
        gateway.delete(CUSTOM)


def test_list_at_scope_includes_inherited_ones_and_those_below_the_vault_once(gateway: AuthorizationGateway,
                                                                              fake: ArmFake) -> None:
    listed = gateway.list_at_scope(VAULT_ID, "Microsoft.Authorization/roleAssignments")
    assert sorted(d["id"] for d in listed) == sorted([AT_VAULT["id"], AT_GROUP["id"], AT_MG["id"], ON_SECRET["id"]])
    assert {d["properties"]["principalId"] for d in listed} == {"badc0de0-7777-4888-9999-aaaabbbbcccc"}
    requests = fake.requests_to("GET", "/roleAssignments$")
    assert sorted(str(r.param("$filter")) for r in requests) == ["None", "atScope()"]  # inherited, then below
    assert gateway.list_at_scope(VAULT_ID, "Microsoft.Insights/diagnosticSettings") == []


def test_throttling_that_outlives_the_retries_is_transient(gateway: AuthorizationGateway, fake: ArmFake) -> None:
    fake.inject("GET", "/roleAssignments/", status=429, times=5, headers={"Retry-After": "0"})
    with pytest.raises(TransientError):
        gateway.get(AT_VAULT["id"])


def test_a_refusal_is_permanent(gateway: AuthorizationGateway, fake: ArmFake) -> None:
    fake.inject("DELETE", "/roleAssignments/", status=403,
                body={"error": {"code": "AuthorizationFailed", "message": "condition not met"}})
    with pytest.raises(PermanentError, match="403"):
        gateway.delete(AT_GROUP["id"])
