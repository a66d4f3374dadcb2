"""What the Key Vault management API specification says about values a vault document may leave out.

Source: the `Microsoft.KeyVault` resource-manager specification (`keyvault.json` / `common.json`,
stable API versions 2016-10-01 … 2026-02-01) in the public REST API specifications repository.
kvguard judges what ARM *does*, and ARM treats an absent key as its documented default, so every
default kvguard assumes is written here, once, with the place in the spec that defines it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The permission enums of `Permissions` (`KeyPermissions`, `SecretPermissions`,
# `CertificatePermissions`, `StoragePermissions`), latest stable API version, spelled as the spec
# spells them. `all` grants every one of them; it is not listed here because it is not a permission
# of its own but the whole set.
PERMISSIONS: Mapping[str, tuple[str, ...]] = {
    "keys": (
        "encrypt", "decrypt", "wrapKey", "unwrapKey", "sign", "verify", "get", "list", "create", "update",
        "import", "delete", "backup", "restore", "recover", "purge", "release", "rotate", "getrotationpolicy",
        "setrotationpolicy",
    ),
    "secrets": ("get", "list", "set", "delete", "backup", "restore", "recover", "purge"),
    "certificates": (
        "get", "list", "delete", "create", "import", "update", "managecontacts", "getissuers", "listissuers",
        "setissuers", "deleteissuers", "manageissuers", "recover", "purge", "backup", "restore",
    ),
    "storage": (
        "get", "list", "delete", "set", "update", "regeneratekey", "recover", "purge", "backup", "restore",
        "setsas", "listsas", "getsas", "deletesas",
    ),
}
ALL = "all"
# Lower-cased, for comparison; and the spec's spelling of each, for writing a permission back.
FULL_SETS: Mapping[str, frozenset[str]] = {c: frozenset(p.lower() for p in names) for c, names in PERMISSIONS.items()}
SPELLING: Mapping[str, str] = {p.lower(): p for names in PERMISSIONS.values() for p in names}


def expand(category: str, names: frozenset[str]) -> frozenset[str]:
    """The permissions a category's (lower-cased) names grant: `all` is every permission of the
    category, so `["all"]` and the explicit full list compare equal. Names the spec does not know
    are kept as they are (a newer API version may add one)."""
    if ALL not in names:
        return names
    return (names - {ALL}) | FULL_SETS.get(category, frozenset())


def spelled(name: str) -> str:
    """A lower-cased permission as the spec spells it (`wrapkey` -> `wrapKey`)."""
    return SPELLING.get(name, name)


# `NetworkRuleSet` (`properties.networkAcls`): absent means no firewall, i.e. every network is
# admitted ("defaultAction ... when no rule from ipRules and from virtualNetworkRules match"; no
# rule set, nothing is denied), and `bypass`: "If not specified the default is 'AzureServices'".
DEFAULT_ACTION_WITHOUT_ACLS = "allow"
DEFAULT_BYPASS = "azureservices"
# `VaultProperties.publicNetworkAccess`: `"default": "enabled"` (the property exists since
# 2021-04-01-preview; a vault returned by an older version has no such switch: public access on).
DEFAULT_PUBLIC_NETWORK_ACCESS = "enabled"
# `VaultProperties.softDeleteRetentionInDays`: `"default": 90`.
DEFAULT_SOFT_DELETE_RETENTION_DAYS = 90
# `VaultProperties.enableSoftDelete`: 2016-10-01 and 2018-02-14 define no default (soft delete is an
# opt-in: absent is off); from 2019-09-01 on, "If it's not set to any value (true or false) when
# creating new key vault, it will be set to true by default", `"default": true`.
# Properties that only API versions from 2019-09-01 on return: a document holding any of them was
# written by such a version, so its absent `enableSoftDelete` means on.
_SINCE_2019_09_01 = (
    "softdeleteretentionindays", "enablerbacauthorization", "provisioningstate", "hsmpoolresourceid",
    "publicnetworkaccess", "privateendpointconnections",
)
# `enableRbacAuthorization` has no default here on purpose: `null` is "the vault keeps its model"
# (it defaulted to false before 2026-02-01 and to true from then on), distinct from `false`.


def since_2019_09_01(properties: Mapping[str, Any]) -> bool:
    """Whether a vault document was returned by API 2019-09-01 or later, told by the properties only
    those versions return (a GET body does not name its API version). Its absent `enableSoftDelete`
    then means on and its absent `softDeleteRetentionInDays` 90 days; before, soft delete was off
    unless set."""
    return any(isinstance(k, str) and k.lower() in _SINCE_2019_09_01 for k in properties)
