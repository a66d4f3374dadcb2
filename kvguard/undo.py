"""`kvguard undo AUDIT_ID [--handler H] [--apply]`: put back the `before` of one recorded
remediation, for the day kvguard reverted something it should not have.

AUDIT_ID is the event id of the audit record (the outcome's `event_id`, `EventId` in the findings
table). Only what the remediation took away is put back: the permissions a revert removed (an
`accessPolicies/add` of exactly those), the property values a restore replaced (a PATCH of those
properties), or the role assignment `remove_role_assignment` deleted (a PUT of the same id with the
recorded principal, role, scope and condition; the vault is never written for it). Without
`--apply` it only says what it would do. With it, the restored state becomes the baseline (so the
next event does not revert it again) and the undo is audited. Enabling purge protection cannot be
undone (Azure refuses), the other handlers of resources beside a vault are refused (their writes
cannot be put back faithfully from the record), and alerts are resolved, not undone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from kvguard.catalog import HANDLERS
from kvguard.ports import AuditRecord, StateStore, VaultGateway
from kvguard.vault import AccessPolicy, VaultConfig


class UndoError(Exception):
    """The record or action cannot be undone; the message says why."""


class UndoGateway(VaultGateway, Protocol):
    def add_access_policy(self, vault_id: str, entry: AccessPolicy) -> VaultConfig:
        """`accessPolicies/add` of exactly `entry`'s permissions for its principal."""
        ...


class RoleAssignmentWriter(Protocol):
    """Reads role assignments and puts one back (the ARM resource gateway, operator's credential)."""

    def get(self, resource_id: str) -> Mapping[str, Any] | None: ...

    def create_role_assignment(self, resource_id: str, properties: Mapping[str, Any]) -> Mapping[str, Any]: ...


# The remediations of a vault's own configuration, undone by writing the vault.
VAULT_HANDLERS = ("revert_access_policy", "restore_network", "restore_settings", "enable_purge_protection")
ROLE_ASSIGNMENT_HANDLER = "remove_role_assignment"
# What ARM takes back on the PUT of a role assignment (and the record kept).
_ASSIGNMENT_PROPERTIES = ("roleDefinitionId", "principalId", "principalType", "condition", "conditionVersion",
                          "description", "delegatedManagedIdentityResourceId")


@dataclass(frozen=True)
class UndoStep:
    """One write of an undo. `vault_id` is the vault written, or, for `create_role_assignment`,
    the id of the role assignment put back (`target`: its properties)."""

    kind: Literal["add_access_policy", "patch", "create_role_assignment"]
    vault_id: str
    target: AccessPolicy | Mapping[str, Any]
    description: str


def recorded_action(records: Sequence[AuditRecord], audit_id: str, handler: str | None) -> tuple[AuditRecord,
                                                                                                  Mapping[str, Any]]:
    """The one applied remediation of the record `audit_id` (of `handler`, when it has several)."""
    matching = [r for r in records if r.event_id == audit_id]
    if not matching:
        raise UndoError(f"no audit record with id {audit_id!r}")
    record = matching[-1]
    applied = [a for a in record.outcome.get("actions", [])
               if a.get("status") == "applied" and a.get("handler") in HANDLERS
               and HANDLERS[a["handler"]].kind == "remediation"
               and (handler is None or a["handler"] == handler)]
    if not applied:
        which = f" by {handler}" if handler else ""
        raise UndoError(f"audit record {audit_id!r} has no applied remediation{which}: nothing to undo")
    if len(applied) > 1:
        names = ", ".join(sorted(a["handler"] for a in applied))
        raise UndoError(f"audit record {audit_id!r} has several applied remediations ({names}): choose one "
                        "with --handler")
    return record, applied[0]


