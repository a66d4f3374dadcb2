"""The detector contract: what a rule sees (`Context`), what it returns (`Hit`), what it becomes
(`Finding`), and the registry that every rule joins by decoration.

A rule is a small pure function of the context. Its metadata (id, title, severity, MITRE ids,
remediation handler, rationale) and its named test cases sit beside it in its family module, so
one file tells everything about a rule. `detect_all` is the only loop over the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID, uuid5

from kvguard.events import VaultEvent
from kvguard.policy import Policy, Severity
from kvguard.vault import VaultConfig, VaultDiff

RuleKind = Literal["diff", "posture", "diff/posture", "event", "event/diff", "event + history", "diff + history"]

# A finding's score by severity: the middle of DESIGN.md's risk bands, so that context points can
# lift a finding into the next band but never two.
SEVERITY_SCORE: dict[str, int] = {"low": 20, "medium": 50, "high": 75, "critical": 95}


def severity_for_risk(risk: int) -> str:
    """DESIGN.md's bands: >= 90 critical, >= 70 high, >= 40 medium, > 0 low."""
    if risk >= 90:
        return "critical"
    if risk >= 70:
        return "high"
    if risk >= 40:
        return "medium"
    return "low" if risk > 0 else "none"


@dataclass(frozen=True)
class History:
    """What the state store remembers that event and history rules need, read before detection."""

    caller_seen_before: bool = True
    caller_vaults: int = 0
    caller_failures: int = 0
    recent_grants: Mapping[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """Everything a rule may look at. `before` is the accepted baseline (None: first sight),
    `after` the current configuration (None: the vault is gone)."""

    event: VaultEvent
    before: VaultConfig | None
    after: VaultConfig | None
    diff: VaultDiff | None
    policy: Policy
    history: History
    now: datetime
    baseline_deleted: bool = False


@dataclass(frozen=True)
class Hit:
    """One reason a rule fired: the exact values that triggered it, and an optional escalation."""

    evidence: Mapping[str, Any]
    severity: Severity | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Finding:
    rule: str
    title: str
    severity: Severity
    score: int
    evidence: Mapping[str, Any]
    mitre: tuple[str, ...]
    remediation: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "score": self.score,
            "title": self.title,
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True)
class Case:
    """A named example of a rule's input: `fires` says whether the rule must fire on it.

    `before`/`after` are ARM GET bodies (None: no baseline / vault gone); `event` overrides fields
    of the default event (see `detectors.cases.event`); `policy` and `history` likewise.
    """

    name: str
    fires: bool
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    event: Mapping[str, Any] = field(default_factory=dict)
    policy: Mapping[str, Any] = field(default_factory=dict)
    history: Mapping[str, Any] = field(default_factory=dict)
    baseline_deleted: bool = False


Detect = Callable[[Context], Iterable[Hit]]


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    severity: Severity
    mitre: tuple[str, ...]
    kind: RuleKind
    remediation: str | None
    rationale: str
    detect: Detect
    cases: tuple[Case, ...]
    remediate_by_default: bool = True

    def catalog_entry(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "severity": self.severity,
            "score": SEVERITY_SCORE[self.severity],
            "mitre": list(self.mitre),
            "kind": self.kind,
            "remediation": self.remediation,
            "rationale": self.rationale,
            "assessment": assessment_name(self.id),
        }


RULES: dict[str, Rule] = {}

# Defender assessment names are GUIDs derived from the rule id, so the metadata that the infra
# creates and the assessments that the app writes always meet. Never change this namespace.
ASSESSMENT_NAMESPACE = UUID("5b0a3c4e-8f21-4d6a-9c37-2e1f0b7d9a64")


def assessment_name(rule_id: str) -> str:
    return str(uuid5(ASSESSMENT_NAMESPACE, rule_id))


def rule(
    id: str,
    *,
    title: str,
    severity: Severity,
    mitre: tuple[str, ...],
    kind: RuleKind,
    remediation: str | None = None,
    remediate_by_default: bool = True,
    cases: Iterable[Case] = (),
) -> Callable[[Detect], Detect]:
    """Register a detector. The function's docstring is the rule's rationale."""

    def register(fn: Detect) -> Detect:
        if id in RULES:
            raise ValueError(f"rule {id} registered twice")
        RULES[id] = Rule(
            id=id,
            title=title,
            severity=severity,
            mitre=mitre,
            kind=kind,
            remediation=remediation,
            rationale=" ".join((fn.__doc__ or "").split()),
            detect=fn,
            cases=tuple(cases),
            remediate_by_default=remediate_by_default,
        )
        return fn

    return register


Condition = Callable[[VaultConfig, Policy], Mapping[str, Mapping[str, Any]]]


def newly_true(ctx: Context, condition: Condition) -> Iterable[Hit]:
    """The posture pattern: fire for each instance of a condition that holds now and did not hold
    in the baseline (all of them on first sight), so a persisting condition fires only once."""
    if ctx.after is None:
        return []
    now = _judged(condition, ctx.after, ctx.policy)
    was = _judged(condition, ctx.before, ctx.policy) if ctx.before is not None else {}
    return [Hit(evidence=evidence) for key, evidence in now.items() if key not in was]


def _judged(condition: Condition, vault: VaultConfig, policy: Policy) -> Mapping[str, Mapping[str, Any]]:
    """A posture condition's answer for a configuration, computed once per configuration and policy."""
    key = (condition, id(policy))
    remembered = vault.memo.get(key)
    if remembered is not None and remembered[0] is policy:
        return remembered[1]
    answer = condition(vault, policy)
    vault.memo[key] = (policy, answer)
    return answer


def detect_all(ctx: Context, rules: Mapping[str, Rule] | None = None) -> list[Finding]:
    """Run every enabled rule; a rule's policy override sets its severity."""
    findings: list[Finding] = []
    for current in (rules if rules is not None else RULES).values():
        override = ctx.policy.rule(current.id)
        if not override.enabled:
            continue
        for hit in current.detect(ctx):
            severity: Severity = override.severity or hit.severity or current.severity
            findings.append(
                Finding(
                    rule=current.id,
                    title=f"{current.title}: {hit.detail}" if hit.detail else current.title,
                    severity=severity,
                    score=SEVERITY_SCORE[severity],
                    evidence=hit.evidence,
                    mitre=current.mitre,
                    remediation=current.remediation,
                )
            )
    return findings
