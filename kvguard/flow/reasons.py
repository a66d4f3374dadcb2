"""The reason a record gives: one sentence per outcome, saying what was found, the risk, and
what the decision allowed (the `reason` of `--json` output; other tools read it, so the wording
is part of the format)."""

from __future__ import annotations

from collections.abc import Sequence

from kvguard.decision import Decision
from kvguard.detection import Finding
from kvguard.flow.context import EventContext, ResourceContext
from kvguard.risk import Risk

ALWAYS_FOR_OWN_DEPLOYMENT = "always, for a change to kvguard's own deployment"


def reason(context: EventContext) -> str:
    """A vault event's reason; a joined report (another report of an alerted change) says so."""
    joined = context.joined
    if not joined:
        return _vault_reason(context, context.findings)
    rules = ", ".join(sorted({f.rule for f in joined}))
    note = f"joins the open finding(s) {rules}, alert not repeated"
    listed = context.listed
    if not listed:
        return f"another report of an alerted change: {note}; remediate: {context.decided.remediate_reason}"
    return f"{_vault_reason(context, listed)}; {note}"


def _vault_reason(context: EventContext, findings: Sequence[Finding]) -> str:
    before, after = context.before, context.after
    gone = ""
    if after is None and context.event.kind not in ("delete", "purge"):
        if before is None and not findings:
            return "vault not found and never seen: nothing to compare"
        gone = "vault not found (deleted since the event was sent): nothing to compare; "
        if not findings:
            return gone.removesuffix("; ")
    if not findings:
        if before is None and after is not None:
            return "first sight: baseline recorded, no finding"
        return "no finding: the change is within policy"
    return _judged(findings, context.risk, context.decided, prefix=gone)


def resource_reason(context: ResourceContext) -> str:
    change, before, after = context.change, context.state.before, context.state.after
    if not context.findings:
        if before is None and after is not None:
            return f"first sight of the {change.type}: baseline recorded, no finding"
        if after is None and before is None:
            return f"{change.type} not found and never seen: nothing to compare"
        return "no finding: the change is within policy"
    return _judged(context.findings, context.risk, context.decided)


def sweep_reason(opened: Sequence[Finding], closed: Sequence[str], risk: Risk, decision: Decision) -> str:
    parts = []
    if opened:
        parts.append(f"sweep: {len(opened)} finding(s); risk {risk.value}: " + ", ".join(risk.explanation))
        parts.append(f"mode {decision.mode}" + (" (dry run)" if decision.dry_run else ""))
        parts.append(f"alert: {decision.alert_reason}")
    if closed:
        parts.append("sweep: resolved " + ", ".join(closed))
    return "; ".join(parts)


def own_deployment_reason(context: EventContext) -> str:
    event, findings, risk = context.event, context.findings, context.risk
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
