"""The Azure Policy judgements: which definitions name Key Vault (and which sets, through their
members, read once per process), how far an exemption reaches, and which notScopes leave a vault out."""

from __future__ import annotations

from typing import Any

import pytest

from detectors.cases import (
    KEY_VAULT_POLICY_RULE,
    RESOURCE_GROUP_ID,
    SUBSCRIPTION_ID,
    VAULT_ID,
    exemption,
    policy_assignment,
    policy_definition,
    vault,
)
from kvguard.azure_policy import (
    PolicyDefinitions,
    excluding_scopes,
    exemption_applies,
    names_key_vault,
    widenings,
)
from kvguard.vault import VaultConfig

STORAGE_RULE = {"if": {"field": "type", "equals": "Microsoft.Storage/storageAccounts"}, "then": {"effect": "deny"}}


@pytest.mark.parametrize(("rule", "mode", "expected"), [
    (KEY_VAULT_POLICY_RULE, "Indexed", True),
    ({"if": {"field": "type", "in": ["Microsoft.Sql/servers", "microsoft.keyvault/vaults"]}, "then": {}}, "All", True),
    ({"if": {"field": "type", "like": "Microsoft.KeyVault/*"}, "then": {}}, "All", True),
    ({"if": {"count": {"field": "Microsoft.KeyVault/vaults/networkAcls.ipRules[*]", "where": {
        "field": "Microsoft.KeyVault/vaults/networkAcls.ipRules[*].value", "equals": "0.0.0.0/0"}},
        "greater": 0}, "then": {}}, "Indexed", True),
    ({"if": {"field": "Microsoft.KeyVault.Data/vaults/secrets/attributes.expiresOn", "exists": False}, "then": {}},
     "Microsoft.KeyVault.Data", True),
    (STORAGE_RULE, "Indexed", False),
    # a Key Vault name outside any condition (the effect's details) is not a rule about vaults
    ({"if": {"field": "type", "equals": "Microsoft.Compute/virtualMachines"},
      "then": {"effect": "auditIfNotExists", "details": {"type": "Microsoft.KeyVault/vaults"}}}, "Indexed", False),
    ({"if": {"field": "location", "notIn": ["westeurope"]}, "then": {"effect": "deny"}}, "All", False),
])
def test_a_definition_names_key_vault_by_a_type_condition_an_alias_or_its_mode(
        rule: dict[str, Any], mode: str, expected: bool) -> None:
    assert names_key_vault(policy_definition(rule, mode=mode)) is expected


SET_ID = f"{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/policySetDefinitions/baseline"
STORAGE_ID = f"{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/policyDefinitions/storage"
KV_ID = "/providers/Microsoft.Authorization/policyDefinitions/kv"


def _set(*members: str) -> dict[str, Any]:
    return {"id": SET_ID, "type": "Microsoft.Authorization/policySetDefinitions",
            "properties": {"policyDefinitions": [{"policyDefinitionId": m} for m in members]}}


def test_a_set_names_key_vault_when_any_member_does_and_each_definition_is_read_once() -> None:
    world = {SET_ID.lower(): _set(STORAGE_ID, KV_ID), STORAGE_ID.lower(): policy_definition(STORAGE_RULE, STORAGE_ID),
             KV_ID.lower(): policy_definition(KEY_VAULT_POLICY_RULE, KV_ID)}
    reads: list[str] = []

    def read(definition_id: str) -> dict[str, Any] | None:
        reads.append(definition_id)
        return world.get(definition_id.lower())

    definitions = PolicyDefinitions(read)
    assert definitions.names_key_vault(SET_ID) is True
    assert definitions.names_key_vault(SET_ID.upper()) is True
    assert definitions.names_key_vault(STORAGE_ID) is False
    assert definitions.names_key_vault(KV_ID) is True
    assert reads == [SET_ID, STORAGE_ID, KV_ID]


