"""The reason a record gives: one sentence per outcome, saying what was found, the risk, and
what the decision allowed (the `reason` of `--json` output; other tools read it, so the wording
is part of the format)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kvguard.decision import Decision
from kvguard.detection import Finding
from kvguard.events import VaultEvent
from kvguard.resources import ResourceChange
from kvguard.risk import Risk
from kvguard.vault import VaultConfig

ALWAYS_FOR_OWN_DEPLOYMENT = "always, for a change to kvguard's own deployment"


def reason(
    event: VaultEvent,
    before: VaultConfig | None,
    after: VaultConfig | None,
    findings: Sequence[Finding],
    risk: Risk,
    decision: Decision,
    joined: Sequence[Finding] = (),
) -> str:
    if joined:
        rules = ", ".join(sorted({f.rule for f in joined}))
        note = f"joins the open finding(s) {rules}, alert not repeated"
        findings = [f for f in findings if f not in joined]
        if not findings:
            return f"another report of an alerted change: {note}; remediate: {decision.remediate_reason}"
        return f"{reason(event, before, after, findings, risk, decision)}; {note}"
    gone = ""
    if after is None and event.kind not in ("delete", "purge"):
        if before is None and not findings:
            return "vault not found and never seen: nothing to compare"
        gone = "vault not found (deleted since the event was sent): nothing to compare; "
        if not findings:
            return gone.removesuffix("; ")
    if not findings:
        if before is None and after is not None:
            return "first sight: baseline recorded, no finding"
        return "no finding: the change is within policy"
    return _judged(findings, risk, decision, prefix=gone)


def resource_reason(
    change: ResourceChange, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
    findings: Sequence[Finding], risk: Risk, decision: Decision,
) -> str:
    if not findings:
        if before is None and after is not None:
            return f"first sight of the {change.type}: baseline recorded, no finding"
        if after is None and before is None:
            return f"{change.type} not found and never seen: nothing to compare"
        return "no finding: the change is within policy"
    return _judged(findings, risk, decision)


def sweep_reason(opened: Sequence[Finding], closed: Sequence[str], risk: Risk, decision: Decision) -> str:
    parts = []
    if opened:
        parts.append(f"sweep: {len(opened)} finding(s); risk {risk.value}: " + ", ".join(risk.explanation))
        parts.append(f"mode {decision.mode}" + (" (dry run)" if decision.dry_run else ""))
        parts.append(f"alert: {decision.alert_reason}")
    if closed:
        parts.append("sweep: resolved " + ", ".join(closed))
    return "; ".join(parts)


def own_deployment_reason(event: VaultEvent, findings: Sequence[Finding], risk: Risk) -> str:
    if findings:
        return (f"{len(findings)} finding(s); risk {risk.value}: {', '.join(risk.explanation)}; "
                f"alert: {ALWAYS_FOR_OWN_DEPLOYMENT}")
    if not event.succeeded:
        return "no finding: the change to kvguard's own deployment failed"
    return "no finding: kvguard's own deployment changed by an approved caller"


def _judged(findings: Sequence[Finding], risk: Risk, decision: Decision, prefix: str = "") -> str:
    parts = [f"{prefix}{len(findings)} finding(s); risk {risk.value}: " + ", ".join(risk.explanation)]
    parts.append(f"mode {decision.mode}" + (" (dry run)" if decision.dry_run else ""))
    parts.append(f"alert: {decision.alert_reason}")
    parts.append(f"remediate: {decision.remediate_reason}")
    return "; ".join(parts)
