"""Handlers plan from the restore intents of their findings and from nothing else a rule says: on
every firing case of every remediated rule, the plan is the same with the evidence and titles
blanked, there is a plan exactly when the findings carry intents that are not refused (an intent
that says why its undo must not be written plans nothing: a baseline that must not be written back,
an assignment that is never re-created, an association its owner sets back), and none without them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kvguard.catalog import HANDLERS, RULES
from kvguard.detection import Case, Finding, Rule, detect_all
from remediation.base import Operation, PlanInput
from tests.cases import make_context

CASES = [(r, c) for r in RULES.values() if r.remediation is not None for c in r.cases if c.fires]


@pytest.mark.parametrize(("rule", "case"), CASES, ids=[f"{r.id}: {c.name}" for r, c in CASES])
def test_a_handler_plans_from_the_intents_alone(rule: Rule, case: Case) -> None:
    context = make_context(case)
    findings = detect_all(context, {rule.id: rule})
    handler = HANDLERS[str(rule.remediation)]

    def plan(found: list[Finding]) -> list[Operation]:
        return handler.plan(PlanInput(found, context.before, context.after, resource=context.resource))

    planned = plan(findings)
    assert bool(planned) == any(not getattr(i, "refused", "") for f in findings for i in f.restore)
    assert plan([replace(f, evidence={}, title="") for f in findings]) == planned
    assert plan([replace(f, restore=()) for f in findings]) == []
