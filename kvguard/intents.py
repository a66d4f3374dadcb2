"""Restore intents: what would undo a finding, as a typed value the rule that fired builds from
what it compared.

A rule knows what it found (the grant that was added, the baseline's value of a setting, the
assignment that appeared); a handler knows how to write the undo to Azure. The intent is the
whole of what passes between them: handlers act on the intents of the findings routed to them (by
the rule's declared `remediation=`), never on a rule's evidence keys or on lists of rule ids, and
each handler declares the intent types it accepts (`@handler(..., accepts=...)`). A finding keeps
its intents through the write-ahead record (`to_json`/`from_json`), so a retry after a crash
acts on the same ones. They are not part of any output format: the evidence is what people read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from kvguard.vault import Principal

if TYPE_CHECKING:
    from kvguard.resources import ResourceState


@dataclass(frozen=True)
class RevokePermissions:
    """Permissions a change granted that the baseline did not: a new principal's whole entry, or
    what an existing principal gained, per category with `all` expanded (the revert works out the
    literal names ARM must be told). The principal as the current entry names it."""

    principal: Principal
    permissions: Mapping[str, frozenset[str]]
    name: ClassVar[str] = "revoke_permissions"

    def to_json(self) -> dict[str, Any]:
        return {"objectId": self.principal.object_id, "applicationId": self.principal.application_id,
                "tenantId": self.principal.tenant_id,
                "permissions": {c: sorted(p) for c, p in self.permissions.items()}}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RevokePermissions:
        principal = Principal(doc["objectId"], doc["applicationId"], doc["tenantId"])
        return cls(principal, {c: frozenset(p) for c, p in doc["permissions"].items()})


@dataclass(frozen=True)
class RestoreField:
    """A vault property set back to the baseline's own value, spelled as the baseline spelled it.
    `path` is its ARM name, dotted inside an object (`networkAcls.defaultAction`)."""

    path: str
    value: Any
    name: ClassVar[str] = "restore_field"

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "value": self.value}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RestoreField:
        return cls(doc["path"], doc["value"])


@dataclass(frozen=True)
class EnablePurgeProtection:
    """Purge protection switched on. The vault may never have had it, so there is no baseline value
    to go back to, only the safe one; and no way back either (it can never be switched off)."""

    name: ClassVar[str] = "enable_purge_protection"

    def to_json(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> EnablePurgeProtection:
        return cls()


@dataclass(frozen=True)
class RemoveListEntry:
    """An entry a change added to a list property the baseline did not have: an IP rule
    (`networkAcls.ipRules`, its CIDR normalised) or a virtual-network rule
    (`networkAcls.virtualNetworkRules`, its subnet id lower-cased)."""

    path: str
    value: str
    name: ClassVar[str] = "remove_list_entry"

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "value": self.value}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RemoveListEntry:
        return cls(doc["path"], doc["value"])


@dataclass(frozen=True)
class RestoreResource:
    """A resource beside the vault put back as the baseline had it (a diagnostic setting, a lock,
    the Defender plan): its id, its ARM type and the baseline's properties."""

    resource_id: str
    resource_type: str
    properties: Mapping[str, Any]
    # Why the baseline's copy must not be written back (it names a value outside the policy's
    # allowed sets): the handler then records the refusal and writes nothing; empty when it may.
    refused: str = ""
    name: ClassVar[str] = "restore_resource"

    @classmethod
    def baseline_of(cls, state: ResourceState) -> tuple[RestoreResource, ...]:
        """Putting a changed resource back as its baseline had it (nothing without a baseline)."""
        if state.before is None:
            return ()
        return (cls(state.change.id, state.change.type, state.before.get("properties") or {}),)

    def to_json(self) -> dict[str, Any]:
        found = {"resourceId": self.resource_id, "resourceType": self.resource_type,
                 "properties": dict(self.properties)}
        return {**found, "refused": self.refused} if self.refused else found

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RestoreResource:
        return cls(doc["resourceId"], doc["resourceType"], doc["properties"], str(doc.get("refused") or ""))


@dataclass(frozen=True)
class RejectConnection:
    """A private endpoint connection to reject, and why (written into the connection's state)."""

    connection_id: str
    reason: str
    name: ClassVar[str] = "reject_connection"

    def to_json(self) -> dict[str, Any]:
        return {"connectionId": self.connection_id, "reason": self.reason}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RejectConnection:
        return cls(doc["connectionId"], doc["reason"])


@dataclass(frozen=True)
class RoleAssignmentRef:
    """The role assignment a delete is for, as the finding saw it (ids lower case): the delete goes
    ahead only while the assignment still has this principal, role and scope."""

    id: str
    principal_id: str
    role_definition_id: str
    scope: str


