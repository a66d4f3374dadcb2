"""Resource-id parsing and the case rules: one vault, one key, whatever spelling reached us."""

from __future__ import annotations

import pytest

from kvguard.ids import parse_vault_ref, subscription_of, vault_key

SUB = "2b7e4c1a-93d0-4f6e-8a15-c0d9e8f7a6b5"
VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-ledger/providers/Microsoft.KeyVault/vaults/kv-ledger"
DELETED = f"/subscriptions/{SUB}/providers/Microsoft.KeyVault/locations/northeurope/deletedVaults/kv-ledger"


@pytest.mark.parametrize(
    "resource_id",
    [
        VAULT,
        VAULT.replace("resourceGroups", "resourcegroups"),
        VAULT.replace("Microsoft.KeyVault", "microsoft.keyvault").replace("/vaults/", "/VAULTS/"),
        VAULT.upper().replace(SUB.upper(), SUB).replace("KV-LEDGER", "kv-ledger").replace("RG-LEDGER", "rg-ledger"),
        VAULT + "/",
        f"  {VAULT}  ",
        VAULT.lstrip("/"),
    ],
    ids=["as written", "resourcegroups", "provider lower case", "upper case", "trailing slash", "blanks",
         "no leading slash"],
)
def test_every_spelling_of_a_vault_id_names_the_same_vault(resource_id: str) -> None:
    ref = parse_vault_ref(resource_id)
    assert ref is not None
    assert (ref.subscription_id, ref.resource_group, ref.name) == (SUB, "rg-ledger", "kv-ledger")
    assert ref.location is None
    assert ref.key == vault_key(VAULT)
    assert not ref.id.endswith("/")


def test_the_id_keeps_its_spelling_and_the_key_is_lower_case() -> None:
    spelled = VAULT.replace("resourceGroups", "resourcegroups")
    ref = parse_vault_ref(spelled)
    assert ref is not None
    assert ref.id == spelled
    assert ref.key == spelled.lower()


@pytest.mark.parametrize(
    "suffix",
    ["/accessPolicies/add", "/accessPolicies/replace", "/accesspolicies/REMOVE", "/secrets/db-password",
     "/keys/cmk/versions/0a1b2c", "/providers/Microsoft.Insights/diagnosticSettings/to-law", "/"],
)
def test_sub_resource_ids_are_trimmed_to_the_vault(suffix: str) -> None:
    ref = parse_vault_ref(VAULT + suffix)
    assert ref is not None
    assert ref.id == VAULT
    assert ref.name == "kv-ledger"


@pytest.mark.parametrize(
    ("resource_id", "expected_id"),
    [
        (DELETED, DELETED),
        (DELETED + "/", DELETED),
        (DELETED + "/purge", DELETED),
        (DELETED.replace("deletedVaults", "deletedvaults"), DELETED.replace("deletedVaults", "deletedvaults")),
    ],
)
def test_a_deleted_vault_id_is_kept_with_its_location_and_no_resource_group(resource_id: str, expected_id: str) -> None:
    ref = parse_vault_ref(resource_id)
    assert ref is not None
    assert ref.id == expected_id
    assert (ref.subscription_id, ref.name, ref.location, ref.resource_group) == (SUB, "kv-ledger", "northeurope", None)
    assert ref.key == DELETED.lower()


@pytest.mark.parametrize(
    "resource_id",
    [
        None,
        "",
        "   ",
        f"/subscriptions/{SUB}",
        f"/subscriptions/{SUB}/resourceGroups/rg-ledger",
        f"/subscriptions/{SUB}/resourceGroups/rg-ledger/providers/Microsoft.Storage/storageAccounts/stledger",
        f"/subscriptions/{SUB}/resourceGroups/rg-ledger/providers/Microsoft.KeyVault/managedHSMs",
        f"/subscriptions/{SUB}/resourceGroups/rg-ledger/providers/Microsoft.KeyVault/vaults",
        f"/subscriptions/{SUB}/resourceGroups/rg-ledger/providers/Microsoft.KeyVault/vaults/",
        f"/subscriptions/{SUB}/resourceGroups/rg-ledger/providers/Microsoft.KeyVaultX/vaults/kv-ledger",
        f"/tenants/{SUB}/providers/Microsoft.KeyVault/vaults/kv-ledger",
        "https://kv-ledger.vault.azure.net/secrets/db-password",
    ],
)
def test_ids_that_name_no_key_vault_give_none(resource_id: str | None) -> None:
    assert parse_vault_ref(resource_id) is None


def test_a_managed_hsm_is_a_vault_of_kind_hsm() -> None:
    hsm = f"/subscriptions/{SUB}/resourceGroups/rg-ledger/providers/Microsoft.KeyVault/managedHSMs/hsm-ledger"
    ref = parse_vault_ref(hsm + "/privateEndpointConnections/pe-1")
    assert ref is not None and ref.kind == "hsm"
    assert (ref.id, ref.name, ref.resource_group) == (hsm, "hsm-ledger", "rg-ledger")
    vault = parse_vault_ref(f"/subscriptions/{SUB}/resourceGroups/rg-ledger/providers/Microsoft.KeyVault/vaults/kv")
    assert vault is not None and vault.kind == "vault"


def test_vault_key_ignores_case_blanks_and_trailing_slashes() -> None:
    assert vault_key(f" {VAULT.upper()}/ ") == VAULT.lower()
    assert vault_key(VAULT + "//") == VAULT.lower()


def test_subscription_of_any_resource_id() -> None:
    assert subscription_of(VAULT.upper()) == SUB
    assert subscription_of(f"subscriptions/{SUB}/resourceGroups/x") == SUB
    assert subscription_of("/providers/Microsoft.Management/managementGroups/mg") is None
