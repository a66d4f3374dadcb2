"""Azure resource-id parsing and the case rules that go with it, in one place.

ARM compares resource ids case-insensitively (`resourcegroups` and `resourceGroups` name the same
thing), events and GET responses disagree on casing, and a vault must be found under one key no
matter which spelling reached us. Everything that compares ids goes through `vault_key`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_VAULT_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
    r"/providers/microsoft\.keyvault/(?P<type>vaults|managedhsms)/(?P<name>[^/]+)",
    re.IGNORECASE,
)
_DELETED_VAULT_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.keyvault"
    r"/locations/(?P<location>[^/]+)/(?P<type>deletedvaults|deletedmanagedhsms)/(?P<name>[^/]+)",
    re.IGNORECASE,
)
_GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def subscription_id(text: str) -> str:
    """A subscription id as a person gives it (a GUID, spaces around it forgiven).
    Raises ValueError for anything else: an empty string, `/subscriptions/…`, a path such as
    `x/../../x` would otherwise be pasted into the URL of every ARM call."""
    value = text.strip()
    if not _GUID_RE.match(value):
        raise ValueError(f"{text!r} is not a subscription id (a GUID such as 8e7d6c5b-4a39-4281-9706-f5e4d3c2b1a0)")
    return value


VaultKind = Literal["vault", "hsm"]


def vault_kind(resource_id: str) -> VaultKind:
    """A protected vault's kind: a Managed HSM (`…/managedHSMs/{name}`, or its deleted form) is a
    vault of kind `hsm`; every other vault id is a Key Vault."""
    lowered = resource_id.lower()
    return "hsm" if "/microsoft.keyvault/managedhsms/" in lowered or "/deletedmanagedhsms/" in lowered else "vault"


@dataclass(frozen=True)
class VaultRef:
    """A vault named by an event: its id as written (trimmed to the vault) and its parts. A
    Managed HSM is a vault of kind `hsm` (its id names `managedHSMs`)."""

    id: str
    subscription_id: str
    name: str
    resource_group: str | None = None
    location: str | None = None

    @property
    def key(self) -> str:
        return vault_key(self.id)

    @property
    def kind(self) -> VaultKind:
        return vault_kind(self.id)


def vault_key(resource_id: str) -> str:
    """The case-insensitive identity of a resource id: lower case, no trailing slash."""
    return resource_id.strip().rstrip("/").lower()


def parse_vault_ref(resource_id: str | None) -> VaultRef | None:
    """The vault a resource id points into, or None when it names no Key Vault.

    Sub-resource ids (`…/vaults/kv/accessPolicies/add`, `…/vaults/kv/secrets/s`) are trimmed to the
    vault; a deleted-vault id (`…/locations/westus/deletedVaults/kv`, what a purge names) is kept
    as it is, since it has no resource group to build a vault id from. A Managed HSM
    (`…/managedHSMs/hsm`, `…/deletedManagedHSMs/hsm`) is parsed the same way.
    """
    if not resource_id:
        return None
    text = resource_id.strip()
    if not text.startswith("/"):
        text = "/" + text
    match = _VAULT_RE.match(text)
    if match:
        return VaultRef(
            id=text[: match.end()],
            subscription_id=match["sub"],
            resource_group=match["rg"],
            name=match["name"],
        )
    match = _DELETED_VAULT_RE.match(text)
    if match:
        return VaultRef(
            id=text[: match.end()],
            subscription_id=match["sub"],
            location=match["location"],
            name=match["name"],
        )
    return None


def subscription_of(resource_id: str) -> str | None:
    """The subscription id of any ARM resource id (lower case), or None."""
    match = re.match(r"^/?subscriptions/([^/]+)", resource_id.strip(), re.IGNORECASE)
    return match[1].lower() if match else None


def owning_id(resource_id: str | None, candidates: list[str]) -> str | None:
    """The first of `candidates` that `resource_id` is, or lies under segment-wise
    (`…/sites/app/config/appsettings` lies under `…/sites/app`), compared case-insensitively."""
    if not resource_id:
        return None
    key = vault_key(resource_id if resource_id.startswith("/") else "/" + resource_id)
    for candidate in candidates:
        own = vault_key(candidate)
        if key == own or key.startswith(own + "/"):
            return candidate
    return None
