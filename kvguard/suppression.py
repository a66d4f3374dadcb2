"""Policy `suppressions`: a rule held back on matching vaults until its expiry, for its reason.

A suppressed finding is not scored, alerted, remediated or opened; the outcome's reason names it
with the suppression's reason and expiry, so the audit shows what was held back and why. An
expired suppression suppresses nothing: a finding it would have matched is handled as usual and
the reason says the suppression expired, so nobody mistakes a forgotten exception for a live one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from kvguard.decision import vault_matches
from kvguard.detection import Finding
from kvguard.policy import Policy, Suppression


def suppress(
    findings: Sequence[Finding], vault_id: str, vault_name: str, policy: Policy, now: datetime
) -> tuple[list[Finding], list[str]]:
    """The findings that stand, and a note for every finding suppressed or matched only by an
    expired suppression."""
    if not policy.suppressions:
        return list(findings), []
    kept: list[Finding] = []
    notes: list[str] = []
    for finding in findings:
        matching = [s for s in policy.suppressions
                    if s.rule == finding.rule and vault_matches(s.vault, vault_id, vault_name)]
        active = [s for s in matching if not s.expired(now)]
        if active:
            latest = max(active, key=lambda s: s.until)
            notes.append(f"{finding.rule} suppressed until {latest.until.isoformat()}: {latest.reason}")
            continue
        kept.append(finding)
        notes += [f"suppression of {finding.rule} for {s.vault} expired {s.until.isoformat()}: ignored"
                  for s in matching]
    return kept, notes


def expired(policy: Policy, now: datetime) -> list[Suppression]:
    """The suppressions that no longer suppress anything (for `kvguard validate`)."""
    return [s for s in policy.suppressions if s.expired(now)]


def with_notes(reason: str, notes: Sequence[str]) -> str:
    return "; ".join([reason, *notes]) if notes else reason
