"""What happened to one delivered event, in the `--json` shape the README documents (other tools read it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from kvguard.actions import ActionResult
from kvguard.detection import Finding
from kvguard.events import VaultEvent

OutcomeKind = Literal["processed", "duplicate", "ignored", "rejected", "self"]


@dataclass(frozen=True)
class Outcome:
    event_id: str | None
    outcome: OutcomeKind
    reason: str
    vault: str | None = None
    risk: int = 0
    severity: str = "none"
    findings: Sequence[Finding] = ()
    actions: Sequence[ActionResult] = ()
    explanation: Sequence[str] = field(default=(), compare=False)
    # Findings closed by this event (alert sinks told: Defender Healthy). Kept out of `actions`, so
    # counting actions never counts a resolution as an alert; they are in the audit record.
    resolutions: Sequence[ActionResult] = ()
    # The event it answers and when the pipeline was done with it: for telemetry and the findings
    # table (operation, caller, latency), never part of the `--json` shape.
    event: VaultEvent | None = field(default=None, compare=False)
    finished: datetime | None = field(default=None, compare=False)
    # The changed resource when it is no vault (a role assignment, a lock, kvguard's own
    # deployment, …); for a vault's own change the record's `resource` is the vault.
    resource: str | None = None

    def to_json(self) -> dict[str, Any]:
        record = {
            "event_id": self.event_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "vault": self.vault,
            "resource": self.resource if self.resource is not None else self.vault,
            "risk": self.risk,
            "severity": self.severity,
            "findings": [f.to_json() for f in self.findings],
            "actions": [a.to_json() for a in self.actions],
        }
        return record

    def to_audit(self) -> dict[str, Any]:
        record = self.to_json()
        record["explanation"] = list(self.explanation)
        record["actions"] = [a.to_audit() for a in self.actions]
        record["resolutions"] = [a.to_audit() for a in self.resolutions]
        return record
