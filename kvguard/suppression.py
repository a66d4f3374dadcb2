"""Policy `suppressions`: a rule held back on matching vaults until its expiry, for its reason —
on a vault's findings and on those of a resource beside the vaults (a role assignment over them).

A suppressed finding is not scored, alerted, remediated or opened; the outcome's reason names it
with the suppression's reason and expiry, so the audit shows what was held back and why. An
expired suppression suppresses nothing: a finding it would have matched is handled as usual and
the reason says the suppression expired, so nobody mistakes a forgotten exception for a live one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from kvguard.decision import vault_matches
from kvguard.detection import Finding
from kvguard.ids import vault_key
from kvguard.policy import Policy, Suppression
from kvguard.vault import VaultConfig


def suppress(
    findings: Sequence[Finding], vault_id: str, vault_name: str, policy: Policy, now: datetime
) -> tuple[list[Finding], list[str]]:
    """The findings that stand, and a note for every finding suppressed or matched only by an
    expired suppression."""
    return _held_back(findings, lambda _finding: [(vault_id, vault_name)], policy, now)


def suppress_covering(
    findings: Sequence[Finding], vaults: Sequence[VaultConfig], policy: Policy, now: datetime
) -> tuple[list[Finding], list[str]]:
    """As `suppress`, for the findings of a resource beside the vaults (a role assignment, a lock):
    a suppression holds one back when it matches every vault the finding covers (those its
    evidence lists, else all of `vaults`), so a suppression for one vault never hides an
    assignment that also reaches others."""
    def covered(finding: Finding) -> list[tuple[str, str]]:
        listed = finding.evidence.get("vaults")
        keys = {vault_key(v) for v in listed if isinstance(v, str)} if isinstance(listed, (list, tuple)) else None
        return [(v.id, v.name) for v in vaults if not keys or v.key in keys]

    return _held_back(findings, covered, policy, now)


def _held_back(
    findings: Sequence[Finding], covered: Callable[[Finding], list[tuple[str, str]]], policy: Policy, now: datetime
) -> tuple[list[Finding], list[str]]:
    if not policy.suppressions:
        return list(findings), []
    kept: list[Finding] = []
    notes: list[str] = []
    for finding in findings:
        vaults = covered(finding)
        matching = [s for s in policy.suppressions
                    if s.rule == finding.rule and vaults
                    and all(vault_matches(s.vault, vault_id, name) for vault_id, name in vaults)]
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
