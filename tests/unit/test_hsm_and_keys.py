"""Managed HSMs as vaults of kind `hsm`, and the reading of a key's lifetime settings (KV-KEY-01)."""

from __future__ import annotations

import json

import pytest

from detectors.cases import HSM_ID, KEY_ID, SUBSCRIPTION, TENANT, VAULT_ID, managed_hsm, rotation_policy, vault_key_doc
from detectors.keys import duration_days, rotation_age_days
from kvguard.events import VaultEvent, parse
from kvguard.ids import parse_vault_ref
from kvguard.policy import Policy
from kvguard.resources import resource_change, resource_types_at, scope_of
from kvguard.vault import VaultConfig


def resource_event(resource_uri: str, operation: str) -> VaultEvent:
    [parsed] = parse(json.dumps({
        "id": "evt-1", "subject": resource_uri, "eventType": "Microsoft.Resources.ResourceActionSuccess",
        "eventTime": "2026-11-25T10:00:00Z", "dataVersion": "2",
        "data": {"resourceUri": resource_uri, "operationName": operation, "status": "Succeeded",
                 "subscriptionId": SUBSCRIPTION, "tenantId": TENANT},
    }))
    assert isinstance(parsed, VaultEvent), parsed
    return parsed


@pytest.mark.parametrize(("operation", "kind"), [
    ("Microsoft.KeyVault/managedHSMs/write", "write"), ("Microsoft.KeyVault/managedHSMs/delete", "delete")])
def test_an_hsm_write_or_delete_is_a_vault_change_of_kind_hsm(operation: str, kind: str) -> None:
    event = resource_event(HSM_ID.lower() + "/", operation)
    assert event.kind == kind and event.vault is not None
    assert (event.vault.kind, event.vault.key, event.resource) == ("hsm", HSM_ID.lower(), None)


def test_an_hsm_purge_names_the_deleted_hsm() -> None:
    location = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.KeyVault/locations/westeurope"
    deleted = f"{location}/deletedManagedHSMs/hsm-1"
    event = resource_event(deleted, "Microsoft.KeyVault/locations/deletedManagedHSMs/purge/action")
    assert event.kind == "purge" and event.vault is not None
    assert (event.vault.kind, event.vault.name, event.vault.resource_group) == ("hsm", "hsm-1", None)
    deleted_vault = parse_vault_ref(deleted.replace("deletedManagedHSMs", "deletedVaults"))
    assert deleted_vault is not None and deleted_vault.kind == "vault"


def test_a_key_write_is_a_resource_under_its_vault() -> None:
    event = resource_event(KEY_ID, "Microsoft.KeyVault/vaults/keys/write")
    assert event.vault is not None and event.vault.key == VAULT_ID.lower()
    assert event.resource == resource_change("Microsoft.KeyVault/vaults/keys/write", KEY_ID)
    assert event.resource is not None and event.resource.type == "Microsoft.KeyVault/vaults/keys"
    assert scope_of(KEY_ID) == VAULT_ID


def test_an_hsm_connection_applies_to_the_hsm() -> None:
    connection = f"{HSM_ID}/privateEndpointConnections/pe-1"
    change = resource_change("Microsoft.KeyVault/managedHSMs/privateEndpointConnections/write", connection)
    assert change is not None and change.scope == HSM_ID


def test_each_kind_lists_the_child_types_it_holds() -> None:
    at_vault, at_hsm = set(resource_types_at(VAULT_ID)), set(resource_types_at(HSM_ID))
    assert "Microsoft.KeyVault/vaults/keys" in at_vault - at_hsm
    assert "Microsoft.KeyVault/managedHSMs/privateEndpointConnections" in at_hsm - at_vault
    assert {"Microsoft.Authorization/locks", "Microsoft.Insights/diagnosticSettings"} <= at_vault & at_hsm


def test_an_hsm_document_parses_with_its_sku_beside_its_properties() -> None:
    config = VaultConfig.from_arm(managed_hsm(enableSoftDelete=None, softDeleteRetentionInDays=None))
    assert (config.kind, config.sku_name) == ("hsm", "standard_b1")
    # Every Managed HSM API version has soft delete on by default, retention 90 days.
    assert (config.enable_soft_delete, config.soft_delete_retention_days) == (True, 90)
    assert config.enable_rbac_authorization is None and config.access_policies == ()


def test_the_policy_protects_hsms_unless_told_not_to() -> None:
    assert Policy().protects(HSM_ID) and Policy().protects(VAULT_ID)
    off = Policy.model_validate({"protect_managed_hsms": False})
    assert not off.protects(HSM_ID) and off.protects(VAULT_ID)


@pytest.mark.parametrize(("text", "days"), [
    ("P90D", 90), ("P18M", 540), ("P2Y", 730), ("P1Y6M", 545), ("P2W", 14), ("PT48H", 2), ("p30d", 30)])
def test_key_vault_durations_in_days(text: str, days: float) -> None:
    assert duration_days(text) == days


@pytest.mark.parametrize("text", ["", "P", "PT", "90D", "P1.5Y", None, 30])
def test_what_is_no_duration(text: object) -> None:
    assert duration_days(text) is None


def test_the_soonest_rotate_action_decides_the_rotation_age() -> None:
    both = rotation_policy(("Rotate", "timeAfterCreate", "P1Y"), ("Rotate", "timeBeforeExpiry", "P30D"),
                           expiry="P90D")
    assert rotation_age_days(vault_key_doc(rotation=both)) == 60
    assert rotation_age_days(vault_key_doc(rotation=rotation_policy(("Notify", "timeBeforeExpiry", "P30D")))) is None
    no_expiry = rotation_policy(("Rotate", "timeBeforeExpiry", "P30D"), expiry=None)
    assert rotation_age_days(vault_key_doc(rotation=no_expiry)) is None
    assert rotation_age_days(vault_key_doc(rotation=None)) is None
