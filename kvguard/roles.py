"""Azure role definitions as kvguard judges them: what a role lets its holder do to a Key Vault.

A role assignment names its role only by id. The built-in roles that matter for Key Vault are known
here without a call (their permissions as Azure publishes them); any other role is a custom role,
read once (GET of its definition) and judged by its `actions` / `dataActions` minus the `not…`
lists, with Azure's wildcards: `*` matches any run of characters, `/` included
(`Microsoft.KeyVault/vaults/secrets/*`, `*/read`, `*`), compared case-insensitively.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_KV = "Microsoft.KeyVault/vaults"
# Data actions that hand over secret material: reading a secret's value, decrypting, unwrapping,
# releasing a key (Secure Key Release hands its private material to an attested workload).
READ_SECRET_VALUES = (f"{_KV}/secrets/getSecret/action", f"{_KV}/keys/decrypt/action", f"{_KV}/keys/unwrap/action",
                      f"{_KV}/keys/release/action")
# Every data action Azure documents for Key Vault vaults (the Microsoft.KeyVault section of the
# resource provider operations): a role that allows any of them has data access. Backups count
# (a backup blob restores the secret, key or certificate in another vault of the subscription).
KEY_VAULT_DATA_ACTIONS = (
    *READ_SECRET_VALUES,
    f"{_KV}/certificatecas/delete", f"{_KV}/certificatecas/read", f"{_KV}/certificatecas/write",
    f"{_KV}/certificatecontacts/write",
    f"{_KV}/certificates/delete", f"{_KV}/certificates/read", f"{_KV}/certificates/backup/action",
    f"{_KV}/certificates/purge/action", f"{_KV}/certificates/update/action", f"{_KV}/certificates/create/action",
    f"{_KV}/certificates/import/action", f"{_KV}/certificates/recover/action", f"{_KV}/certificates/restore/action",
    f"{_KV}/keyrotationpolicies/read", f"{_KV}/keyrotationpolicies/write",
    f"{_KV}/keys/read", f"{_KV}/keys/update/action", f"{_KV}/keys/create/action", f"{_KV}/keys/import/action",
    f"{_KV}/keys/recover/action", f"{_KV}/keys/restore/action", f"{_KV}/keys/delete", f"{_KV}/keys/backup/action",
    f"{_KV}/keys/purge/action", f"{_KV}/keys/encrypt/action", f"{_KV}/keys/wrap/action", f"{_KV}/keys/sign/action",
    f"{_KV}/keys/verify/action", f"{_KV}/keys/rotate/action",
    f"{_KV}/secrets/delete", f"{_KV}/secrets/backup/action", f"{_KV}/secrets/purge/action",
    f"{_KV}/secrets/update/action", f"{_KV}/secrets/recover/action", f"{_KV}/secrets/restore/action",
    f"{_KV}/secrets/readMetadata/action", f"{_KV}/secrets/setSecret/action",
    f"{_KV}/storageaccounts/read", f"{_KV}/storageaccounts/set/action", f"{_KV}/storageaccounts/delete",
    f"{_KV}/storageaccounts/backup/action", f"{_KV}/storageaccounts/purge/action",
    f"{_KV}/storageaccounts/regeneratekey/action", f"{_KV}/storageaccounts/recover/action",
    f"{_KV}/storageaccounts/restore/action", f"{_KV}/storageaccounts/sas/set/action",
    f"{_KV}/storageaccounts/sas/delete", f"{_KV}/storageaccounts/sas/read",
)
GRANT_ACCESS = "Microsoft.Authorization/roleAssignments/write"
WRITE_VAULT = f"{_KV}/write"  # on an access-policy vault, whoever can write the vault can grant data access


@dataclass(frozen=True)
class Role:
    """One role definition's permissions (its first permission block's lists, merged over all blocks)."""

    id: str  # the role definition's GUID, lower case
    name: str
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()
    custom: bool = False

    def allows_action(self, operation: str) -> bool:
        return _allowed(operation, self.actions, self.not_actions)

    def allows_data_action(self, operation: str) -> bool:
        return _allowed(operation, self.data_actions, self.not_data_actions)

    @property
    def key_vault_data_actions(self) -> list[str]:
        """The Key Vault data actions this role allows (of every documented one)."""
        return [a for a in KEY_VAULT_DATA_ACTIONS if self.allows_data_action(a)]

    @property
    def reads_secret_values(self) -> bool:
        return any(self.allows_data_action(a) for a in READ_SECRET_VALUES)

    @property
    def grants_access(self) -> bool:
        return self.allows_action(GRANT_ACCESS)

    @property
    def writes_vaults(self) -> bool:
        return self.allows_action(WRITE_VAULT)

    def describe(self) -> str:
        return f"{self.name} ({self.id})"


def _allowed(operation: str, allowed: tuple[str, ...], denied: tuple[str, ...]) -> bool:
    return any(_pattern(p).fullmatch(operation) for p in allowed) and not any(
        _pattern(p).fullmatch(operation) for p in denied)


@lru_cache(maxsize=1024)
def _pattern(wildcard: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in wildcard.strip().split("*")), re.IGNORECASE)


def role_guid(role_definition_id: str) -> str:
    """The GUID at the end of a role definition id (`/subscriptions/…/roleDefinitions/{guid}` or the bare GUID)."""
    return role_definition_id.strip().rstrip("/").rsplit("/", 1)[-1].lower()


def role_from_arm(doc: Mapping[str, Any]) -> Role:
    """A role definition's ARM GET JSON (REST names) as a `Role`; ValueError naming the field."""
    properties = doc.get("properties")
    if not isinstance(properties, Mapping):
        raise ValueError("roleDefinition.properties: expected an object")
    blocks = properties.get("permissions") or []
    if not isinstance(blocks, list) or not all(isinstance(b, Mapping) for b in blocks):
        raise ValueError("roleDefinition.properties.permissions: expected a list of objects")

    def merged(name: str) -> tuple[str, ...]:
        values = [v for b in blocks for v in (b.get(name) or [])]
        if not all(isinstance(v, str) for v in values):
            raise ValueError(f"roleDefinition.properties.permissions[].{name}: expected strings")
        return tuple(values)

    return Role(
        id=role_guid(str(doc.get("id") or doc.get("name") or "")),
        name=str(properties.get("roleName") or doc.get("name") or "custom role"),
        actions=merged("actions"), not_actions=merged("notActions"),
        data_actions=merged("dataActions"), not_data_actions=merged("notDataActions"),
        custom=str(properties.get("type") or properties.get("roleType") or "CustomRole").lower() != "builtinrole",
    )


