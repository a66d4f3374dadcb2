"""What kvguard writes ahead of acting, as plain JSON: the intent of a remediation (its plan, the
findings it answers and the alerts already sent for them) and undelivered alerts in the outbox.

A retry of the event reads these back after a crash or a lost answer between the write and its
record, so the JSON must carry everything needed to rebuild the operations and the outcome: a
finding keeps its restore intents (`kvguard.intents`), which its handler plans from again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kvguard import intents
from kvguard.actions import ActionResult
from kvguard.detection import Finding
from kvguard.ports import Alert
from kvguard.vault import AccessPolicy
from remediation.base import Operation


def intent(event_id: str, findings: Sequence[Finding], operations: Sequence[Operation],
           alerts: Sequence[ActionResult], attempt: str | None = None) -> dict[str, Any]:
    """What an attempt intends before it writes. `attempt` (the claim's owner token) is what the
    attempt's audit record names too: an intent is recorded exactly when a record of its event
    and attempt exists, however many records the event has."""
    return {
        "event_id": event_id,
        "attempt": attempt,
        "findings": [_finding_json(f) for f in findings],
        "operations": [_operation_json(op) for op in operations],
        "alerts": [a.to_audit() for a in alerts],
    }


def attempt_of(recorded: Mapping[str, Any]) -> str | None:
    """The attempt that wrote an intent (None: written before intents named theirs)."""
    attempt = recorded.get("attempt")
    return str(attempt) if attempt is not None else None


def findings_of(recorded: Mapping[str, Any]) -> list[Finding]:
    """The findings of a recorded intent. One written before findings kept their restore intents
    (still pending across an upgrade) gives findings without them: their handlers then plan
    nothing for them, as the retry confirms what landed and judges the vault afresh."""
    return [
        Finding(rule=f["rule"], title=f["title"], severity=f["severity"], score=int(f["score"]),
                evidence=f["evidence"], mitre=tuple(f["mitre"]), remediation=f["remediation"],
                restore=tuple(intents.from_json(i) for i in f.get("restore", ())))
        for f in recorded["findings"]
    ]


def operations_of(recorded: Mapping[str, Any]) -> list[Operation]:
    return [
        Operation(handler=op["handler"], kind=op["kind"], vault_id=op["vault_id"], description=op["description"],
                  target=AccessPolicy.from_arm(op["target"]) if op["kind"] == "remove_access_policy"
                  else dict(op["target"]),
                  before=op["before"], rules=tuple(op["rules"]))
        for op in recorded["operations"]
    ]


def finding_key(finding: Finding) -> tuple[str, str]:
    """A finding as comparable across attempts: its rule and its evidence as JSON text (the same
    once it went through an intent)."""
    return finding.rule, json.dumps(dict(finding.evidence), sort_keys=True, default=str)


def alert_results_of(recorded: Mapping[str, Any]) -> list[ActionResult]:
    return [
        ActionResult(a["handler"], a["status"], a["detail"], tuple(a["rules"]), a["before"], a["after"])
        for a in recorded["alerts"]
    ]


def alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "vault_id": alert.vault_id, "rule": alert.rule, "title": alert.title, "severity": alert.severity,
        "score": alert.score, "risk": alert.risk, "evidence": dict(alert.evidence), "mitre": list(alert.mitre),
        "event_id": alert.event_id, "caller": alert.caller, "time": alert.time.isoformat(),
        "explanation": list(alert.explanation), "revert": alert.revert,
    }


def alert_of(recorded: Mapping[str, Any]) -> Alert:
    return Alert(
        vault_id=recorded["vault_id"], rule=recorded["rule"], title=recorded["title"],
        severity=recorded["severity"], score=int(recorded["score"]), risk=int(recorded["risk"]),
        evidence=recorded["evidence"], mitre=tuple(recorded["mitre"]), event_id=recorded["event_id"],
        caller=recorded["caller"], time=datetime.fromisoformat(recorded["time"]),
        explanation=tuple(recorded["explanation"]), revert=recorded.get("revert"),
    )


def _finding_json(finding: Finding) -> dict[str, Any]:
    return {**finding.to_json(), "mitre": list(finding.mitre), "remediation": finding.remediation,
            "restore": [intents.to_json(i) for i in finding.restore]}


def _operation_json(op: Operation) -> dict[str, Any]:
    if isinstance(op.target, AccessPolicy):
        target: Any = op.target.to_arm()
    elif isinstance(op.target, Mapping):
        target = dict(op.target)
    else:
        raise ValueError(f"operation {op.kind} of {op.handler} is not a vault write: nothing to record ahead")
    before = op.before.to_arm() if isinstance(op.before, AccessPolicy) else op.before
    return {"handler": op.handler, "kind": op.kind, "vault_id": op.vault_id, "description": op.description,
            "target": target, "before": before, "rules": list(op.rules)}