def test_an_unreadable_member_leaves_the_set_undecided_and_is_asked_again() -> None:
    world: dict[str, dict[str, Any]] = {SET_ID.lower(): _set(STORAGE_ID, KV_ID),
                                        STORAGE_ID.lower(): policy_definition(STORAGE_RULE, STORAGE_ID)}
    definitions = PolicyDefinitions(lambda definition_id: world.get(definition_id.lower()))
    assert definitions.names_key_vault(SET_ID) is None
    assert definitions.names_key_vault(f"{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/policyDefinitions/x") \
        is None
    world[KV_ID.lower()] = policy_definition(KEY_VAULT_POLICY_RULE, KV_ID)  # readable again
    assert definitions.names_key_vault(SET_ID) is True


def test_a_set_of_other_services_does_not_name_key_vault() -> None:
    world = {SET_ID.lower(): _set(STORAGE_ID), STORAGE_ID.lower(): policy_definition(STORAGE_RULE, STORAGE_ID)}
    assert PolicyDefinitions(lambda definition_id: world.get(definition_id.lower())).names_key_vault(SET_ID) is False


PAYMENTS = VaultConfig.from_arm(vault())  # in westeurope


@pytest.mark.parametrize(("selectors", "applies"), [
    (None, True),
    ([], True),
    ([{"name": "kv", "selectors": [{"kind": "resourceType", "in": ["microsoft.keyvault/vaults"]}]}], True),
    ([{"name": "st", "selectors": [{"kind": "resourceType", "in": ["Microsoft.Storage/storageAccounts"]}]}], False),
    ([{"name": "not-kv", "selectors": [{"kind": "resourceType", "notIn": ["Microsoft.KeyVault/vaults"]}]}], False),
    ([{"name": "eu", "selectors": [{"kind": "resourceLocation", "in": ["West Europe"]}]}], True),
    ([{"name": "us", "selectors": [{"kind": "resourceLocation", "in": ["eastus"]}]},
      {"name": "kv", "selectors": [{"kind": "resourceType", "in": ["Microsoft.KeyVault/vaults"]}]}], True),
    ([{"name": "kv-in-us", "selectors": [{"kind": "resourceType", "in": ["Microsoft.KeyVault/vaults"]},
                                         {"kind": "resourceLocation", "in": ["eastus"]}]}], False),
    ([{"name": "no-location", "selectors": [{"kind": "resourceWithoutLocation", "in": ["true"]}]}], False),
])
def test_an_exemption_reaches_the_vault_through_its_resource_selectors(
        selectors: list[dict[str, Any]] | None, applies: bool) -> None:
    assert exemption_applies(exemption(selectors=selectors), PAYMENTS) is applies


def test_widenings_name_each_way_an_exemption_grew() -> None:
    narrow = exemption(references=("purge",), expires="2026-12-31T00:00:00Z")
    assert widenings(narrow, narrow) == []
    assert widenings(narrow, exemption(references=("purge", "soft-delete"))) == [
        "definition references added: soft-delete"]
    assert widenings(narrow, exemption(references=(), expires=None)) == [
        "all definitions of the assignment", "expiry removed"]
    assert widenings(narrow, exemption(references=("purge",), expires="2027-01-01T00:00:00+00:00")) == [
        "expiry pushed out"]
    assert widenings(narrow, exemption(references=("PURGE",), expires="2026-12-31T00:00:00.000Z")) == []
    other = f"{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/policyAssignments/other"
    assert widenings(narrow, exemption(references=("purge",), assignment_id=other)) == [
        "another policy assignment exempted"]
    # narrowing is no widening
    assert widenings(exemption(expires=None), exemption()) == []


def test_not_scopes_leave_a_vault_out_segment_wise_and_case_insensitively() -> None:
    group = RESOURCE_GROUP_ID.lower()
    assert excluding_scopes(policy_assignment(not_scopes=(group,)), VAULT_ID) == [group]
    assert excluding_scopes(policy_assignment(not_scopes=(VAULT_ID.upper(),)), VAULT_ID) == [VAULT_ID.upper()]
    assert excluding_scopes(policy_assignment(not_scopes=(RESOURCE_GROUP_ID[:-2],)), VAULT_ID) == []  # rg-payme…
    assert excluding_scopes(policy_assignment(not_scopes=(f"{VAULT_ID}/secrets/db",)), VAULT_ID) == []
    assert excluding_scopes(policy_assignment(), VAULT_ID) == []
