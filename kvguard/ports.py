"""The ports: what the pipeline needs from the world, as Protocols.

The pipeline knows only these. Azure (ARM, Table Storage, Defender, Event Grid) is behind the
adapters in `kvguard.adapters`; the simulated world (`kvguard.sim`) and SQLite implement the same
ports for replay and tests. Errors that a retry can cure are `TransientError`: the pipeline
releases its claim and lets the event be redelivered. Errors that no retry can cure are
`PermanentError`: the pipeline records the event with the reason and acknowledges it. Which is which
is decided in one place, `kvguard.adapters.azure_clients`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from kvguard.vault import AccessPolicy, VaultConfig


class TransientError(Exception):
    """A failure that may succeed on retry (throttling, 5xx, storage unreachable)."""


class PermanentError(Exception):
    """A failure that no retry of the same event can cure (the request itself is refused, or the
    answer cannot be read): redelivering it would only fail again, for up to 24 hours."""


class ConcurrencyError(Exception):
    """An optimistic-concurrency write lost: someone else wrote first (ETag mismatch or exists)."""


def answers_in_process(component: object) -> bool:
    """Whether an implementation of a port answers without leaving the process (the simulated
    world's say so with a true `answers_in_process` attribute): a step then calls it on its own
    thread, as handing the call to another would only cost."""
    return bool(getattr(component, "answers_in_process", False))


class Clock(Protocol):
    def now(self) -> datetime: ...


class VaultGateway(Protocol):
    """The management plane of Key Vault."""

    def get(self, vault_id: str) -> VaultConfig | None:
        """The vault's current configuration; None when it does not exist (deleted)."""
        ...

    def update(self, vault_id: str, properties: Mapping[str, Any]) -> VaultConfig:
        """PATCH the given top-level `properties` (ARM names, e.g. `networkAcls`); returns the result."""
        ...

    def remove_access_policy(self, vault_id: str, entry: AccessPolicy) -> VaultConfig:
        """`accessPolicies/remove` of exactly `entry`'s permissions for its principal."""
        ...

    def add_access_policy(self, vault_id: str, entry: AccessPolicy) -> VaultConfig:
        """`accessPolicies/add` of exactly `entry`'s permissions for its principal (merged with what
        it holds). Only ever gives back: a revert names the baseline's permissions explicitly before
        it removes `all`, and `kvguard undo` restores what a remediation took away."""
        ...

    def list_vaults(self, subscription_id: str) -> list[VaultConfig]:
        """Every vault of a subscription (for reconciliation and baseline seeding)."""
        ...


class ResourceGateway(Protocol):
    """Any other ARM resource (role assignments, diagnostic settings, locks, …), by id, as ARM
    JSON with REST (camelCase) names. What kvguard reads beside the vaults and deletes to undo."""

    def get(self, resource_id: str) -> Mapping[str, Any] | None:
        """The resource's ARM GET JSON; None when it does not exist."""
        ...

    def delete(self, resource_id: str) -> bool:
        """DELETE the resource; True when it existed, False when it was already gone (a 204)."""
        ...

    def put(self, resource_id: str, document: Mapping[str, Any]) -> Mapping[str, Any]:
        """PUT the resource as `document` says (its `properties`, and what else ARM takes on a
        PUT); returns the resource's ARM JSON afterwards. How restore handlers put a baseline back."""
        ...

    def list_at_scope(self, scope: str, resource_type: str) -> list[Mapping[str, Any]]:
        """Every resource of `resource_type` that applies at `scope`: at it or inherited from above
        it (what ARM's `$filter=atScope()` lists), and for role assignments also those below it
        (on one secret, key or certificate of a vault), for reconciliation and baseline seeding."""
        ...


@dataclass(frozen=True)
class Alert:
    """One finding as the alert sinks see it."""

    vault_id: str
    rule: str
    title: str
    severity: str
    score: int
    risk: int
    evidence: Mapping[str, Any]
    mitre: tuple[str, ...]
    event_id: str
    caller: str | None
    time: datetime
    explanation: tuple[str, ...] = ()
    # What kvguard does about it after the alert (`revert_access_policy`, `... (dry run)`), for the
    # people reading the notification; None when the finding is alert-only here.
    revert: str | None = None


class DeploymentReader(Protocol):
    """Reads of kvguard's own deployment, for the reconcile timer's check of it (KV-SELF-02)."""

    def get_event_subscription(self, resource_id: str) -> Mapping[str, Any] | None:
        """The event subscription's ARM GET JSON (REST names); None when it does not exist."""
        ...


class AlertSink(Protocol):
    """Where findings go (Defender for Cloud, an Event Grid topic, a webhook, a file).

    Both calls are idempotent: raising the same alert twice leaves one alert standing."""

    def raise_alert(self, alert: Alert) -> str:
        """Raise or refresh the alert; returns a short description of what was written."""
        ...

    def resolve(self, vault_id: str, rule: str) -> str:
        """Mark the vault × rule finding resolved (Defender: Healthy)."""
        ...


@runtime_checkable
class ParallelAlertSink(AlertSink, Protocol):
    """A sink whose calls are independent requests, one per alert (Defender: one assessment PUT
    per vault × rule, each a resource of its own): the runner makes a delivery's calls side by
    side, at most `parallel_calls` at once, so a delivery costs one call's latency, not their sum."""

    parallel_calls: int


@runtime_checkable
class BatchAlertSink(AlertSink, Protocol):
    """A sink that takes every alert (or resolution) of a delivery in one request (an Event Grid
    topic takes an array of CloudEvents): the runner hands it them all at once."""

    def raise_alerts(self, alerts: Sequence[Alert]) -> list[str]:
        """Raise or refresh every alert in one request; one description per alert, in order."""
        ...

    def resolve_all(self, closed: Sequence[tuple[str, str]]) -> list[str]:
        """Mark every (vault id, rule) resolved in one request; one description per pair, in order."""
        ...


ClaimResult = Literal["claimed", "duplicate", "in_progress"]

VAULT_LEASE = "vault-lease:"


def vault_lease(key: str) -> str:
    """The claim id of the lease on the vault (or resource) `key`: one event of it at a time."""
    return VAULT_LEASE + key


def leased(claim_id: str) -> str | None:
    """The key whose lease `claim_id` is (`vault_lease`), or None for an event's claim: a store
    may keep a lease with the rest of that key's state."""
    return claim_id[len(VAULT_LEASE):] if claim_id.startswith(VAULT_LEASE) else None


class MarkQuery(NamedTuple):
    """One series's marks under one key at or after `since` (see `StateStore.marks_since_each`)."""

    series: str
    key: str
    since: datetime


@dataclass(frozen=True)
class Baseline:
    """The last configuration kvguard accepted for a vault, with its concurrency token."""

    vault_id: str
    config: Mapping[str, Any]
    etag: str
    deleted: bool = False
    updated: datetime | None = None


@dataclass(frozen=True)
class OpenFinding:
    vault_id: str
    rule: str
    finding: Mapping[str, Any]
    opened: datetime


@dataclass(frozen=True)
class RejectedPayload:
    reason: str
    raw: str
    at: datetime
    event_id: str | None = None


@dataclass(frozen=True)
class PendingAction:
    """A remediation recorded as intended and not finished: its plan and the findings it answers."""

    scope: str
    handler: str
    intent: Mapping[str, Any]
    at: datetime


@dataclass(frozen=True)
class OutboxItem:
    key: str
    item: Mapping[str, Any]
    at: datetime


@dataclass(frozen=True)
class OwnWrite:
    """An entry of the ledger of own writes, noted before the write is made: the resource and ARM
    operation, the nonce the write carries as its client request id (`kvguard.client_request`), and
    the event and attempt (the claim's owner token) it was made for, so a reader can tell which
    event's handling wrote it."""

    resource_id: str
    operation: str
    request_id: str
    at: datetime
    event_id: str | None = None
    attempt: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    """What happened to one event: the whole outcome, with before/after of every action."""

    event_id: str
    vault_id: str | None
    at: datetime
    outcome: Mapping[str, Any] = field(default_factory=dict)
    # The attempt (its claim's owner token) that wrote the record: the intents it accounted for
    # name the same attempt, so a retry knows them recorded even when their event has other records.
    attempt: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class VaultState:
    """What the flow of one vault event reads of the state store, read together
    (`StateStore.load`): nothing else writes a vault's state while its lease is held, so these are
    current until the event's record."""

    baseline: Baseline | None
    findings: list[OpenFinding]  # open on the vault, by rule
    pending: list[PendingAction]  # intents not finished in the vault's scope
    marks: list[list[tuple[str, datetime]]]  # the answers to the marks asked for, in order


class StateStore(Protocol):
    """Shared state: every function instance sees the same, so correctness never depends on one
    process's memory. Keys that are resource ids are compared case-insensitively (`vault_key`)."""

    def batch(self) -> AbstractContextManager[None]:
        """Group the writes of one event. A store that can commit them together does (all or
        none); one that cannot writes as it goes. Exceptions propagate."""
        ...

    def load(self, vault_id: str, scope: str, marks: Sequence[MarkQuery]) -> VaultState:
        """`get_baseline(vault_id)`, `open_findings(vault_id)`, `pending_actions(scope)` and
        `marks_since_each(marks)` at once: the reads of one vault event, in one round trip's wait
        where the store can (SQLite reads them in one transaction; Table Storage sends the
        queries side by side)."""
        ...

    # Event claims: at-least-once delivery made exactly-once in effect. A claim is fenced by its
    # owner token: once another claimant has taken over an expired lease, the earlier owner's
    # renew / complete / release fail and change nothing.
    def claim(
        self, event_id: str, now: datetime, lease: timedelta, owner: str = "", *, beside: str | None = None
    ) -> ClaimResult:
        """'claimed' for the first claimant or when an earlier claim's lease has expired;
        'in_progress' while another claimant holds an unexpired lease; 'duplicate' once done.
        `beside` names the claim this one is renewed and completed with (the vault's lease of a
        vault event), kept where one write reaches both if the store can; every claim of
        `event_id` names the same (or none)."""
        ...

    def claim_beside(
        self, event_id: str, lease_id: str, now: datetime, lease: timedelta, owner: str
    ) -> tuple[ClaimResult, bool]:
        """`claim(event_id, …, beside=lease_id)` and, when that claims it, `claim(lease_id, …)`,
        in one write where the store can: the event's claim, and whether the lease was taken with
        it (False: another claimant holds it, or the event was not claimed)."""
        ...

    def renew(self, event_id: str, owner: str, now: datetime, lease: timedelta) -> bool:
        """Extend `owner`'s unfinished claim to `now + lease`; False (and nothing changed) when the
        claim is done, gone or held by another owner."""
        ...

    def renew_each(self, event_ids: Sequence[str], owner: str, now: datetime, lease: timedelta) -> bool:
        """`renew` of every claim in `event_ids` (an event's and its vault's lease) in one write
        where the store can: True when `owner` held them all; False and nothing changed when it
        did not hold one of them. Inside a batch a store that commits the batch as a whole may
        leave the fence to the commit (Table Storage's transaction; SQLite renews with the
        completion, or at the batch's end): True then, and the batch raises TransientError and
        writes nothing when `owner` did not hold them all."""
        ...

    def complete(
        self, event_id: str, now: datetime, owner: str | None = None, *, releasing: Sequence[str] = ()
    ) -> bool:
        """Mark the event done. With `owner`, only while that owner holds the claim (False and
        nothing changed otherwise); without, unconditionally. `releasing` names other unfinished
        claims of `owner` (the vault's lease) to let go of with the completion, in the same write
        where the store can: False and nothing changed unless `owner` holds every one of them. A
        store that cannot write them together completes first and then lets go; a lease it fails to
        let go of runs out by itself."""
        ...

    def release(self, event_id: str, owner: str | None = None) -> bool:
        """Drop an unfinished claim so a redelivery can claim it again at once. With `owner`, only
        that owner's claim; True when a claim was dropped."""
        ...

    # Write-ahead actions: a remediation is recorded as intended before it is applied, so the next
    # attempt that finds the vault already in the planned state can account for it. `scope` names
    # what the action writes (the pipeline uses the vault, whose writes it serialises).
    def begin_action(self, scope: str, handler: str, intent: Mapping[str, Any], now: datetime) -> None:
        """Record (or replace) the intended action of `handler` in `scope`."""
        ...

    def pending_actions(self, scope: str) -> list[PendingAction]:
        """Intended actions in `scope` not finished yet, by handler."""
        ...

    def finish_action(self, scope: str, handler: str) -> None:
        """The action's result is recorded (in the audit): drop its intent. Idempotent."""
        ...

    # Outbox: alerts a secondary sink could not take yet, retried later without holding back the rest.
    def put_outbox(self, key: str, item: Mapping[str, Any], now: datetime) -> None:
        """Keep (or replace) one undelivered alert operation under `key`."""
        ...

    def list_outbox(self) -> list[OutboxItem]: ...

    def drop_outbox(self, key: str) -> None:
        """Delivered: forget it. Idempotent."""
        ...

    # Retention.
    def prune(self, older_than: datetime) -> int:
        """Delete finished claims, audit records, marks, rejected payloads, intents and outbox
        items older than `older_than`, and stored configurations no open finding names any more;
        the number of records removed. Baselines and open findings (with the configurations they
        name) are current state, never pruned."""
        ...

    # Baselines with optimistic concurrency.
    def get_baseline(self, vault_id: str) -> Baseline | None: ...

    def put_baseline(
        self, vault_id: str, config: Mapping[str, Any], etag: str | None, *, deleted: bool = False,
        now: datetime | None = None,
    ) -> str:
        """Write a baseline. `etag=None` means "must not exist yet"; otherwise it must match the
        stored ETag. Raises ConcurrencyError when it does not. Returns the new ETag."""
        ...

    def list_baselines(self) -> list[Baseline]: ...

    # Records kept for people: audit trail and rejected payloads.
    def append_audit(self, record: AuditRecord) -> None: ...

    def list_audit(self, vault_id: str | None = None) -> list[AuditRecord]: ...

    def audited(self, event_id: str, vault_id: str | None, attempt: str | None = None) -> bool:
        """Whether an audit record of `event_id` for `vault_id` exists, written by `attempt` when
        one is named (a retry whose earlier attempt got as far as its audit record does not write
        a second one; an intent written by a later attempt of the same event is not recorded by it)."""
        ...

    def record_rejected(self, rejected: RejectedPayload) -> None: ...

    def list_rejected(self) -> list[RejectedPayload]: ...

    # Open findings: one per vault × rule.
    def open_finding(self, vault_id: str, rule: str, finding: Mapping[str, Any], now: datetime) -> bool:
        """Open (or refresh) a finding; True when it was not open before."""
        ...

    def close_finding(self, vault_id: str, rule: str) -> bool:
        """True when a finding was open and is now closed."""
        ...

    def open_findings(self, vault_id: str) -> list[OpenFinding]: ...

    # Time-stamped marks for history rules and the circuit breaker.
    def add_mark(self, series: str, key: str, member: str, at: datetime) -> None:
        """Remember that `member` happened under `key` of `series` at `at` (idempotent per member+at)."""
        ...

    def marks_since(self, series: str, key: str, since: datetime) -> list[tuple[str, datetime]]:
        """(member, at) of every mark of `series`/`key` at or after `since`, oldest first."""
        ...

    def marks_since_each(self, queries: Sequence[MarkQuery]) -> list[list[tuple[str, datetime]]]:
        """`marks_since` of every query, answered in query order: one read for all the history an
        event's rules look at, where a store can make it one (SQLite does; Table Storage reads
        each series's partition)."""
        ...

    # The ledger of own writes: what kvguard wrote with its identity, noted before writing, so that
    # an event of that identity which kvguard did not plan stands out (KV-SELF-01).
    def record_own_write(self, entry: OwnWrite) -> None:
        """Note that kvguard is about to make the write `entry` describes. Every call is an entry
        of its own: two writes need two entries, each with its own nonce."""
        ...

    def match_own_write(
        self, resource_id: str, operation: str, request_id: str, *, since: datetime, until: datetime,
    ) -> bool:
        """Whether an entry for `resource_id` and `operation` (both compared case-insensitively),
        noted from `since` to `until` (both included) and not voided, carries the nonce
        `request_id`. Only that nonce matches: every event of the write (a redelivery, ARM's second
        event of the same write) carries it, and no other write does. An entry without a nonce (one
        stored before entries had them) matches nothing."""
        ...

    def void_own_write(self, entry: OwnWrite) -> None:
        """The write `entry` was noted for failed: its nonce matches nothing from now on."""
        ...

    def prune_own_writes(self, older_than: datetime) -> int:
        """Drop the ledger entries made before `older_than`; returns how many were dropped."""
        ...
