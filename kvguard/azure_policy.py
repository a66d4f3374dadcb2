"""Azure Policy as kvguard judges it: which definitions govern Key Vault, how far an exemption
reaches, and which vaults an assignment's `notScopes` leave out.

A Deny or Audit policy on Key Vault is a control beside the vault: an exemption on the vault's
resource group, or the assignment switched to `DoNotEnforce`, lets through the change the policy
would have refused, without touching anything else kvguard watches. The judgements here are pure
functions of the ARM JSON (REST names); `PolicyDefinitions` reads definitions through the resource
gateway and keeps its verdicts for the life of the process, since definitions change rarely and an
assignment event would otherwise read the same set and its members again and again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from kvguard.ids import vault_key
from kvguard.vault import VaultConfig

POLICY_EXEMPTIONS_TYPE = "Microsoft.Authorization/policyExemptions"
POLICY_ASSIGNMENTS_TYPE = "Microsoft.Authorization/policyAssignments"
KEY_VAULT_NAMESPACE = "microsoft.keyvault"
# The type a vault is to a resource selector's `resourceType` kind.
VAULT_RESOURCE_TYPE = "microsoft.keyvault/vaults"


def properties_of(doc: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A resource document's `properties` (empty when there are none)."""
    properties = (doc or {}).get("properties")
    return properties if isinstance(properties, Mapping) else {}


# --- definitions ---------------------------------------------------------------------------------


def is_set_definition(definition_id: str) -> bool:
    """Whether the id names a policy set definition (an initiative), not a single definition."""
    return "/providers/microsoft.authorization/policysetdefinitions/" in definition_id.lower()


def member_definition_ids(set_definition: Mapping[str, Any]) -> list[str]:
    """The ids of the definitions a set definition groups, in its order."""
    members = properties_of(set_definition).get("policyDefinitions")
    return [str(m["policyDefinitionId"]) for m in members or []
            if isinstance(m, Mapping) and isinstance(m.get("policyDefinitionId"), str)]


def _conditions(node: Any) -> Iterator[Mapping[str, Any]]:
    """Every object of a policy rule's condition tree (allOf, anyOf, not, count's where, …)."""
    if isinstance(node, Mapping):
        yield node
        for value in node.values():
            yield from _conditions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _conditions(item)


def _names_key_vault_type(condition: Mapping[str, Any]) -> bool:
    """A `{"field": "type", equals/in/like/…: …}` condition whose value names a Key Vault type."""
    values: list[Any] = []
    for operator, value in condition.items():
        if operator.lower() != "field":
            values += value if isinstance(value, list) else [value]
    return any(isinstance(v, str) and v.lower().startswith(KEY_VAULT_NAMESPACE) for v in values)


def names_key_vault(definition: Mapping[str, Any]) -> bool:
    """Whether a policy definition's rule names Key Vault: a `type` condition on a
    `Microsoft.KeyVault` type, an alias starting with `Microsoft.KeyVault`, or a Key Vault
    resource-provider mode (`Microsoft.KeyVault.Data`)."""
    properties = properties_of(definition)
    if str(properties.get("mode") or "").lower().startswith(KEY_VAULT_NAMESPACE):
        return True
    rule = properties.get("policyRule")
    condition = rule.get("if") if isinstance(rule, Mapping) else None
    for node in _conditions(condition):
        field = node.get("field")
        if not isinstance(field, str):
            continue
        if field.lower() == "type" and _names_key_vault_type(node):
            return True
        if field.lower().startswith(KEY_VAULT_NAMESPACE + "/"):
            return True
    return False


