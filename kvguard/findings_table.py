"""The rows kvguard writes to the Log Analytics table `KvguardFindings_CL`: one per finding and one
per action of an outcome, so a Sentinel analyst can alert on a rule, join on the caller and measure
the time from a write to its revert without reading kvguard's audit.

Every row says what was changed (`ResourceId`) and which vaults that change reaches (`Vaults`); a
role assignment or lock at resource-group or subscription scope also names its `Scope`. `VaultId`
is filled only when exactly one vault is reached, so filtering on one vault never hides a change
that reaches several, and a row without a vault still says what it is about.

`COLUMNS` is the table's schema; the Bicep declares the same (infra/modules/findings-log.bicep,
checked by a test), and the workbook's queries name only these columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kvguard.actions import ActionResult
from kvguard.catalog import HANDLERS
from kvguard.detection import Finding
from kvguard.outcome import Outcome
from kvguard.telemetry import caller_fields, outcome_fields

TABLE = "KvguardFindings_CL"
STREAM = f"Custom-{TABLE}"

COLUMNS: Mapping[str, str] = {
    "TimeGenerated": "datetime",
    "EventId": "string",
    "EventTime": "datetime",
    "VaultId": "string",
    "ResourceId": "string",
    "Scope": "string",
    "Vaults": "dynamic",
    "Operation": "string",
    "Outcome": "string",
    "Risk": "int",
    "RiskSeverity": "string",
    "RecordType": "string",
    "Rule": "string",
    "Severity": "string",
    "Score": "int",
    "Title": "string",
    "Mitre": "string",
    "Handler": "string",
    "ActionKind": "string",
    "Status": "string",
    "Detail": "string",
    "CallerId": "string",
    "CallerUpn": "string",
    "CallerIp": "string",
    "LatencyToDecisionMs": "long",
    "LatencyToRevertMs": "long",
}


def rows(outcome: Outcome) -> list[dict[str, Any]]:
    """The table's rows for one outcome (none without findings or actions)."""
    fields = outcome_fields(outcome, with_caller=False)
    caller = caller_fields(outcome)
    stamp = outcome.finished.isoformat() if outcome.finished is not None else None
    common = {
        "TimeGenerated": stamp,
        "EventId": outcome.event_id,
        "EventTime": fields["event_time"],
        "ResourceId": outcome.resource if outcome.resource is not None else outcome.vault,
        "Operation": fields["operation"],
        "Outcome": outcome.outcome,
        "Risk": outcome.risk,
        "RiskSeverity": outcome.severity,
        "CallerId": caller["caller_id"],
        "CallerUpn": caller["caller_upn"],
        "CallerIp": caller["caller_ip"],
        "LatencyToDecisionMs": fields["latency_to_decision_ms"],
        "LatencyToRevertMs": fields["latency_to_revert_ms"],
    }
    table = [
        {**common, **_reach(outcome, [f]), "RecordType": "finding", "Rule": f.rule, "Severity": f.severity,
         "Score": f.score, "Title": f.title, "Mitre": ",".join(f.mitre)}
        for f in outcome.findings
    ]
    table += [
        {**common, **_reach(outcome, _acted_on(outcome, a)), "RecordType": "action", "Rule": ",".join(a.rules),
         "Handler": a.handler, "ActionKind": HANDLERS[a.handler].kind if a.handler in HANDLERS else None,
         "Status": a.status, "Detail": a.detail}
        for a in outcome.actions
    ]
    return [{name: row.get(name) for name in COLUMNS} for row in table]


def _acted_on(outcome: Outcome, action: ActionResult) -> list[Finding]:
    """The findings an action answers (all of the outcome's when it names none of them)."""
    named = [f for f in outcome.findings if f.rule in action.rules]
    return named or list(outcome.findings)


def _reach(outcome: Outcome, findings: Sequence[Finding]) -> dict[str, Any]:
    """`Vaults`, `VaultId` and `Scope` of a row: the vaults the findings' evidence lists (the
    outcome's vault when they list none), the one vault when there is exactly one, and the scope
    the evidence names (a role assignment's or lock's)."""
    vaults: list[str] = []
    for finding in findings:
        listed = finding.evidence.get("vaults")
        for vault in listed if isinstance(listed, list) else []:
            if isinstance(vault, str) and vault.lower() not in {v.lower() for v in vaults}:
                vaults.append(vault)
    if not vaults and outcome.vault is not None:
        vaults = [outcome.vault]
    scopes = [f.evidence["scope"] for f in findings if isinstance(f.evidence.get("scope"), str)]
    return {"Vaults": vaults, "VaultId": vaults[0] if len(vaults) == 1 else None,
            "Scope": scopes[0] if scopes else None}
