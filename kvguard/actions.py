"""The shared runner for handler operations: idempotency checks, dry-run, before/after capture and
error collection live here once, so handlers only plan.

A failure is a `failed` result with the error in its detail, never a swallowed warning. Transient
failures while *alerting* are re-raised by the pipeline (nothing has been changed yet, so a
redelivery can safely start over); remediation failures are recorded and leave the baseline alone,
so the next event or reconciliation sees the change again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from kvguard.ports import Alert, AlertSink, ResourceGateway, TransientError, VaultGateway
from kvguard.vault import AccessPolicy, VaultConfig
from remediation.base import Operation

Status = Literal["applied", "planned", "skipped", "failed"]


@dataclass(frozen=True)
class ActionResult:
    handler: str
    status: Status
    detail: str
    rules: tuple[str, ...] = ()
    before: Any = None
    after: Any = None
    transient: bool = field(default=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"handler": self.handler, "status": self.status, "detail": self.detail}

    def to_audit(self) -> dict[str, Any]:
        return {**self.to_json(), "rules": list(self.rules), "before": self.before, "after": self.after}


def skipped(handler: str, reason: str, rules: Sequence[str] = ()) -> ActionResult:
    return ActionResult(handler, "skipped", reason, tuple(rules))


class ActionRunner:
    def __init__(
        self, gateway: VaultGateway, sinks: Mapping[str, AlertSink], *, resources: ResourceGateway | None = None
    ) -> None:
        """`resources` writes the resources beside the vaults (none: their PUTs fail, recorded)."""
        self._gateway = gateway
        self._sinks = sinks
        self._resources = resources

    def run(self, handler: str, operations: Sequence[Operation], *, dry_run: bool,
            current: VaultConfig | None) -> ActionResult:
        """Apply (or, in dry-run, only plan) one handler's operations; one result for the handler."""
        rules = tuple(sorted({r for op in operations for r in op.rules}))
        pending = [op for op in (self._still_needed(op, current) for op in operations) if op is not None]
        if not pending:
            return ActionResult(handler, "skipped", "already in the desired state", rules)
        details = [op.description for op in pending]
        if dry_run:
            return ActionResult(handler, "planned", "; ".join(details), rules,
                                before=[_jsonable(op.before) for op in pending])
        afters: list[Any] = []
        try:
            for op in pending:
                afters.append(self._apply(op))
        except Exception as error:  # every failure is recorded as failed, with its reason
            done = "; ".join(details[: len(afters)])
            detail = f"failed at {details[len(afters)]!r}: {type(error).__name__}: {error}"
            return ActionResult(handler, "failed", f"{done}; {detail}" if done else detail, rules,
                                before=[_jsonable(op.before) for op in pending], after=afters,
                                transient=isinstance(error, TransientError))
        return ActionResult(handler, "applied", "; ".join(details), rules,
                            before=[_jsonable(op.before) for op in pending], after=afters)

    def _still_needed(self, op: Operation, current: VaultConfig | None) -> Operation | None:
        """The part of an operation that the current state still needs (idempotency)."""
        if op.kind == "remove_access_policy" and isinstance(op.target, AccessPolicy):
            if current is None:
                return None
            entry = current.policy_for(op.target.principal.key)
            if entry is None:
                return None
            remaining = {c: p & entry.get(c) for c, p in op.target.permissions.items() if p & entry.get(c)}
            if not remaining:
                return None
            return replace(op, target=AccessPolicy(op.target.principal, remaining))
        if op.kind == "patch" and isinstance(op.target, Mapping):
            if current is None:
                return None
            props = current.raw.get("properties", {})
            needed = {k: v for k, v in op.target.items() if props.get(k) != v}
            return replace(op, target=needed) if needed else None
        if op.kind == "put_resource" and isinstance(op.target, Mapping) and self._resources is not None:
            # re-read: the resource may have been put right (or changed again) since it was planned
            now = self._resources.get(op.vault_id)
            return None if now is not None and contains(now, op.target) else replace(op, before=now)
        return op

    def _apply(self, op: Operation) -> Any:
        if op.kind == "remove_access_policy" and isinstance(op.target, AccessPolicy):
            result = self._gateway.remove_access_policy(op.vault_id, op.target)
            entry = result.policy_for(op.target.principal.key)
            return entry.to_arm() if entry else None
        if op.kind == "patch" and isinstance(op.target, Mapping):
            result = self._gateway.update(op.vault_id, op.target)
            props = result.raw.get("properties", {})
            return {k: props.get(k) for k in op.target}
        if op.kind == "put_resource" and isinstance(op.target, Mapping):
            if self._resources is None:
                raise LookupError(f"no writer of the resource {op.vault_id} is configured")
            return self._resources.put(op.vault_id, op.target)
        if op.kind == "alert" and isinstance(op.target, Alert):
            return self._sinks[op.handler].raise_alert(op.target)
        if op.kind == "resolve" and isinstance(op.target, Alert):
            return self._sinks[op.handler].resolve(op.target.vault_id, op.target.rule)
        raise ValueError(f"operation {op.kind} of {op.handler} has no applier")


def contains(document: Any, wanted: Any) -> bool:
    """Whether `document` already says everything `wanted` says: objects key by key (keys
    case-insensitive, as ARM treats them), anything else by equality."""
    if isinstance(wanted, Mapping):
        if not isinstance(document, Mapping):
            return False
        present = {str(k).lower(): v for k, v in document.items()}
        return all(str(k).lower() in present and contains(present[str(k).lower()], v) for k, v in wanted.items())
    return bool(document == wanted)


def _jsonable(value: Any) -> Any:
    if isinstance(value, AccessPolicy):
        return value.to_arm()
    return value
