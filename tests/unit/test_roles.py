"""Role definitions judged by their actions and data actions, wildcards included (kvguard.roles)."""

from __future__ import annotations

import pytest

from kvguard.roles import BUILTIN_ROLES, KEY_VAULT_DATA_ROLES, Role, builtin_role, role_from_arm


def custom(actions: list[str] | None = None, data: list[str] | None = None, not_data: list[str] | None = None) -> Role:
    return role_from_arm({"id": "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/ABC",
                          "properties": {"roleName": "r", "type": "CustomRole",
                                         "permissions": [{"actions": actions or [], "dataActions": data or [],
                                                          "notDataActions": not_data or []}]}})


@pytest.mark.parametrize(("data", "reads"), [
    (["Microsoft.KeyVault/vaults/secrets/*"], True),
    (["*"], True),
    (["microsoft.keyvault/VAULTS/secrets/getsecret/action"], True),
    (["Microsoft.KeyVault/vaults/*/read"], False),
    (["Microsoft.KeyVault/vaults/keys/unwrap/action"], True),
    (["Microsoft.KeyVault/vaults/keys/sign/action"], False),
    (["Microsoft.KeyVault/vaults/keys/release/action"], True),
    (["Microsoft.KeyVault/vaults/keys/backup/action"], False),
    ([], False),
])
def test_secret_values_are_read_through_wildcards_case_insensitively(data: list[str], reads: bool) -> None:
    assert custom(data=data).reads_secret_values is reads


def test_not_data_actions_take_away_what_a_wildcard_gives() -> None:
    role = custom(data=["Microsoft.KeyVault/vaults/secrets/*"],
                  not_data=["Microsoft.KeyVault/vaults/secrets/getSecret/action"])
    assert not role.reads_secret_values and role.key_vault_data_actions


@pytest.mark.parametrize(("actions", "grants"), [
    (["*"], True), (["Microsoft.Authorization/*"], True), (["Microsoft.Authorization/roleAssignments/write"], True),
    (["*/read"], False), (["Microsoft.Authorization/roleAssignments/read"], False),
])
def test_grant_rights(actions: list[str], grants: bool) -> None:
    assert custom(actions=actions).grants_access is grants


def test_the_built_in_roles_are_known_without_a_call() -> None:
    assert len(BUILTIN_ROLES) == 17  # DESIGN.md's role table, and Crypto Service Release User
    owner = builtin_role("8E3AF657-A8FF-443C-A75C-2FE8C4BCB635")
    contributor = builtin_role("b24988ac-6180-42a0-ab88-20f7382dd24c")
    assert owner is not None and owner.grants_access and not owner.key_vault_data_actions
    assert contributor is not None and not contributor.grants_access and contributor.writes_vaults
    reader = builtin_role("/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/"
                          "acdd72a7-3385-48ef-bd42-f606fba81ae7")
    assert reader is not None and not (reader.grants_access or reader.writes_vaults or reader.key_vault_data_actions)
    assert builtin_role("c0c0a000-1111-4222-8333-444455556666") is None
    # every data role kvguard may remove has data actions and no grant rights
    for guid in KEY_VAULT_DATA_ROLES:
        assert BUILTIN_ROLES[guid].key_vault_data_actions and not BUILTIN_ROLES[guid].grants_access, guid


def test_a_malformed_definition_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"roleDefinition\.properties\.permissions"):
        role_from_arm({"properties": {"permissions": "all"}})


@pytest.mark.parametrize("action", [
    "Microsoft.KeyVault/vaults/keys/release/action", "Microsoft.KeyVault/vaults/keys/backup/action",
    "Microsoft.KeyVault/vaults/secrets/backup/action", "Microsoft.KeyVault/vaults/certificates/backup/action",
    "Microsoft.KeyVault/vaults/keys/restore/action", "Microsoft.KeyVault/vaults/secrets/restore/action",
    "Microsoft.KeyVault/vaults/keys/import/action", "Microsoft.KeyVault/vaults/keyrotationpolicies/write",
    "Microsoft.KeyVault/vaults/certificatecas/write", "Microsoft.KeyVault/vaults/storageaccounts/sas/set/action",
])
def test_every_documented_key_vault_data_action_is_data_access(action: str) -> None:
    assert custom(data=[action]).key_vault_data_actions == [action]


def test_the_crypto_service_release_user_releases_keys_which_counts_as_reading_secret_material() -> None:
    release = builtin_role("08bbd89e-9f13-488c-ac41-acfcb10c90ab")
    assert release is not None and release.name == "Key Vault Crypto Service Release User"
    assert release.key_vault_data_actions == ["Microsoft.KeyVault/vaults/keys/release/action"]
    assert release.reads_secret_values and not release.grants_access