def undoes_role_assignment(action: Mapping[str, Any]) -> bool:
    """Whether `action` is undone by putting back a role assignment (True) or by writing the vault
    (False); UndoError for a remediation of another resource, which undo cannot put back faithfully
    (a diagnostic setting, lock, Defender plan or private endpoint state written over since)."""
    handler = action["handler"]
    if handler == ROLE_ASSIGNMENT_HANDLER:
        return True
    if handler not in VAULT_HANDLERS:
        raise UndoError(f"{handler} changed a resource beside the vault; kvguard undo cannot put it back faithfully "
                        "from the record: restore it by hand from the audit record's before")
    return False


def recorded_assignment(action: Mapping[str, Any]) -> Mapping[str, Any]:
    """The role assignment `remove_role_assignment` deleted, as its record kept it (ARM GET JSON);
    UndoError naming the field when the record lacks what a faithful put-back needs."""
    befores = action.get("before")
    before = befores[0] if isinstance(befores, list) and befores else None
    if not isinstance(before, Mapping) or not isinstance(before.get("id"), str):
        raise UndoError("the record keeps no deleted role assignment (before[0].id): nothing to put back")
    properties = before.get("properties")
    if not isinstance(properties, Mapping):
        raise UndoError("the recorded role assignment has no properties (before[0].properties)")
    for name in ("principalId", "roleDefinitionId", "scope"):
        if not isinstance(properties.get(name), str) or not properties[name]:
            raise UndoError(f"the recorded role assignment lacks before[0].properties.{name}")
    prefix = properties["scope"].rstrip("/").lower() + "/providers/microsoft.authorization/roleassignments/"
    if not before["id"].lower().startswith(prefix):
        raise UndoError(f"the recorded role assignment {before['id']} does not lie at its scope "
                        f"{properties['scope']} (before[0].properties.scope)")
    return before


def plan_role_assignment_undo(action: Mapping[str, Any], current: Mapping[str, Any] | None) -> list[UndoStep]:
    """The PUT that puts back the role assignment `action` deleted, with its recorded principal,
    role, scope and condition; none when it exists again as it was. An assignment of that id with
    another principal, role or scope is left alone (UndoError): it is someone else's now."""
    before = recorded_assignment(action)
    was = before["properties"]

    def same(properties: Mapping[str, Any]) -> bool:
        return all(str(properties.get(k) or "").rstrip("/").lower() == str(was.get(k) or "").rstrip("/").lower()
                   for k in ("principalId", "roleDefinitionId", "scope", "condition"))

    if current is not None:
        if same(current.get("properties") or {}):
            return []
        raise UndoError(f"role assignment {before['id']} exists with another principal, role, scope or condition: "
                        "left alone")
    properties = {k: was[k] for k in _ASSIGNMENT_PROPERTIES if was.get(k) not in (None, "")}
    role = str(was["roleDefinitionId"]).rsplit("/", 1)[-1]
    condition = " with its condition" if was.get("condition") else ""
    return [UndoStep("create_role_assignment", before["id"], properties,
                     f"re-create role assignment {before['id'].rsplit('/', 1)[-1]} (role {role} for "
                     f"{was['principalId']} at {was['scope']}{condition})")]


def apply_role_assignment_undo(writer: RoleAssignmentWriter, store: StateStore, record: AuditRecord,
                               action: Mapping[str, Any], steps: Sequence[UndoStep], *, now: datetime) -> None:
    """PUT the assignment back, accept it as its baseline (so the next event does not judge it
    new) and audit the undo under the record's vault."""
    for step in steps:
        if step.kind == "create_role_assignment" and isinstance(step.target, Mapping):
            created = writer.create_role_assignment(step.vault_id, step.target)
            baseline = store.get_baseline(step.vault_id)
            store.put_baseline(step.vault_id, dict(created), baseline.etag if baseline else None, now=now)
    _audit_undo(store, record, action, steps, vault_id=record.vault_id or steps[0].vault_id, now=now)


