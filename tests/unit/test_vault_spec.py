"""The API specification's vocabulary: the permission enums as the installed SDK generates them
from the same spec, and the defaults kvguard assumes for absent keys."""

from __future__ import annotations

import pytest
from azure.mgmt.keyvault import models

from kvguard.vault import VaultConfig
from kvguard.vault_spec import ALL, FULL_SETS, PERMISSIONS, expand, spelled

ENUMS = {"keys": models.KeyPermissions, "secrets": models.SecretPermissions,
         "certificates": models.CertificatePermissions, "storage": models.StoragePermissions}
SUBSCRIPTION = "0e9d8c7b-6a5f-4e4d-8c3b-2a1f0e9d8c7b"
VAULT_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"


@pytest.mark.parametrize("category", sorted(ENUMS))
def test_the_full_sets_are_the_sdk_enums(category: str) -> None:
    assert set(PERMISSIONS[category]) | {ALL} == {e.value for e in ENUMS[category]}


def test_all_expands_to_its_own_category_only() -> None:
    assert expand("secrets", frozenset({"all"})) == FULL_SETS["secrets"]
    assert "managecontacts" in expand("certificates", frozenset({"all"}))
    assert {"release", "getrotationpolicy"} <= expand("keys", frozenset({"all"}))
    assert expand("keys", frozenset({"get", "futurething"})) == {"get", "futurething"}
    assert spelled("unwrapkey") == "unwrapKey"


def parse(**properties: object) -> VaultConfig:
    return VaultConfig.from_arm({"id": VAULT_ID, "properties": {"tenantId": "t", **properties}})


def test_soft_delete_absent_is_off_on_2016_documents_and_on_from_2019_09_01() -> None:
    old = parse(sku={"family": "A", "name": "standard"}, accessPolicies=[])
    assert (old.enable_soft_delete, old.soft_delete_retention_days) == (False, None)
    new = parse(provisioningState="Succeeded", enableRbacAuthorization=None)
    assert (new.enable_soft_delete, new.soft_delete_retention_days) == (True, 90)
    assert new.enable_rbac_authorization is None  # null is not false


def test_absent_network_keys_are_open() -> None:
    vault = parse()
    assert (vault.public_network_access, vault.default_action, vault.bypass) == ("enabled", "allow", "azureservices")
    closed = parse(publicNetworkAccess="Disabled", networkAcls={"defaultAction": "Deny", "bypass": "None"})
    assert (closed.public_network_access, closed.default_action, closed.bypass) == ("disabled", "deny", "none")
