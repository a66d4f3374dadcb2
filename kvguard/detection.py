"""The detector contract: what a rule sees (`Context`), what it returns (`Hit`), what it becomes
(`Finding`), what kind of judgement it makes (`Kind`, and with it when its findings close), and the
`rule` decorator that declares one. A hit also carries what would undo it (`kvguard.intents`).

A rule is a small pure function of the context. Its metadata (id, title, severity, MITRE ids,
remediation handler, rationale) and its named test cases sit beside it in its family module, so
one file tells everything about a rule. The decorator only declares: `kvguard.catalog` registers
the declared rules in one order. `detect_all` is the only loop over the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID, uuid5

from kvguard.intents import RestoreIntent
from kvguard.vault import VaultConfig, VaultDiff, diff

if TYPE_CHECKING:
    from kvguard.events import VaultEvent
    from kvguard.policy import Policy, Severity
    from kvguard.resources import ResourceState, Sweep

# The kinds as the catalog writes them (`kvguard rules`, the README, infra/rules.json).
KindLabel = Literal[
    "diff", "posture", "diff/posture", "event", "event/diff", "event + history", "diff + history", "sweep"
]


class Basis(Enum):
    """What a rule judges."""

    DIFF = "diff"  # a change against the accepted baseline (no baseline: nothing to judge)
    POSTURE = "posture"  # the vault as it is now, once when the condition appears
    EVENT = "event"  # the envelope: who did what, when, from where
    SWEEP = "sweep"  # reads beyond the changed resource, judged by a sweep over the world


class Closing(Enum):
    """When an open finding stops being true, and so closes (and the alert sinks are told). The
    one statement of each kind's closing rule: `Kind.closing` picks one, `Rule.closes` applies it."""

    LATEST_CHANGE = "when the next change to a vault that still exists no longer fires it"
    CONDITION_GONE = "when its condition is gone from the vault's final state"
    BACK_TO_BASELINE = "when the vault is back to the baseline it was found against"
    # A history rule over changes (KV-AP-05: a grant added and removed again) reports an act that
    # is over when it fires: the vault is already back, so no later state can undo what was done.
    # The finding stands until a person has looked; only a remediation could close it.
    STAYS_OPEN = "never by itself: it records an act that was over when it was found"


@dataclass(frozen=True)
class Kind:
    """A rule's kind: what it judges, whether it also reads the remembered history, and its label."""

    basis: Basis
    history: bool
    label: KindLabel

    @property
    def closing(self) -> Closing:
        if self.basis is Basis.EVENT:
            return Closing.LATEST_CHANGE
        if self.basis in (Basis.POSTURE, Basis.SWEEP):
            return Closing.CONDITION_GONE
        return Closing.STAYS_OPEN if self.history else Closing.BACK_TO_BASELINE


KINDS: dict[str, Kind] = {kind.label: kind for kind in (
    Kind(Basis.DIFF, history=False, label="diff"),
    Kind(Basis.POSTURE, history=False, label="posture"),
    # a posture rule whose condition is a setting's value: it fires when a change sets it, too
    Kind(Basis.POSTURE, history=False, label="diff/posture"),
    Kind(Basis.EVENT, history=False, label="event"),
    # an event rule that also compares with the baseline (a vault recovered after its deletion)
    Kind(Basis.EVENT, history=False, label="event/diff"),
    Kind(Basis.EVENT, history=True, label="event + history"),
    Kind(Basis.DIFF, history=True, label="diff + history"),
    Kind(Basis.SWEEP, history=False, label="sweep"),
)}

# A finding's score by severity: the middle of the risk bands (README, "Rule catalog"), so that context points can
# lift a finding into the next band but never two.
SEVERITY_SCORE: dict[str, int] = {"low": 20, "medium": 50, "high": 75, "critical": 95}