class PolicyDefinitions:
    """Whether a policy (or any member of a policy set) names Key Vault, read through `read` (the
    resource gateway's GET by id) and kept for the process: definitions change rarely. A definition
    that cannot be read is not kept, so a later event asks again."""

    def __init__(self, read: Callable[[str], Mapping[str, Any] | None]) -> None:
        self._read = read
        self._verdicts: dict[str, bool] = {}

    def names_key_vault(self, definition_id: str) -> bool | None:
        """True when the definition (or a member of the set) names Key Vault; None when it, or the
        members that could have, cannot be read."""
        key = vault_key(definition_id)
        if key in self._verdicts:
            return self._verdicts[key]
        document = self._read(definition_id)
        if document is None:
            return None
        if not is_set_definition(definition_id):
            verdict: bool | None = names_key_vault(document)
        else:
            answers = [self._member(member) for member in member_definition_ids(document)]
            verdict = True if True in answers else None if None in answers else False
        if verdict is not None:
            self._verdicts[key] = verdict
        return verdict

    def _member(self, definition_id: str) -> bool | None:
        key = vault_key(definition_id)
        if key not in self._verdicts:
            document = self._read(definition_id)
            if document is None:
                return None
            self._verdicts[key] = names_key_vault(document)
        return self._verdicts[key]


# --- exemptions ----------------------------------------------------------------------------------


def _selector_admits(selector: Mapping[str, Any], vault: VaultConfig) -> bool:
    kind = str(selector.get("kind") or "").lower()
    if kind == "resourcetype":
        value: str | None = VAULT_RESOURCE_TYPE
    elif kind == "resourcelocation":
        value = vault.location
    elif kind == "resourcewithoutlocation":
        value = "false"  # a vault always has a location
    else:
        return True  # a kind this version does not know narrows nothing kvguard can tell
    wanted = {str(v).lower().replace(" ", "") for v in selector.get("in") or []}
    refused = {str(v).lower().replace(" ", "") for v in selector.get("notIn") or []}
    plain = (value or "").lower().replace(" ", "")
    return (not wanted or plain in wanted) and plain not in refused


def exemption_applies(exemption: Mapping[str, Any] | None, vault: VaultConfig) -> bool:
    """Whether an exemption (already at a scope covering the vault) reaches the vault through its
    `resourceSelectors`: none means every resource of the scope; with some, any one of them whose
    every selector admits the vault."""
    if exemption is None:
        return False
    groups = properties_of(exemption).get("resourceSelectors")
    if not groups:
        return True
    return any(all(_selector_admits(s, vault) for s in group.get("selectors") or [] if isinstance(s, Mapping))
               for group in groups if isinstance(group, Mapping))


def definition_references(exemption: Mapping[str, Any] | None) -> frozenset[str]:
    """The definition references of the assignment's set that the exemption covers; empty: all."""
    references = properties_of(exemption).get("policyDefinitionReferenceIds")
    return frozenset(str(r).lower() for r in references or [])


def expires_on(exemption: Mapping[str, Any] | None) -> datetime | None:
    """When the exemption ends; None: never (or a date kvguard cannot read, taken as never)."""
    text = properties_of(exemption).get("expiresOn")
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def widenings(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """How an exemption grew between two copies: more definition references (or all of them), a
    later `expiresOn` (or none), another assignment exempted; empty when it did not grow."""
    grown = []
    was, now = definition_references(before), definition_references(after)
    if was and (not now or now - was):
        grown.append("all definitions of the assignment" if not now else
                     "definition references added: " + ", ".join(sorted(now - was)))
    ended, ends = expires_on(before), expires_on(after)
    if ended is not None and (ends is None or ends > ended):
        grown.append("expiry removed" if ends is None else "expiry pushed out")
    assignment = str(properties_of(before).get("policyAssignmentId") or "").lower()
    if assignment != str(properties_of(after).get("policyAssignmentId") or "").lower():
        grown.append("another policy assignment exempted")
    return grown


# --- assignments ---------------------------------------------------------------------------------


def enforcement_mode(assignment: Mapping[str, Any] | None) -> str:
    """The assignment's `enforcementMode`; absent is ARM's default, `Default` (enforced)."""
    return str(properties_of(assignment).get("enforcementMode") or "Default")


def not_scopes(assignment: Mapping[str, Any] | None) -> list[str]:
    """The scopes the assignment leaves out, as ARM spells them."""
    return [str(s) for s in properties_of(assignment).get("notScopes") or [] if isinstance(s, str)]


def excluding_scopes(assignment: Mapping[str, Any] | None, vault_id: str) -> list[str]:
    """The `notScopes` that leave the vault out: the vault itself or a scope above it."""
    key = vault_key(vault_id)
    return [s for s in not_scopes(assignment) if key == vault_key(s) or key.startswith(vault_key(s) + "/")]
