"""Risk: the highest finding score plus bounded, named context points, every point explained.

`risk = min(100, max(finding.score) + context)`. Context never creates risk on its own: a change
with no finding has risk 0, whoever made it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kvguard.detection import Finding, severity_for_risk
from kvguard.events import VaultEvent
from kvguard.policy import Policy
from kvguard.vault import VaultConfig

CONTEXT_POINTS = {
    "critical_vault": 10,  # the vault is tagged criticality=high
    "unapproved_caller": 10,  # approved callers are configured and this caller is not one
    "foreign_caller": 10,  # the caller's tenant is not the vault's
}
MAX_CONTEXT = 20


@dataclass(frozen=True)
class Risk:
    value: int
    severity: str
    explanation: tuple[str, ...]


def assess(findings: Sequence[Finding], event: VaultEvent, vault: VaultConfig | None, policy: Policy) -> Risk:
    if not findings:
        return Risk(0, "none", ())
    top = max(findings, key=lambda f: f.score)
    lines = [f"{top.rule} scores {top.score} ({top.severity})"]
    points = 0
    for name, reason in _context(event, vault, policy):
        add = min(CONTEXT_POINTS[name], MAX_CONTEXT - points)
        if add <= 0:
            break
        points += add
        lines.append(f"+{add} {reason}")
    value = min(100, top.score + points)
    return Risk(value, severity_for_risk(value), tuple(lines))


def _context(event: VaultEvent, vault: VaultConfig | None, policy: Policy) -> list[tuple[str, str]]:
    reasons: list[tuple[str, str]] = []
    if vault is not None and (vault.tag("criticality") or "").lower() == "high":
        reasons.append(("critical_vault", "vault tagged criticality=high"))
    if policy.approved_callers and event.caller.ids() and not event.caller.ids() & set(policy.approved_callers):
        reasons.append(("unapproved_caller", f"caller {event.caller.describe()} is not an approved caller"))
    vault_tenant = vault.tenant_id if vault is not None else event.tenant_id
    if event.caller.tenant_id and vault_tenant and event.caller.tenant_id != vault_tenant:
        reasons.append(("foreign_caller", f"caller's tenant {event.caller.tenant_id} is not the vault's"))
    return reasons