def severity_for_risk(risk: int) -> str:
    """The README's bands: >= 90 critical, >= 70 high, >= 40 medium, > 0 low."""
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
    `after` the current configuration (None: the vault is gone). For a change to another resource
    (a role assignment, a lock, …) `before`/`after` are None and `resource` holds that resource's
    baseline and current JSON and the vaults it covers. A sweep rule sees `sweep`: one vault and
    what was read around it (None outside a sweep)."""

    event: VaultEvent
    before: VaultConfig | None
    after: VaultConfig | None
    diff: VaultDiff | None
    policy: Policy
    history: History
    now: datetime
    baseline_deleted: bool = False
    resource: ResourceState | None = None
    sweep: Sweep | None = None


@dataclass(frozen=True)
class Hit:
    """One reason a rule fired: the exact values that triggered it, an optional escalation, and
    what would undo it (`restore`, for the rule's remediation handler; empty when there is nothing
    to go back to, as on first sight of a vault)."""

    evidence: Mapping[str, Any]
    severity: Severity | None = None
    detail: str | None = None
    restore: tuple[RestoreIntent, ...] = ()


@dataclass(frozen=True)
class Finding:
    """A hit with its rule's metadata. `restore` is the hit's, for the handler named by
    `remediation`; it is not part of the output (`to_json`)."""

    rule: str
    title: str
    severity: Severity
    score: int
    evidence: Mapping[str, Any]
    mitre: tuple[str, ...]
    remediation: str | None
    restore: tuple[RestoreIntent, ...] = ()

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

    `before`/`after` are ARM GET bodies (None: no baseline / vault gone) of the vault or, when
    their `type` says another resource, of that resource (over the default vault); `event`
    overrides fields of the default event (see `make_event` in tests/cases.py); `policy` and
    `history` likewise. `sweep`, for a sweep rule, lists the resources the sweep read around the
    default vault (None: not a sweep). `restore`, for a firing case, is the restore intents its
    hits carry, in order (None: not stated).
    """

    name: str
    fires: bool
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    event: Mapping[str, Any] = field(default_factory=dict)
    policy: Mapping[str, Any] = field(default_factory=dict)
    history: Mapping[str, Any] = field(default_factory=dict)
    baseline_deleted: bool = False
    # A change to a resource beside the vaults (see `make_resource_state` in tests/cases.py): its
    # id, type, action, before/after JSON, the covered vaults' JSON and a custom role's definition.
    resource: Mapping[str, Any] | None = None
    sweep: tuple[Mapping[str, Any], ...] | None = None
    restore: tuple[RestoreIntent, ...] | None = None


Detect = Callable[[Context], Iterable[Hit]]
# A rule's cases, built when asked for: the builders they use are test vocabulary, never loaded to
# handle an event.
Cases = Callable[[], Iterable[Case]]


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    severity: Severity
    mitre: tuple[str, ...]
    kind: Kind
    remediation: str | None
    rationale: str
    detect: Detect
    case_source: Cases
    module: str
    remediate_by_default: bool = True

    @property
    def cases(self) -> tuple[Case, ...]:
        return tuple(self.case_source())

    def fires(
        self, *, event: VaultEvent, before: VaultConfig | None, after: VaultConfig, policy: Policy, now: datetime
    ) -> bool:
        """Whether this rule fires between two configurations (before None: as on first sight)."""
        context = Context(event=event, before=before, after=after, diff=diff(before, after) if before else None,
                          policy=policy, history=History(), now=now)
        return bool(list(self.detect(context)))

    def closes(
        self, *, event: VaultEvent, final: VaultConfig | None, found_against: VaultConfig | None, policy: Policy,
        now: datetime,
    ) -> bool:
        """Whether an open finding of this rule has stopped being true, by its kind's `Closing`.
        `final` is None when the vault is gone or its compared state did not move; `found_against`
        is the baseline a diff finding was found against (None when it was not kept)."""
        closing = self.kind.closing
        if closing is Closing.LATEST_CHANGE:
            return event.kind not in ("delete", "purge")
        if final is None or closing is Closing.STAYS_OPEN:
            return False
        if closing is Closing.CONDITION_GONE:
            return not self.fires(event=event, before=None, after=final, policy=policy, now=now)
        return found_against is not None and not self.fires(
            event=event, before=found_against, after=final, policy=policy, now=now
        )

    def catalog_entry(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "severity": self.severity,
            "score": SEVERITY_SCORE[self.severity],
            "mitre": list(self.mitre),
            "kind": self.kind.label,
            "remediation": self.remediation,
            "rationale": self.rationale,
            "assessment": assessment_name(self.id),
        }


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
    kind: KindLabel,
    remediation: str | None = None,
    remediate_by_default: bool = True,
    cases: Cases | Iterable[Case] = (),
) -> Callable[[Detect], Rule]:
    """Declare a detector (the catalog registers it). The function's docstring is the rule's
    rationale; `cases` is best a function returning them, so they are built only when asked for."""

    def declare(fn: Detect) -> Rule:
        source: Cases = cases if callable(cases) else _fixed(tuple(cases))
        return Rule(
            id=id,
            title=title,
            severity=severity,
            mitre=mitre,
            kind=KINDS[kind],
            remediation=remediation,
            rationale=" ".join((fn.__doc__ or "").split()),
            detect=fn,
            case_source=source,
            module=fn.__module__,
            remediate_by_default=remediate_by_default,
        )

    return declare


def _fixed(cases: tuple[Case, ...]) -> Cases:
    return lambda: cases


Condition = Callable[[VaultConfig, "Policy"], Mapping[str, Mapping[str, Any]]]


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


def detect_all(ctx: Context, rules: Mapping[str, Rule]) -> list[Finding]:
    """Run every enabled rule of the catalog; a rule's policy override sets its severity."""
    findings: list[Finding] = []
    for current in rules.values():
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
                    restore=hit.restore,
                )
            )
    return findings
