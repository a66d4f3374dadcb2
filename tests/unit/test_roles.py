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
    assert len(BUILTIN_ROLES) == 16  # DESIGN.md's role table
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
