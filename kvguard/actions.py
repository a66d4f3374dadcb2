"""The shared runner for handler operations: idempotency checks, dry-run, before/after capture and
error collection live here once, so handlers only plan.

A failure is a `failed` result with the error in its detail, never a swallowed warning. Transient
failures while *alerting* are re-raised by the pipeline once the revert beside them has answered
(nothing is recorded yet, and the revert's intent written ahead lets a redelivery confirm what it
did and alert again); remediation failures are recorded and leave the baseline alone, so the next
event or reconciliation sees the change again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, cast

from kvguard.client_request import new_request_id, sending
from kvguard.event_feeds import destination
from kvguard.ids import vault_key
from kvguard.intents import PolicyExemptionRef, RoleAssignmentRef
from kvguard.perimeters import Sources, inbound_sources, without_sources
from kvguard.ports import (
    Alert,
    AlertSink,
    BatchAlertSink,
    OwnWrite,
    ParallelAlertSink,
    ResourceGateway,
    StateStore,
    TransientError,
    VaultGateway,
)
from kvguard.resources import scope_of
from kvguard.vault import AccessPolicy, VaultConfig
from remediation.base import Operation

Status = Literal["applied", "planned", "skipped", "failed"]

# The ARM operation each kind of write comes back as in its event: what the ledger notes.
ARM_OPERATIONS: dict[str, str] = {
    "add_access_policy": "Microsoft.KeyVault/vaults/accessPolicies/write",
    "remove_access_policy": "Microsoft.KeyVault/vaults/accessPolicies/write",
    "patch": "Microsoft.KeyVault/vaults/write",
    "delete_role_assignment": "Microsoft.Authorization/roleAssignments/delete",
    "delete_policy_exemption": "Microsoft.Authorization/policyExemptions/delete",
}


@dataclass(frozen=True)
class ActionResult:
    handler: str
    status: Status
    detail: str
    rules: tuple[str, ...] = ()
    before: Any = None
    after: Any = None
    transient: bool = field(default=False, compare=False)
    # When the runner started and finished this handler's operations (latency telemetry).
    started: datetime | None = field(default=None, compare=False)
    finished: datetime | None = field(default=None, compare=False)
    # The vault as the last of these writes answered (None: no vault write): the state after the
    # revert, so that nobody reads it again.
    state: VaultConfig | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"handler": self.handler, "status": self.status, "detail": self.detail}

    def to_audit(self) -> dict[str, Any]:
        return {**self.to_json(), "rules": list(self.rules), "before": self.before, "after": self.after}


class Applied(NamedTuple):
    """One operation's answer: what it left where it wrote, and the vault after a vault write."""

    after: Any
    state: VaultConfig | None = None


@dataclass(frozen=True)
class WrittenFor:
    """The event, and the attempt at it (the claim's owner token), that a write is made for: what
    its ledger entry names."""

    event_id: str | None = None
    attempt: str | None = None
    noted: tuple[OwnWrite, ...] = ()  # ledger entries written ahead for these writes (`ActionRunner.note_ahead`)


def skipped(handler: str, reason: str, rules: Sequence[str] = ()) -> ActionResult:
    return ActionResult(handler, "skipped", reason, tuple(rules))


