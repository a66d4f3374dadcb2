"""PolicyGateway (azure-mgmt-resource's PolicyClient) against the HTTPS ARM fake: exemptions and
assignments read raw, written, deleted and listed at a vault with `atScope()`, definitions read at
every scope they live at, each at the API version its type is pinned to; and the definitions'
verdicts kept for the process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detectors.cases import (
    KEY_VAULT_POLICY_RULE,
    RESOURCE_GROUP_ID,
    SUBSCRIPTION,
    SUBSCRIPTION_ID,
    VAULT_ID,
    exemption,
    policy_assignment,
    policy_definition,
)
from kvguard.adapters.authorization import AuthorizationGateway
from kvguard.adapters.policy import PolicyGateway
from kvguard.adapters.resources import ArmResourceGateway, RoutedResourceGateway
from kvguard.azure_policy import PolicyDefinitions
from kvguard.ports import PermanentError
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake

MG = "/providers/Microsoft.Management/managementGroups/contoso"
MG_DEFINITION = f"{MG}/providers/Microsoft.Authorization/policyDefinitions/kv-firewall"
SUB_DEFINITION = f"{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/policyDefinitions/storage-https"
INITIATIVE = f"{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/policySetDefinitions/baseline"
STORAGE_RULE = {"if": {"field": "type", "equals": "Microsoft.Storage/storageAccounts"}, "then": {"effect": "deny"}}
OTHER_GROUP = f"{SUBSCRIPTION_ID}/resourceGroups/rg-payments-eu"  # a prefix of no scope of the vault


def initiative() -> dict[str, Any]:
    return {"id": INITIATIVE, "name": "baseline", "type": "Microsoft.Authorization/policySetDefinitions",
            "properties": {"policyType": "Custom", "policyDefinitions": [
                {"policyDefinitionId": SUB_DEFINITION, "policyDefinitionReferenceId": "https"},
                {"policyDefinitionId": MG_DEFINITION, "policyDefinitionReferenceId": "firewall"}]}}


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        for doc in (policy_definition(KEY_VAULT_POLICY_RULE), policy_assignment(), exemption(),
                    exemption(scope=OTHER_GROUP, name="elsewhere"),
                    policy_assignment(scope=OTHER_GROUP, name="elsewhere"),
                    policy_definition(STORAGE_RULE, SUB_DEFINITION),
                    policy_definition({"if": {"field": "Microsoft.KeyVault/vaults/networkAcls.defaultAction",
                                              "equals": "Allow"}, "then": {"effect": "audit"}}, MG_DEFINITION),
                    initiative()):
            running.add_policy(doc)
        yield running


@pytest.fixture
def gateway(fake: ArmFake, tmp_path: Path) -> Iterator[PolicyGateway]:
    gw = PolicyGateway(FakeCredential(), endpoint=fake.base_url,
                       connection_verify=str(fake.write_ca_bundle(tmp_path / "ca.pem")),
                       retry_total=1, retry_backoff_factor=0.01, retry_backoff_max=0.05)
    yield gw
    gw.close()


def test_exemptions_and_assignments_are_read_raw_at_their_pinned_versions(
        gateway: PolicyGateway, fake: ArmFake) -> None:
    assert gateway.get(exemption()["id"]) == exemption()  # every field ARM sent, REST names
    assert gateway.get(policy_assignment()["id"]) == policy_assignment()
    assert gateway.get(f"{RESOURCE_GROUP_ID}/providers/Microsoft.Authorization/policyExemptions/gone") is None
    versions = {r.path.rsplit("/", 2)[-2].lower(): r.param("api-version") for r in fake.requests}
    assert versions == {"policyexemptions": "2022-07-01-preview", "policyassignments": "2023-04-01"}


def test_definitions_are_read_built_in_per_subscription_and_per_management_group(gateway: PolicyGateway) -> None:
    gateway.get(VAULT_ID.replace("/providers/Microsoft.KeyVault/vaults/kv-payments",
                                 "/providers/Microsoft.Authorization/policyExemptions/x"))  # a subscription seen
    assert gateway.get(policy_definition(KEY_VAULT_POLICY_RULE)["id"]) == policy_definition(KEY_VAULT_POLICY_RULE)
    assert gateway.get(SUB_DEFINITION) == policy_definition(STORAGE_RULE, SUB_DEFINITION)
    assert (gateway.get(MG_DEFINITION) or {}).get("id") == MG_DEFINITION
    assert gateway.get(INITIATIVE) == initiative()
    assert gateway.get(f"{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/policyDefinitions/gone") is None


def test_put_and_delete_of_an_exemption(gateway: PolicyGateway, fake: ArmFake) -> None:
    widened = exemption(expires=None)
    written = gateway.put(widened["id"], {"type": widened["type"], "properties": exemption()["properties"]})
    assert written["properties"]["expiresOn"] == "2026-12-31T00:00:00Z"
    assert fake.policy_resource(widened["id"]) == exemption()
    assert gateway.delete(exemption()["id"]) is True
    assert fake.policy_resource(exemption()["id"]) is None
    assert gateway.delete(exemption()["id"]) is False  # 204: already gone
    assert [r.param("api-version") for r in fake.requests_to("DELETE", "/policyExemptions/")] == \
        ["2022-07-01-preview"] * 2


def test_put_of_an_assignment_keeps_what_the_body_says(gateway: PolicyGateway, fake: ArmFake) -> None:
    loosened = policy_assignment("DoNotEnforce")
    gateway.put(loosened["id"], loosened)
    assert fake.policy_resource(loosened["id"]) == loosened
    assert gateway.delete(loosened["id"]) is True and fake.policy_resource(loosened["id"]) is None


def test_definitions_are_never_written(gateway: PolicyGateway) -> None:
    with pytest.raises(PermanentError, match="never writes policy definitions"):
        gateway.put(SUB_DEFINITION, {"properties": {}})


def test_listing_at_a_vault_gives_what_applies_there_with_rest_names(gateway: PolicyGateway) -> None:
    assignments = gateway.list_at_scope(VAULT_ID, "Microsoft.Authorization/policyAssignments")
    assert [a["id"] for a in assignments] == [policy_assignment()["id"]]
    assert assignments[0]["properties"]["policyDefinitionId"] == policy_assignment()["properties"]["policyDefinitionId"]
    assert assignments[0]["properties"]["enforcementMode"] == "Default"
    exemptions = gateway.list_at_scope(VAULT_ID, "Microsoft.Authorization/policyExemptions")
    assert [e["id"] for e in exemptions] == [exemption()["id"]]
    assert exemptions[0]["properties"]["policyAssignmentId"] == policy_assignment()["id"]
    assert gateway.list_at_scope(VAULT_ID, "Microsoft.Authorization/locks") == []


def test_the_routed_gateway_sends_policy_to_the_policy_client(fake: ArmFake, tmp_path: Path) -> None:
    verify = {"connection_verify": str(fake.write_ca_bundle(tmp_path / "ca.pem")), "retry_total": 1}
    routed = RoutedResourceGateway(AuthorizationGateway(FakeCredential(), endpoint=fake.base_url, **verify),
                                   ArmResourceGateway(FakeCredential(), endpoint=fake.base_url, **verify),
                                   policy=PolicyGateway(FakeCredential(), endpoint=fake.base_url, **verify))
    assert routed.get(exemption()["id"]) == exemption()
    assert [a["id"] for a in routed.list_at_scope(VAULT_ID, "Microsoft.Authorization/policyAssignments")] == \
        [policy_assignment()["id"]]
    from importlib.metadata import version

    user_agents = {r.headers.get("user-agent", "").split(" ")[0] for r in fake.requests_to("GET", "/policy")}
    assert len(user_agents) == 1 and user_agents.pop().endswith(f"mgmt-resource/{version('azure-mgmt-resource')}")


def test_definitions_are_read_once_per_process_and_members_of_a_set_count(gateway: PolicyGateway,
                                                                          fake: ArmFake) -> None:
    gateway.get(exemption()["id"])  # a subscription seen (management-group reads use its client)
    definitions = PolicyDefinitions(gateway.get)
    assert definitions.names_key_vault(INITIATIVE) is True  # its management-group member has a Key Vault alias
    assert definitions.names_key_vault(SUB_DEFINITION) is False
    assert definitions.names_key_vault(policy_definition(KEY_VAULT_POLICY_RULE)["id"]) is True
    reads = len(fake.requests_to("GET", "/policy(set)?definitions/"))
    assert definitions.names_key_vault(INITIATIVE) is True
    assert definitions.names_key_vault(MG_DEFINITION) is True
    assert len(fake.requests_to("GET", "/policy(set)?definitions/")) == reads == 4
    assert SUBSCRIPTION in INITIATIVE
