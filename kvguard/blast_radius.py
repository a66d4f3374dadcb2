"""Blast radius: what a principal that was granted access did in the vault while it had it.

When a Log Analytics workspace with the vaults' `AuditEvent` logs is configured, each grant
finding (KV-AP-01 new principal, KV-AP-02 widened permissions, and KV-RBAC-01 where the catalog
has it) gets `evidence.blast_radius`: the data-plane operations that principal performed in the
vault between the grant (the event's `eventTime`) and kvguard's decision, which the revert follows
at once — per operation and object (`secrets/db-password`), with counts. The evidence flows with
the finding into the Defender assessment, the detection CloudEvent, the audit and the report.

Audit logs reach the workspace minutes after the fact, so an access in the last minutes before the
decision may not be counted yet; the evidence names its window. A failed query never holds an
alert back: the evidence then says the query failed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from kvguard.detection import Finding

GRANT_RULES = frozenset({"KV-AP-01", "KV-AP-02", "KV-RBAC-01"})
log = logging.getLogger("kvguard")


@dataclass(frozen=True)
class Operation:
    operation: str
    object: str
    count: int


class ActivityLog(Protocol):
    """The vault's audit log (Log Analytics `AuditEvent` in Azure)."""

    def activity(self, vault_id: str, principal_id: str, since: datetime, until: datetime) -> list[Operation]:
        """What `principal_id` did in the vault within [since, until], most frequent first."""
        ...


def granted_principal(finding: Finding) -> str | None:
    """The object id the grant finding is about."""
    if finding.rule not in GRANT_RULES:
        return None
    for key in ("objectId", "principalId", "principal"):
        value = finding.evidence.get(key)
        if isinstance(value, str) and value:
            return value.lower()
    return None


def evidence(operations: Sequence[Operation], since: datetime, until: datetime) -> dict[str, Any]:
    return {
        "from": since.isoformat(),
        "to": until.isoformat(),
        "operations": [{"operation": o.operation, "object": o.object, "count": o.count} for o in operations],
        "total": sum(o.count for o in operations),
        "source": "AuditEvent",
    }


def enrich(findings: Sequence[Finding], vault_id: str, since: datetime, until: datetime,
           activity_log: ActivityLog) -> list[Finding]:
    """The findings, each grant finding with its principal's activity in its evidence."""
    enriched = []
    for finding in findings:
        principal = granted_principal(finding)
        if principal is None:
            enriched.append(finding)
            continue
        try:
            radius = evidence(activity_log.activity(vault_id, principal, since, until), since, until)
        except Exception as error:  # the alert matters more than its enrichment: say so and go on
            log.warning("kvguard blast radius of %s on %s failed: %s", principal, vault_id, type(error).__name__)
            radius = {"from": since.isoformat(), "to": until.isoformat(),
                      "error": f"audit log query failed: {type(error).__name__}"}
        enriched.append(replace(finding, evidence={**finding.evidence, "blast_radius": radius}))
    return enriched


def summary(radius: Any) -> str | None:
    """One line for the Defender portal and the report: `12 operations: SecretGet secrets/db (9), …`."""
    if not isinstance(radius, dict):
        return None
    if "error" in radius:
        return str(radius["error"])
    parts = [f"{o['operation']} {o['object']} ({o['count']})".replace("  ", " ") for o in radius.get("operations", [])]
    head = f"{radius.get('total', 0)} operation(s) between {radius.get('from')} and {radius.get('to')}"
    return f"{head}: {', '.join(parts[:10])}" if parts else f"{head}: none recorded"