def _builtin(guid: str, name: str, actions: tuple[str, ...] = (), data_actions: tuple[str, ...] = (),
             not_actions: tuple[str, ...] = ()) -> Role:
    return Role(id=guid, name=name, actions=actions, not_actions=not_actions, data_actions=data_actions)


_KV_READS = ("Microsoft.Authorization/*/read", "Microsoft.Insights/alertRules/*", "Microsoft.Resources/deployments/*",
             "Microsoft.Resources/subscriptions/resourceGroups/read", f"{_KV}/read")
# The built-in roles DESIGN.md's role table names, with the permissions Azure publishes for them.
BUILTIN_ROLES: dict[str, Role] = {r.id: r for r in (
    _builtin("00482a5a-887f-4fb3-b363-3b7fe8e74483", "Key Vault Administrator", _KV_READS, (f"{_KV}/*",)),
    _builtin("b86a8fe4-44ce-4948-aee5-eccb2c155cd7", "Key Vault Secrets Officer", _KV_READS, (f"{_KV}/secrets/*",)),
    _builtin("4633458b-17de-408a-b874-0445c86b69e6", "Key Vault Secrets User", (),
             (f"{_KV}/secrets/getSecret/action", f"{_KV}/secrets/readMetadata/action")),
    _builtin("14b46e9e-c2b7-41b4-b07b-48a6ebf60603", "Key Vault Crypto Officer", _KV_READS,
             (f"{_KV}/keys/*", f"{_KV}/keyrotationpolicies/*")),
    _builtin("12338af0-0e69-4776-bea7-57ae8d297424", "Key Vault Crypto User", (),
             (f"{_KV}/keys/read", f"{_KV}/keys/update/action", f"{_KV}/keys/backup/action",
              f"{_KV}/keys/encrypt/action", f"{_KV}/keys/decrypt/action", f"{_KV}/keys/wrap/action",
              f"{_KV}/keys/unwrap/action", f"{_KV}/keys/sign/action", f"{_KV}/keys/verify/action")),
    _builtin("e147488a-f6f5-4113-8e2d-b22465e65bf6", "Key Vault Crypto Service Encryption User",
             ("Microsoft.EventGrid/eventSubscriptions/write", "Microsoft.EventGrid/eventSubscriptions/read",
              "Microsoft.EventGrid/eventSubscriptions/delete"),
             (f"{_KV}/keys/read", f"{_KV}/keys/wrap/action", f"{_KV}/keys/unwrap/action")),
    _builtin("08bbd89e-9f13-488c-ac41-acfcb10c90ab", "Key Vault Crypto Service Release User", (),
             (f"{_KV}/keys/release/action",)),
    _builtin("a4417e6f-fecd-4de8-b567-7b0420556985", "Key Vault Certificates Officer", _KV_READS,
             (f"{_KV}/certificatecas/*", f"{_KV}/certificates/*", f"{_KV}/certificatecontacts/write")),
    _builtin("db79e9a7-68ee-4b58-9aeb-b90e7c24fcba", "Key Vault Certificate User", (),
             (f"{_KV}/certificates/read", f"{_KV}/secrets/getSecret/action", f"{_KV}/secrets/readMetadata/action",
              f"{_KV}/keys/read")),
    _builtin("21090545-7ca7-4776-b22c-e363652d74d2", "Key Vault Reader", _KV_READS,
             (f"{_KV}/*/read", f"{_KV}/secrets/readMetadata/action")),
    _builtin("8b54135c-b56d-4d72-a534-26097cfdc8d8", "Key Vault Data Access Administrator",
             ("Microsoft.Authorization/roleAssignments/write", "Microsoft.Authorization/roleAssignments/delete",
              *_KV_READS)),
    _builtin("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner", ("*",)),
    _builtin("b24988ac-6180-42a0-ab88-20f7382dd24c", "Contributor", ("*",), (),
             ("Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write",
              "Microsoft.Authorization/elevateAccess/Action", "Microsoft.Blueprint/blueprintAssignments/write",
              "Microsoft.Blueprint/blueprintAssignments/delete", "Microsoft.Compute/galleries/share/action")),
    _builtin("18d7d88d-d35e-4fb5-a5c3-7773c20a72d9", "User Access Administrator",
             ("*/read", "Microsoft.Authorization/*", "Microsoft.Support/*")),
    _builtin("f58310d9-a9f6-439a-9e8d-f62e7b41a168", "Role Based Access Control Administrator",
             ("Microsoft.Authorization/roleAssignments/write", "Microsoft.Authorization/roleAssignments/delete",
              "*/read", "Microsoft.Support/*")),
    _builtin("f25e0fa2-a7c8-4377-a976-54943a77a395", "Key Vault Contributor",
             ("Microsoft.Authorization/*/read", "Microsoft.Insights/alertRules/*", "Microsoft.KeyVault/*",
              "Microsoft.Resources/deployments/*", "Microsoft.Resources/subscriptions/resourceGroups/read",
              "Microsoft.Support/*"), (), ("Microsoft.KeyVault/locations/deletedVaults/purge/action",)),
    _builtin("acdd72a7-3385-48ef-bd42-f606fba81ae7", "Reader", ("*/read",)),
)}
# Roles kvguard may undo an assignment of (remove_role_assignment; the infra's ABAC condition names
# the same ids): the Key Vault data roles, never a role with control-plane or grant rights.
KEY_VAULT_DATA_ROLES = (
    "00482a5a-887f-4fb3-b363-3b7fe8e74483", "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "4633458b-17de-408a-b874-0445c86b69e6", "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
    "12338af0-0e69-4776-bea7-57ae8d297424", "e147488a-f6f5-4113-8e2d-b22465e65bf6",
    "08bbd89e-9f13-488c-ac41-acfcb10c90ab", "a4417e6f-fecd-4de8-b567-7b0420556985",
    "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba", "21090545-7ca7-4776-b22c-e363652d74d2",
)


def builtin_role(role_definition_id: str) -> Role | None:
    return BUILTIN_ROLES.get(role_guid(role_definition_id))
