"""ARM resources beside the vaults: which changes kvguard watches, and which vaults a change covers.

A role assignment, a lock or a diagnostic setting is an ARM resource of its own, at some scope: a
vault, something inside a vault (one secret), a resource group, a subscription or a management
group. Its event carries only its id and the operation, so the scope is read from the id. A scope
covers a vault when the vault lies under it or it lies under the vault, comparing whole segments
case-insensitively (`…/vaults/kv` does not cover `…/vaults/kv2`); a management-group scope covers
every vault, as Azure's inheritance has it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kvguard.event_feeds import SYSTEM_TOPIC_SUBSCRIPTIONS_TYPE, VAULT_SUBSCRIPTIONS_TYPE
from kvguard.ids import parse_vault_ref, vault_key, vault_kind
from kvguard.perimeters import ACCESS_RULES_TYPE, ASSOCIATIONS_TYPE, CONFIGURATIONS_TYPE, PERIMETER_TYPES
from kvguard.roles import Role
from kvguard.vault import VaultConfig

# The watched operations on resources other than vaults, lower-cased: the resource type they change
# (as ARM spells it in the resource's `type`) and whether they write or delete it.
ResourceAction = Literal["write", "delete"]
RESOURCE_OPERATIONS: dict[str, tuple[str, ResourceAction]] = {
    "microsoft.authorization/roleassignments/write": ("Microsoft.Authorization/roleAssignments", "write"),
    "microsoft.authorization/roleassignments/delete": ("Microsoft.Authorization/roleAssignments", "delete"),
    "microsoft.authorization/roledefinitions/write": ("Microsoft.Authorization/roleDefinitions", "write"),
    "microsoft.insights/diagnosticsettings/write": ("Microsoft.Insights/diagnosticSettings", "write"),
    "microsoft.insights/diagnosticsettings/delete": ("Microsoft.Insights/diagnosticSettings", "delete"),
    "microsoft.authorization/locks/write": ("Microsoft.Authorization/locks", "write"),
    "microsoft.authorization/locks/delete": ("Microsoft.Authorization/locks", "delete"),
    "microsoft.keyvault/vaults/privateendpointconnections/write": (
        "Microsoft.KeyVault/vaults/privateEndpointConnections", "write"),
    "microsoft.keyvault/vaults/privateendpointconnections/delete": (
        "Microsoft.KeyVault/vaults/privateEndpointConnections", "delete"),
    "microsoft.security/pricings/write": ("Microsoft.Security/pricings", "write"),
    # Deny settings (KV-DENY-01) and PIM eligibility (KV-PIM-01).
    "microsoft.authorization/denyassignments/write": ("Microsoft.Authorization/denyAssignments", "write"),
    "microsoft.authorization/denyassignments/delete": ("Microsoft.Authorization/denyAssignments", "delete"),
    "microsoft.resources/deploymentstacks/write": ("Microsoft.Resources/deploymentStacks", "write"),
    "microsoft.authorization/roleeligibilityschedulerequests/write": (
        "Microsoft.Authorization/roleEligibilityScheduleRequests", "write"),
    # Issue 23h: a Managed HSM's private endpoint connections, and a vault's keys through ARM.
    "microsoft.keyvault/managedhsms/privateendpointconnections/write": (
        "Microsoft.KeyVault/managedHSMs/privateEndpointConnections", "write"),
    "microsoft.keyvault/managedhsms/privateendpointconnections/delete": (
        "Microsoft.KeyVault/managedHSMs/privateEndpointConnections", "delete"),
    "microsoft.keyvault/vaults/keys/write": ("Microsoft.KeyVault/vaults/keys", "write"),
    # Azure Policy (KV-POL-*): an exemption over a vault, an assignment governing Key Vault.
    "microsoft.authorization/policyexemptions/write": ("Microsoft.Authorization/policyExemptions", "write"),
    "microsoft.authorization/policyexemptions/delete": ("Microsoft.Authorization/policyExemptions", "delete"),
    "microsoft.authorization/policyassignments/write": ("Microsoft.Authorization/policyAssignments", "write"),
    "microsoft.authorization/policyassignments/delete": ("Microsoft.Authorization/policyAssignments", "delete"),
    # Network Security Perimeters over a vault (KV-NSP-01): mapped to their vaults through the
    # vaults' perimeter configurations (kvguard.perimeters).
    "microsoft.network/networksecurityperimeters/profiles/accessrules/write": (ACCESS_RULES_TYPE, "write"),
    "microsoft.network/networksecurityperimeters/profiles/accessrules/delete": (ACCESS_RULES_TYPE, "delete"),
    "microsoft.network/networksecurityperimeters/resourceassociations/write": (ASSOCIATIONS_TYPE, "write"),
    "microsoft.network/networksecurityperimeters/resourceassociations/delete": (ASSOCIATIONS_TYPE, "delete"),
    # Event subscriptions on a vault's events (KV-EG-01); kvguard's own on the subscription's system
    # topic are judged as its deployment first (KV-SELF-02, kvguard.flow.own).
    "microsoft.eventgrid/systemtopics/eventsubscriptions/write": (SYSTEM_TOPIC_SUBSCRIPTIONS_TYPE, "write"),
    "microsoft.eventgrid/systemtopics/eventsubscriptions/delete": (SYSTEM_TOPIC_SUBSCRIPTIONS_TYPE, "delete"),
    "microsoft.eventgrid/eventsubscriptions/write": (VAULT_SUBSCRIPTIONS_TYPE, "write"),
    "microsoft.eventgrid/eventsubscriptions/delete": (VAULT_SUBSCRIPTIONS_TYPE, "delete"),
}
RESOURCE_TYPES: tuple[str, ...] = tuple(dict.fromkeys(t for t, _ in RESOURCE_OPERATIONS.values()))
# What the reconcile timer and `kvguard baseline` list at a vault's scope: the watched types that
# can be listed there (a perimeter's rules and associations, and system topics' subscriptions, lie
# elsewhere), and the vault's perimeter configurations, kept to map a perimeter's changes to it.
LISTED_TYPES: tuple[str, ...] = (*(t for t in RESOURCE_TYPES if t.lower() not in (
    *PERIMETER_TYPES, SYSTEM_TOPIC_SUBSCRIPTIONS_TYPE.lower())), CONFIGURATIONS_TYPE)
_CHILD_TYPES = {"vault": "microsoft.keyvault/vaults/", "hsm": "microsoft.keyvault/managedhsms/"}


def resource_types_at(vault_id: str) -> tuple[str, ...]:
    """The types listed at a vault's scope (LISTED_TYPES) that a vault of its kind can hold: the
    extension types, and the child types of its own kind (a Key Vault's keys, connections and
    perimeter configurations, a Managed HSM's connections)."""
    own = _CHILD_TYPES[vault_kind(vault_id)]
    return tuple(t for t in LISTED_TYPES
                 if not t.lower().startswith("microsoft.keyvault/") or t.lower().startswith(own))
VAULT_TYPE = "Microsoft.KeyVault/vaults"
MANAGED_HSM_TYPE = "Microsoft.KeyVault/managedHSMs"
KEYS_TYPE = "Microsoft.KeyVault/vaults/keys"
# The types kvguard protects as vaults: a Key Vault, and a Managed HSM (a vault of kind `hsm`).
VAULT_TYPES = frozenset({VAULT_TYPE.lower(), MANAGED_HSM_TYPE.lower()})


def is_vault_type(resource_type: str) -> bool:
    """Whether an ARM type (any case) is one kvguard protects as a vault."""
    return resource_type.strip().lower() in VAULT_TYPES
MANAGEMENT_GROUP_PREFIX = "/providers/microsoft.management/managementgroups/"


@dataclass(frozen=True)
class ResourceChange:
    """What an event says about a resource other than a vault: its id, its ARM type, whether it
    was written or deleted, and the scope it applies to."""

    id: str
    type: str
    action: ResourceAction

    @property
    def key(self) -> str:
        return vault_key(self.id)

    @property
    def scope(self) -> str:
        return scope_of(self.id)

    @property
    def operation(self) -> str:
        return f"{self.type}/{self.action}"


def resource_change(operation: str, resource_uri: str) -> ResourceChange | None:
    """The watched change an operation on `resource_uri` is, or None when kvguard does not watch it."""
    known = RESOURCE_OPERATIONS.get(operation.strip().lower())
    if known is None:
        return None
    text = resource_uri.strip().rstrip("/")
    return ResourceChange(id=text if text.startswith("/") else "/" + text, type=known[0], action=known[1])


def resource_type_of(doc: Mapping[str, Any]) -> str:
    """A resource document's `type`; for a vault the type may be left out (its id says it)."""
    stated = doc.get("type")
    if isinstance(stated, str) and stated.strip():
        return stated.strip()
    resource_id = str(doc.get("id", ""))
    if not is_vault_id(resource_id):
        return ""
    return MANAGED_HSM_TYPE if vault_kind(resource_id) == "hsm" else VAULT_TYPE


def same_resource(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two ARM documents of a resource say the same, ignoring what ARM changes on every
    write (`etag`, `systemData`)."""
    if a is None or b is None:
        return a is None and b is None
    volatile = {"etag", "systemdata"}
    return {k: v for k, v in a.items() if k.lower() not in volatile} == \
        {k: v for k, v in b.items() if k.lower() not in volatile}


def is_vault_id(resource_id: str) -> bool:
    """Whether `resource_id` is a vault's own id (not a sub-resource of one, not a deleted vault)."""
    ref = parse_vault_ref(resource_id)
    return ref is not None and ref.resource_group is not None and vault_key(ref.id) == vault_key(resource_id)


def scope_of(resource_id: str) -> str:
    """The scope a resource applies to. An extension resource (`{scope}/providers/{namespace}/
    {type}/{name}`) applies to the scope before its last `/providers/`; a child of a vault with no
    `/providers/` of its own (a private endpoint connection) applies to the vault."""
    text = resource_id.strip().rstrip("/")
    vault = parse_vault_ref(text)
    inside = len(vault.id) if vault is not None and vault.resource_group is not None else 0
    at = text.lower().rfind("/providers/")
    if at >= inside and at > 0:
        return text[:at]
    return vault.id if inside and vault is not None else text


def covers(scope: str, vault_id: str) -> bool:
    """Whether a resource at `scope` applies to the vault: segment-wise, case-insensitive."""
    scope_key, key = vault_key(scope), vault_key(vault_id)
    if scope_key.startswith(MANAGEMENT_GROUP_PREFIX):
        return True
    return key == scope_key or key.startswith(scope_key + "/") or scope_key.startswith(key + "/")


def covered_vaults(scope: str, vault_ids: Iterable[str]) -> list[str]:
    """The vaults among `vault_ids` that a resource at `scope` applies to, in their given order."""
    return [vault_id for vault_id in vault_ids if covers(scope, vault_id)]


@dataclass(frozen=True)
class ResourceState:
    """What the rules see of a changed resource: the change, its accepted baseline (`before`, None:
    not seen before), its current ARM JSON (`after`, None: gone), the accepted configuration of
    every vault it covers (for a role definition: the vaults its known assignments cover), for
    a role assignment or an eligibility request its role (None: the definition could not be read),
    for a deny setting the Azure action each remediation handler the policy can run needs
    (`rights`, handler id → action: what a deny must not take from kvguard's identity), and for a
    policy assignment whether its definition (or a member of its set) names Key Vault
    (`names_key_vault`; None: not a policy assignment, or its definition could not be read)."""

    change: ResourceChange
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    vaults: tuple[VaultConfig, ...] = ()
    role: Role | None = None
    rights: Mapping[str, str] = field(default_factory=dict)
    names_key_vault: bool | None = None

    @property
    def current(self) -> Mapping[str, Any] | None:
        """The resource as it is, or as it was before it went."""
        return self.after if self.after is not None else self.before

    @property
    def vault_ids(self) -> list[str]:
        return [vault.id for vault in self.vaults]


DIAGNOSTIC_SETTINGS_TYPE = "Microsoft.Insights/diagnosticSettings"
PRICINGS_TYPE = "Microsoft.Security/pricings"
# What a sweep reads around each vault: its diagnostic settings, and its subscription's Defender
# plan (the `KeyVaults` pricing, listed at the vault's scope because it applies from above).
SWEEP_TYPES: tuple[str, ...] = (DIAGNOSTIC_SETTINGS_TYPE, PRICINGS_TYPE)


def key_vaults_pricing_id(subscription_id: str) -> str:
    """The id of the Defender for Key Vault plan of a subscription."""
    return f"/subscriptions/{subscription_id}/providers/Microsoft.Security/pricings/KeyVaults"


@dataclass(frozen=True)
class Sweep:
    """What a sweep rule sees of one protected vault: the vault's accepted configuration and the
    resources read around it (each as ARM JSON, of the SWEEP_TYPES)."""

    vault: VaultConfig
    resources: tuple[Mapping[str, Any], ...] = ()

    def of_type(self, resource_type: str) -> list[Mapping[str, Any]]:
        wanted = resource_type.lower()
        return [doc for doc in self.resources if resource_type_of(doc).lower() == wanted]
