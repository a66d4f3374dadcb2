"""The context one event carries through the steps of its flow: what it is, what was read for
it, what was found and decided, and what was done. Each step reads what the steps before it
filled in and adds its own, so a step takes the services and the context, not a dozen values.

`EventContext` is a vault's change (and kvguard's own deployment, with no vault read);
`ResourceContext` a change of a resource beside the vaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from kvguard.actions import ActionResult
from kvguard.decision import Decision
from kvguard.detection import Finding, History
from kvguard.events import VaultEvent
from kvguard.ports import Baseline, PendingAction
from kvguard.resources import ResourceChange, ResourceState
from kvguard.risk import Risk
from kvguard.vault import VaultConfig, VaultDiff
from remediation.base import Operation

NO_RISK = Risk(0, "none", ())


class Recall(NamedTuple):
    """What the state store remembered for one event: the rules' History, and whether this
    caller's change of this vault is already counted in the burst window."""

    history: History
    vault_marked: bool


NOTHING_RECALLED = Recall(History(), vault_marked=False)


class Earlier(NamedTuple):
    """What an earlier attempt on this vault wrote ahead (see `acting.earlier_attempt`)."""

    intended: tuple[str, ...]
    answered: dict[str, ActionResult]
    findings: list[Finding]
    alerts: list[ActionResult]
    operations: dict[str, list[Operation]]
    # The findings (`writeahead.finding_key`) the attempt that sent `alerts` had: a finding it
    # did not have (a grant made since) is alerted now.
    alerted: frozenset[tuple[str, str]] = frozenset()


NOTHING_EARLIER = Earlier((), {}, [], [], {})


@dataclass(kw_only=True)
class FlowContext:
    """What every event's context holds: the event and the time it is judged at, what the state
    store remembered, and what detect (with the notes of what suppressions held back), score,
    decide and act add. A sweep's stand-in event is
    judged in one of these as it is; a vault's change and a resource's add what was read."""

    event: VaultEvent
    now: datetime
    recall: Recall = NOTHING_RECALLED
    findings: list[Finding] = field(default_factory=list)
    risk: Risk = NO_RISK
    decision: Decision | None = None
    suppressed: list[str] = field(default_factory=list)  # the notes saying which findings were suppressed
    actions: list[ActionResult] = field(default_factory=list)
    remediated: bool = False  # a remediation was applied
    failed: bool = False  # a remediation failed, or the state moved under it: the baseline stays
    # The circuit breaker's marks of the vault, when read with the event's other state
    # (`flow.memory.read_vault`); None: read when the decision needs them.
    remediation_marks: list[tuple[str, datetime]] | None = None

    @property
    def decided(self) -> Decision:
        """The decision; a step that acts before `decide` ran is a fault of the flow, not of the event."""
        if self.decision is None:
            raise RuntimeError("acting on an event before deciding")
        return self.decision


@dataclass(kw_only=True)
class EventContext(FlowContext):
    """A vault's change. `owner` fences this attempt's claims (empty when no vault is leased:
    kvguard's own deployment); `vault_id` is the vault as the record names it."""

    owner: str = ""
    vault_id: str = ""
    baseline: Baseline | None = None
    before: VaultConfig | None = None  # the accepted baseline, parsed
    after: VaultConfig | None = None  # the vault as read after the event (None: gone)
    change: VaultDiff | None = None
    pending: list[PendingAction] = field(default_factory=list)  # the vault's intents not finished, as read
    earlier: Earlier = NOTHING_EARLIER
    joined: list[Finding] = field(default_factory=list)  # findings that repeat an open one
    final: VaultConfig | None = None  # the vault after acting
    opened: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # the open findings' records to write
    # The vault's open findings as read, once per event (`flow.findings.open_before`).
    open_before: dict[str, Mapping[str, Any]] | None = None

    @property
    def steering(self) -> VaultConfig | None:
        """The accepted baseline's tags steer, not the change's."""
        return self.before or self.after

    @property
    def current(self) -> VaultConfig | None:
        return self.after or self.before

    @property
    def moved_to(self) -> VaultConfig | None:
        """The vault after acting when the state findings are compared with moved (a remediation,
        first sight, a change): posture and diff findings can only stop being true then. None when
        nothing moved, or the vault is gone."""
        moved = self.remediated or self.before is None or (self.change is not None and not self.change.empty)
        return self.final if moved else None

    @property
    def listed(self) -> list[Finding]:
        """The findings the record lists: a joined report was already alerted and listed."""
        return [f for f in self.findings if f not in self.joined]


@dataclass(kw_only=True)
class ResourceContext(FlowContext):
    """A change of a resource beside the vaults. `vault_id` is the vault the event names (None
    for a broader scope: the findings name the vaults it covers); marks are kept under `history_key`."""

    state: ResourceState
    vault_id: str | None = None
    baseline: Baseline | None = None
    history_key: str = ""
    final: Mapping[str, Any] | None = None  # the resource after acting

    @property
    def change(self) -> ResourceChange:
        return self.state.change

    @property
    def judged_id(self) -> str:
        """What the decision and the audit record name: the vault, or the resource itself."""
        return self.vault_id or self.change.id
