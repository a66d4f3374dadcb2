"""`kvguard undo AUDIT_ID [--handler H] [--apply]`: put back the `before` of one recorded
remediation, for the day kvguard reverted something it should not have.

AUDIT_ID is the event id of the audit record (the outcome's `event_id`, `EventId` in the findings
table). Only what the remediation took away is put back: the permissions a revert removed (an
`accessPolicies/add` of exactly those), or the property values a restore replaced (a PATCH of those
properties). Without `--apply` it only says what it would do. With it, the restored state becomes
the vault's baseline (so the next event does not revert it again) and the undo is audited.
Enabling purge protection cannot be undone (Azure refuses), and alerts are resolved, not undone.
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


@dataclass(frozen=True)
class UndoStep:
    kind: Literal["add_access_policy", "patch"]
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


def plan_undo(vault_id: str, action: Mapping[str, Any], current: VaultConfig | None) -> list[UndoStep]:
    """The writes that put back what `action` took away and the vault still lacks (none when it is
    already as before: an undo is idempotent)."""
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
    detail = "; ".join(s.description for s in steps)
    store.append_audit(AuditRecord(f"undo:{record.event_id}:{action['handler']}", vault_id, now, {
        "event_id": f"undo:{record.event_id}:{action['handler']}",
        "outcome": "processed",
        "reason": f"undo of {action['handler']} recorded for event {record.event_id}; the result is the new baseline",
        "vault": vault_id,
        "actions": [{"handler": "undo", "status": "applied", "detail": detail, "rules": list(action.get("rules", [])),
                     "before": action.get("after"), "after": action.get("before")}],
    }))
    return final