class ActionRunner:
    def __init__(self, gateway: VaultGateway, sinks: Mapping[str, AlertSink], *,
                 ledger: StateStore | None = None, now: Callable[[], datetime] | None = None,
                 resources: ResourceGateway | None = None) -> None:
        """With a `ledger`, every vault write is noted there before it is made, so that its event
        is recognised as kvguard's own and nothing else is. `now` stamps those notes and when each
        action started and finished (telemetry's latency); it is asked at each use, so a pipeline
        whose clock is replaced is followed. `resources` reads, writes and deletes the resources
        beside the vaults (none: their writes fail, recorded); their writes are noted in the ledger
        the same way."""
        if ledger is not None and now is None:
            raise ValueError("a ledger of own writes needs a clock")
        self._gateway = gateway
        self._sinks = sinks
        self._resources = resources
        self._ledger = ledger
        self._now: Callable[[], datetime] = now or (lambda: datetime.now(UTC))
        self._resources = resources
        self._shapes: dict[int, tuple[AlertSink, bool, bool]] = {}

    def run(self, handler: str, operations: Sequence[Operation], *, dry_run: bool,
            current: VaultConfig | None, written_for: WrittenFor | None = None) -> ActionResult:
        """Apply (or, in dry-run, only plan) one handler's operations; one result for the handler,
        stamped with when it started and finished. `written_for` is what their ledger entries name."""
        started = self._now()
        result = self._run(handler, operations, dry_run=dry_run, current=current,
                           written_for=written_for or WrittenFor())
        return replace(result, started=started, finished=self._now())

    def note_ahead(self, operations: Sequence[Operation], written_for: WrittenFor) -> list[OwnWrite]:
        """The ledger entries the ARM writes of `operations` will carry, made now, so that the
        caller writes them with its write-ahead intent in one write; `run` given them in
        `written_for.noted` sends each write with its entry's nonce instead of noting one then.
        An entry whose write is not made after all (no longer needed, or a crash) matches nothing."""
        if self._ledger is None:
            return []
        return [entry for op in operations if (entry := self._own_write_entry(op, written_for)) is not None]

    def _run(self, handler: str, operations: Sequence[Operation], *, dry_run: bool,
             current: VaultConfig | None, written_for: WrittenFor) -> ActionResult:
        rules = tuple(sorted({r for op in operations for r in op.rules}))
        pending = [op for op in (self._still_needed(op, current) for op in operations) if op is not None]
        if not pending:
            return ActionResult(handler, "skipped", "already in the desired state", rules)
        details = [op.description for op in pending]
        if dry_run:
            return ActionResult(handler, "planned", "; ".join(details), rules,
                                before=[_jsonable(op.before) for op in pending])
        afters: list[Any] = []
        state: VaultConfig | None = None
        try:
            batch = self._batch(handler, pending)
            if batch is not None:
                afters = batch
            else:
                noted = list(written_for.noted)
                for applied in self._applied_each(handler, pending, written_for, noted=noted):
                    afters.append(applied.after)
                    state = applied.state or state
        except Exception as error:  # every failure is recorded as failed, with its reason
            done = "; ".join(details[: len(afters)])
            detail = f"failed at {details[len(afters)]!r}: {type(error).__name__}: {error}"
            return ActionResult(handler, "failed", f"{done}; {detail}" if done else detail, rules,
                                before=[_jsonable(op.before) for op in pending], after=afters,
                                transient=isinstance(error, TransientError), state=state)
        return ActionResult(handler, "applied", "; ".join(details), rules,
                            before=[_jsonable(op.before) for op in pending], after=afters, state=state)

    def _applied_each(self, handler: str, operations: Sequence[Operation],
                      written_for: WrittenFor, *, noted: list[OwnWrite]) -> Iterator[Applied]:
        """Each operation's answer, in order. A sink of independent calls (`ParallelAlertSink`)
        gets them side by side; the answers still come in order and the first failure in that
        order is raised, so the result reads as one after another would (what was done before
        it, where it failed, whether transient), though the calls after it were made too."""
        sink = self._sinks.get(handler)
        if (not self._shape(sink)[1] or len(operations) < 2
                or not all(op.kind in ("alert", "resolve") for op in operations)):
            yield from (self._written(op, written_for, noted) for op in operations)
            return
        from concurrent.futures import ThreadPoolExecutor

        parallel_calls = cast(ParallelAlertSink, sink).parallel_calls  # by its shape
        with ThreadPoolExecutor(max_workers=min(parallel_calls, len(operations)),
                                thread_name_prefix=f"kvguard-{handler}") as calls:
            yield from calls.map(lambda op: self._written(op, written_for, []), operations)  # alerts: no ledger

    def _shape(self, sink: AlertSink | None) -> tuple[bool, bool]:
        """Whether `sink` takes a batch, and whether its calls go side by side: asked of each sink
        once, since isinstance against a runtime-checkable protocol walks the protocol's members
        (about 25 µs on Python 3.11, twice for every alert delivery)."""
        if sink is None:
            return False, False
        known = self._shapes.get(id(sink))
        if known is None or known[0] is not sink:
            known = (sink, isinstance(sink, BatchAlertSink), isinstance(sink, ParallelAlertSink))
            self._shapes[id(sink)] = known
        return known[1], known[2]

    def _batch(self, handler: str, operations: Sequence[Operation]) -> list[Any] | None:
        """Every alert (or every resolution) of `operations` in one request, when the handler's
        sink takes a batch; None when it does not (each operation is then applied on its own)."""
        sink = self._sinks.get(handler)
        kinds = {op.kind for op in operations}
        if not self._shape(sink)[0] or len(kinds) != 1 or not kinds <= {"alert", "resolve"}:
            return None
        sink = cast(BatchAlertSink, sink)  # by its shape
        alerts = [op.target for op in operations if isinstance(op.target, Alert)]
        if len(alerts) != len(operations):
            return None
        if kinds == {"alert"}:
            return list(sink.raise_alerts(alerts))
        return list(sink.resolve_all([(alert.vault_id, alert.rule) for alert in alerts]))

    def confirm(
        self, handler: str, operations: Sequence[Operation], current: VaultConfig | None
    ) -> ActionResult | None:
        """The result an earlier attempt could not record: its operations that the current state
        shows done, as `applied` ("confirmed on retry"); None when none is (judged afresh)."""
        if current is None:
            return None
        done = [op for op in operations if self._still_needed(op, current) is None]
        if not done:
            return None
        rules = tuple(sorted({r for op in done for r in op.rules}))
        details = "; ".join(op.description for op in done)
        return ActionResult(handler, "applied", f"{details}; confirmed on retry", rules,
                            before=[_jsonable(op.before) for op in done],
                            after=[_observed(op, current) for op in done])

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
        if op.kind == "add_access_policy" and isinstance(op.target, AccessPolicy):
            # Only ever re-grants what an entry that still exists had: never creates one.
            entry = current.policy_for(op.target.principal.key) if current is not None else None
            if entry is None:
                return None
            missing = {c: frozenset(n for n in names if n.lower() not in entry.get(c))
                       for c, names in op.target.permissions.items()}
            missing = {c: names for c, names in missing.items() if names}
            return replace(op, target=AccessPolicy(op.target.principal, missing)) if missing else None
        if op.kind == "patch" and isinstance(op.target, Mapping):
            if current is None:
                return None
            props = current.raw.get("properties", {})
            needed = {k: v for k, v in op.target.items() if props.get(k) != v}
            return replace(op, target=needed) if needed else None
        if op.kind == "delete_role_assignment" and isinstance(op.target, RoleAssignmentRef):
            return op if self._still_the_assignment(op.target) else None
        if op.kind == "delete_policy_exemption" and isinstance(op.target, PolicyExemptionRef):
            return op if self._still_the_exemption(op.target) else None
        if op.kind == "remove_rule_sources" and isinstance(op.target, Mapping):
            return self._rule_without_sources(op, op.target)
        if op.kind == "delete_resource" and isinstance(op.target, Mapping):
            return self._still_the_subscription(op, op.target)
        if op.kind == "put_resource" and isinstance(op.target, Mapping) and self._resources is not None:
            # re-read: the resource may have been put right (or changed again) since it was planned
            now = self._resources.get(op.vault_id)
            return None if now is not None and contains(now, op.target) else replace(op, before=now)
        return op

    def _rule_without_sources(self, op: Operation, target: Mapping[str, Any]) -> Operation | None:
        """Re-read the access rule and plan the PUT of what it admits now, less the added sources
        it still has (a source added meanwhile stays); None when none of them is left, or the rule."""
        if self._resources is None:
            raise ValueError("no resource gateway to write perimeter access rules with")
        current = self._resources.get(op.vault_id)
        if current is None:
            return None
        added = Sources(frozenset(target["addressPrefixes"]), frozenset(target["subscriptions"]))
        still = Sources(added.prefixes & inbound_sources(current).prefixes,
                        added.subscriptions & inbound_sources(current).subscriptions)
        if not still:
            return None
        return replace(op, kind="put_resource", target=without_sources(current, still), before=dict(current))

    def _still_the_subscription(self, op: Operation, target: Mapping[str, Any]) -> Operation | None:
        """Re-read the event subscription: still there, still sending where the finding saw."""
        if self._resources is None:
            raise ValueError("no resource gateway to delete event subscriptions with")
        current = self._resources.get(op.vault_id)
        found = destination(current)
        if current is None or found is None or found.value != target["destination"]:
            return None
        return replace(op, before=dict(current))

    def _still_the_assignment(self, target: RoleAssignmentRef) -> bool:
        """Re-read the assignment: still there, with the principal, role and scope the finding saw."""
        if self._resources is None:
            raise ValueError("no resource gateway to delete role assignments with")
        current = self._resources.get(target.id)
        if current is None:
            return False
        properties = current.get("properties") or {}
        return (str(properties.get("principalId") or "").lower() == target.principal_id
                and str(properties.get("roleDefinitionId") or "").lower() == target.role_definition_id
                and scope_of(str(current.get("id") or target.id)).lower() == target.scope)

    def _still_the_exemption(self, target: PolicyExemptionRef) -> bool:
        """Re-read the exemption: still there, exempting the assignment, at the scope and in the
        category the finding saw (an id reused for another exemption is left alone)."""
        if self._resources is None:
            raise ValueError("no resource gateway to delete policy exemptions with")
        current = self._resources.get(target.id)
        if current is None:
            return False
        properties = current.get("properties") or {}
        return (str(properties.get("policyAssignmentId") or "").lower() == target.policy_assignment_id
                and str(properties.get("exemptionCategory") or "").lower() == target.category
                and scope_of(str(current.get("id") or target.id)).lower() == target.scope)

    def _written(self, op: Operation, written_for: WrittenFor, noted: list[OwnWrite]) -> Applied:
        """Apply one operation; an ARM write is noted in the ledger first, with a fresh nonce that
        the write carries as its client request id, and the entry is voided when the write fails
        (throttled, refused, anything): a failed write comes back as no event of kvguard's, so its
        entry must not stand for another write. An entry of `noted` for the same resource and
        operation (written ahead with the intent) is taken instead of noting one now."""
        entry = self._own_write_entry(op, written_for)
        if entry is None:
            return self._apply(op)
        assert self._ledger is not None
        ahead = next((e for e in noted if vault_key(e.resource_id) == vault_key(entry.resource_id)
                      and e.operation == entry.operation), None)
        if ahead is not None:
            noted.remove(ahead)
            entry = ahead
        else:
            self._ledger.record_own_write(entry)  # written ahead: a crash leaves an entry nothing matches
        try:
            with sending(entry.request_id):
                return self._apply(op)
        except Exception:
            self._ledger.void_own_write(entry)
            raise

    def _own_write_entry(self, op: Operation, written_for: WrittenFor) -> OwnWrite | None:
        """The ledger entry of the ARM write `op` makes, or None (no ledger, or not an ARM write)."""
        operation = ARM_OPERATIONS.get(op.kind)
        if op.kind == "put_resource" and isinstance(op.target, Mapping):
            operation = f"{op.target.get('type')}/write"  # a resource beside the vault: its own type's write
        if op.kind == "delete_resource" and isinstance(op.target, Mapping):
            operation = f"{op.target.get('type')}/delete"
        if operation is None or self._ledger is None:
            return None
        return OwnWrite(op.vault_id, operation, new_request_id(), self._now(), written_for.event_id,
                        written_for.attempt)

    def _apply(self, op: Operation) -> Applied:
        """What the write left where it wrote, and the vault as its answer showed it (a vault write)."""
        if op.kind == "remove_access_policy" and isinstance(op.target, AccessPolicy):
            result = self._gateway.remove_access_policy(op.vault_id, op.target)
            entry = result.policy_for(op.target.principal.key)
            return Applied(entry.to_arm() if entry else None, result)
        if op.kind == "add_access_policy" and isinstance(op.target, AccessPolicy):
            result = self._gateway.add_access_policy(op.vault_id, op.target)
            entry = result.policy_for(op.target.principal.key)
            return Applied(entry.to_arm() if entry else None, result)
        if op.kind == "patch" and isinstance(op.target, Mapping):
            result = self._gateway.update(op.vault_id, op.target)
            props = result.raw.get("properties", {})
            return Applied({k: props.get(k) for k in op.target}, result)
        return Applied(self._apply_beside(op))

    def _apply_beside(self, op: Operation) -> Any:
        """An operation that writes no vault: a resource beside one, or an alert sink."""
        if op.kind == "delete_role_assignment" and isinstance(op.target, RoleAssignmentRef):
            assert self._resources is not None  # checked when the delete was found still needed
            existed = self._resources.delete(op.target.id)
            return None if existed else "already gone"
        if op.kind == "delete_policy_exemption" and isinstance(op.target, PolicyExemptionRef):
            assert self._resources is not None  # checked when the delete was found still needed
            return None if self._resources.delete(op.target.id) else "already gone"
        if op.kind == "delete_resource" and isinstance(op.target, Mapping):
            assert self._resources is not None  # checked when the delete was found still needed
            return None if self._resources.delete(op.vault_id) else "already gone"
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


def merged(confirmed: ActionResult, result: ActionResult) -> ActionResult:
    """What an earlier attempt did (confirmed) and what this one did on top, as one result."""
    if result.status == "skipped":
        return confirmed
    return ActionResult(
        confirmed.handler, result.status, f"{confirmed.detail}; {result.detail}",
        tuple(sorted({*confirmed.rules, *result.rules})),
        before=[*(confirmed.before or []), *(result.before or [])],
        after=[*(confirmed.after or []), *(result.after or [])], transient=result.transient, state=result.state,
    )


def _observed(op: Operation, current: VaultConfig) -> Any:
    """What `current` holds where the operation wrote, in the shape `_apply` returns."""
    if isinstance(op.target, AccessPolicy):
        entry = current.policy_for(op.target.principal.key)
        return entry.to_arm() if entry else None
    props = current.raw.get("properties", {})
    return {k: props.get(k) for k in op.target} if isinstance(op.target, Mapping) else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, AccessPolicy):
        return value.to_arm()
    return value
