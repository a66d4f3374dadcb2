"""Every rule's own cases: each must fire (or stay silent) exactly as its table says, and where a
firing case states the restore intents its hits carry, carry exactly those."""

from __future__ import annotations

import pytest

from kvguard.catalog import RULES
from kvguard.detection import Case, Rule
from tests.cases import make_context

CASES = [(r, c) for r in RULES.values() for c in r.cases]


@pytest.mark.parametrize(("rule", "case"), CASES, ids=[f"{r.id}: {c.name}" for r, c in CASES])
def test_rule_case(rule: Rule, case: Case) -> None:
    hits = list(rule.detect(make_context(case)))
    if case.fires:
        assert hits, f"{rule.id} should fire on {case.name!r}"
        for hit in hits:
            assert hit.evidence, f"{rule.id} fired without evidence on {case.name!r}"
        if case.restore is not None:
            assert [intent for hit in hits for intent in hit.restore] == list(case.restore), case.name
    else:
        assert not hits, f"{rule.id} must not fire on {case.name!r}, fired with {[h.evidence for h in hits]}"