@dataclass(frozen=True)
class DeleteRoleAssignment:
    """A role assignment the baseline lacks, to delete by id while it still grants what was found;
    `role` is the role's name, for the people reading the plan."""

    assignment: RoleAssignmentRef
    role: str | None
    name: ClassVar[str] = "delete_role_assignment"

    def to_json(self) -> dict[str, Any]:
        ref = self.assignment
        return {"id": ref.id, "principalId": ref.principal_id, "roleDefinitionId": ref.role_definition_id,
                "scope": ref.scope, "role": self.role}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DeleteRoleAssignment:
        ref = RoleAssignmentRef(doc["id"], doc["principalId"], doc["roleDefinitionId"], doc["scope"])
        return cls(ref, doc["role"])


@dataclass(frozen=True)
class PolicyExemptionRef:
    """The policy exemption a delete is for, as the finding saw it (lower case): the delete goes
    ahead only while the exemption still exempts this assignment, at this scope, in this category."""

    id: str
    policy_assignment_id: str
    scope: str
    category: str


@dataclass(frozen=True)
class DeletePolicyExemption:
    """A policy exemption the baseline lacks, to delete by id while it is still the one found."""

    exemption: PolicyExemptionRef
    name: ClassVar[str] = "delete_policy_exemption"

    def to_json(self) -> dict[str, Any]:
        ref = self.exemption
        return {"id": ref.id, "policyAssignmentId": ref.policy_assignment_id, "scope": ref.scope,
                "exemptionCategory": ref.category}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DeletePolicyExemption:
        return cls(PolicyExemptionRef(doc["id"], doc["policyAssignmentId"], doc["scope"], doc["exemptionCategory"]))


@dataclass(frozen=True)
class RemoveRuleSources:
    """Inbound sources a perimeter access rule gained outside `allowed_perimeter_sources`: its
    CIDR prefixes (normalised) and subscription ids (lower-cased GUIDs), to take out of the rule
    again, leaving every other source it admits."""

    rule_id: str
    prefixes: tuple[str, ...]
    subscriptions: tuple[str, ...]
    # Why nothing can be taken out (an association that left Enforced: its owner sets the mode
    # back): the handler then writes nothing and the flow says why; empty when it may.
    refused: str = ""
    name: ClassVar[str] = "remove_rule_sources"

    def to_json(self) -> dict[str, Any]:
        found = {"ruleId": self.rule_id, "prefixes": list(self.prefixes), "subscriptions": list(self.subscriptions)}
        return {**found, "refused": self.refused} if self.refused else found

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RemoveRuleSources:
        return cls(doc["ruleId"], tuple(doc["prefixes"]), tuple(doc["subscriptions"]), str(doc.get("refused") or ""))


@dataclass(frozen=True)
class DeleteResource:
    """A resource the baseline lacks (an event subscription on a vault's events), to delete by id
    while it still is what the finding saw: `expected` is what must still hold (its destination)."""

    resource_id: str
    resource_type: str
    expected: str
    # Why it must not be deleted (it was in the baseline and only re-pointed: deleting it would
    # remove what was there before); empty when it may.
    refused: str = ""
    name: ClassVar[str] = "delete_resource"

    def to_json(self) -> dict[str, Any]:
        found = {"resourceId": self.resource_id, "resourceType": self.resource_type, "expected": self.expected}
        return {**found, "refused": self.refused} if self.refused else found

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DeleteResource:
        return cls(doc["resourceId"], doc["resourceType"], doc["expected"], str(doc.get("refused") or ""))


RestoreIntent = (RevokePermissions | RestoreField | EnablePurgeProtection | RemoveListEntry | RestoreResource
                 | RejectConnection | DeleteRoleAssignment | DeletePolicyExemption | RemoveRuleSources
                 | DeleteResource)
INTENT_TYPES: tuple[type[RestoreIntent], ...] = (
    RevokePermissions, RestoreField, EnablePurgeProtection, RemoveListEntry, RestoreResource, RejectConnection,
    DeleteRoleAssignment, DeletePolicyExemption, RemoveRuleSources, DeleteResource,
)
_BY_NAME: dict[str, type[RestoreIntent]] = {kind.name: kind for kind in INTENT_TYPES}


def to_json(intent: RestoreIntent) -> dict[str, Any]:
    """An intent as plain JSON, its type named under `intent`."""
    return {"intent": intent.name, **intent.to_json()}


def from_json(doc: Mapping[str, Any]) -> RestoreIntent:
    """The intent `to_json` wrote."""
    return _BY_NAME[doc["intent"]].from_json(doc)
