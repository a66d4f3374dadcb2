"""Decide: what the policy allows for one assessed change. Pure: every input is passed in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatch

from kvguard.detection import RULES, Finding
from kvguard.events import VaultEvent
from kvguard.ids import vault_key
from kvguard.policy import Mode, Policy
from kvguard.vault import VaultConfig

MODE_TAG = "kvguard-mode"


@dataclass(frozen=True)
class Decision:
    mode: Mode
    alert: bool
    alert_reason: str
    remediate: bool
    remediate_reason: str
    dry_run: bool


def effective_mode(policy: Policy, vault: VaultConfig | None) -> Mode:
    """The policy's mode, unless the vault's `kvguard-mode` tag names another valid one."""
    tagged = (vault.tag(MODE_TAG) or "").strip().lower() if vault is not None else ""
    if tagged in ("observe", "alert", "remediate"):
        return tagged  # type: ignore[return-value]
    return policy.mode


def is_excluded(policy: Policy, vault_id: str, vault_name: str) -> bool:
    """Excluded by resource id (case-insensitive) or by a glob on the vault name or id."""
    key, name = vault_key(vault_id), vault_name.lower()
    for pattern in policy.excluded_vaults:
        lowered = vault_key(pattern)
        if lowered == key or fnmatch(name, lowered) or fnmatch(key, lowered):
            return True
    return False


def is_approved(policy: Policy, event: VaultEvent) -> bool:
    return bool(set(policy.approved_callers) & event.caller.ids())


def remediable(findings: Sequence[Finding], policy: Policy) -> list[Finding]:
    """Findings whose rule has a handler and whose remediation the policy allows."""
    allowed = []
    for finding in findings:
        rule = RULES.get(finding.rule)
        if rule is None or finding.remediation is None:
            continue
        override = policy.rule(finding.rule).remediate
        if override if override is not None else rule.remediate_by_default:
            allowed.append(finding)
    return allowed


def decide(
    *,
    policy: Policy,
    event: VaultEvent,
    vault: VaultConfig | None,
    vault_id: str,
    vault_name: str,
    findings: Sequence[Finding],
    risk: int,
    recent_remediations: int,
) -> Decision:
    mode = effective_mode(policy, vault)
    tripped = recent_remediations >= policy.circuit_breaker.max_remediations
    if not findings:
        return Decision(mode, False, "no finding", False, "no finding", policy.dry_run)
    if mode == "observe":
        alert, alert_reason = False, "observe mode records only"
    elif risk >= policy.alert_threshold:
        alert, alert_reason = True, f"risk {risk} >= alert_threshold {policy.alert_threshold}"
    else:
        alert, alert_reason = False, f"risk {risk} below alert_threshold {policy.alert_threshold}"
    if mode != "remediate":
        return Decision(mode, alert, alert_reason, False, f"{mode} mode does not remediate", policy.dry_run)
    if risk < policy.remediate_threshold:
        reason = f"risk {risk} below remediate_threshold {policy.remediate_threshold}"
        return Decision(mode, alert, alert_reason, False, reason, policy.dry_run)
    if is_approved(policy, event):
        return Decision(mode, alert, alert_reason, False, "approved caller: change accepted", policy.dry_run)
    if is_excluded(policy, vault_id, vault_name):
        return Decision(mode, alert, alert_reason, False, "vault excluded by policy", policy.dry_run)
    if tripped:
        reason = (
            f"circuit breaker: {recent_remediations} remediations of this vault within "
            f"{policy.circuit_breaker.window}; something is fighting kvguard, alerting instead"
        )
        return Decision(mode, True, alert_reason, False, reason, policy.dry_run)
    return Decision(mode, alert, alert_reason, True,
                    f"risk {risk} >= remediate_threshold {policy.remediate_threshold}", policy.dry_run)