def plan_undo(vault_id: str, action: Mapping[str, Any], current: VaultConfig | None) -> list[UndoStep]:
    """The writes that put back what `action` took away and the vault still lacks (none when it is
    already as before: an undo is idempotent). Only for the remediations of the vault itself
    (`undoes_role_assignment` says which)."""
    if undoes_role_assignment(action):
        raise UndoError(f"{action['handler']} is undone by putting back the role assignment, never by writing "
                        "the vault")
    if current is None:
        raise UndoError(f"vault {vault_id} does not exist any more: nothing to put back")
    handler = action["handler"]
    if HANDLERS[handler].irreversible:
        raise UndoError(f"{handler} cannot be undone: Azure does not allow switching it off again")
    befores, afters = list(action.get("before") or []), list(action.get("after") or [])
    if handler == "revert_access_policy":
        return _put_back_permissions(vault_id, befores, afters, current)
    return _put_back_properties(vault_id, befores, current)


def _put_back_permissions(vault_id: str, befores: list[Any], afters: list[Any],
                          current: VaultConfig) -> list[UndoStep]:
    steps = []
    for index, before in enumerate(befores):
        if not isinstance(before, Mapping):
            continue
        was = AccessPolicy.from_arm(before)
        left = afters[index] if index < len(afters) and isinstance(afters[index], Mapping) else None
        kept = AccessPolicy.from_arm(left) if left is not None else None
        now = current.policy_for(was.principal.key)
        missing = {c: p - (kept.get(c) if kept else frozenset()) - (now.get(c) if now else frozenset())
                   for c, p in was.permissions.items()}
        missing = {c: p for c, p in missing.items() if p}
        if missing:
            entry = AccessPolicy(was.principal, missing)
            perms = "; ".join(f"{c}:{','.join(sorted(p))}" for c, p in sorted(missing.items()))
            steps.append(UndoStep("add_access_policy", vault_id, entry,
                                  f"add back {perms} for {was.principal.describe()}"))
    return steps


def _put_back_properties(vault_id: str, befores: list[Any], current: VaultConfig) -> list[UndoStep]:
    properties = current.raw.get("properties", {})
    patch: dict[str, Any] = {}
    for before in befores:
        if isinstance(before, Mapping):
            patch.update({k: v for k, v in before.items() if v is not None and properties.get(k) != v})
    if not patch:
        return []
    names = ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(patch.items()))
    return [UndoStep("patch", vault_id, patch, f"set {names}")]


def apply_undo(gateway: UndoGateway, store: StateStore, record: AuditRecord, action: Mapping[str, Any],
               steps: Sequence[UndoStep], *, now: datetime) -> VaultConfig | None:
    """Write the steps, accept the result as the vault's baseline and audit the undo."""
    vault_id = steps[0].vault_id
    for step in steps:
        if step.kind == "add_access_policy" and isinstance(step.target, AccessPolicy):
            gateway.add_access_policy(step.vault_id, step.target)
        elif isinstance(step.target, Mapping):
            gateway.update(step.vault_id, step.target)
    final = gateway.get(vault_id)
    if final is not None:
        baseline = store.get_baseline(vault_id)
        store.put_baseline(vault_id, dict(final.raw), baseline.etag if baseline else None, now=now)
    _audit_undo(store, record, action, steps, vault_id=vault_id, now=now)
    return final


def _audit_undo(store: StateStore, record: AuditRecord, action: Mapping[str, Any], steps: Sequence[UndoStep], *,
                vault_id: str, now: datetime) -> None:
    detail = "; ".join(s.description for s in steps)
    store.append_audit(AuditRecord(f"undo:{record.event_id}:{action['handler']}", vault_id, now, {
        "event_id": f"undo:{record.event_id}:{action['handler']}",
        "outcome": "processed",
        "reason": f"undo of {action['handler']} recorded for event {record.event_id}; the result is the new baseline",
        "vault": vault_id,
        "actions": [{"handler": "undo", "status": "applied", "detail": detail, "rules": list(action.get("rules", [])),
                     "before": action.get("after"), "after": action.get("before")}],
    }))
