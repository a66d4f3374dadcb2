"""The rows kvguard writes to the Log Analytics table `KvguardFindings_CL`: one per finding and one
per action of an outcome, so a Sentinel analyst can alert on a rule, join on the caller and measure
the time from a write to its revert without reading kvguard's audit.

`COLUMNS` is the table's schema; the Bicep declares the same (infra/findings-table.json, checked by
a test), and the workbook's queries name only these columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvguard.catalog import HANDLERS
from kvguard.outcome import Outcome
from kvguard.telemetry import caller_fields, outcome_fields

TABLE = "KvguardFindings_CL"
STREAM = f"Custom-{TABLE}"

COLUMNS: Mapping[str, str] = {
    "TimeGenerated": "datetime",
    "EventId": "string",
    "EventTime": "datetime",
    "VaultId": "string",
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
        "VaultId": outcome.vault,
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
        {**common, "RecordType": "finding", "Rule": f.rule, "Severity": f.severity, "Score": f.score,
         "Title": f.title, "Mitre": ",".join(f.mitre)}
        for f in outcome.findings
    ]
    table += [
        {**common, "RecordType": "action", "Rule": ",".join(a.rules), "Handler": a.handler,
         "ActionKind": HANDLERS[a.handler].kind if a.handler in HANDLERS else None, "Status": a.status,
         "Detail": a.detail}
        for a in outcome.actions
    ]
    return [{name: row.get(name) for name in COLUMNS} for row in table]
