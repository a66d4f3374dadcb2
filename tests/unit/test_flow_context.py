"""The event context's derived views: what the steps read off it rather than pass around."""

from __future__ import annotations

import pytest

from detectors.cases import NOW, grant, vault, with_grants
from kvguard.decision import Decision
from kvguard.detection import Finding
from kvguard.flow.context import EventContext, FlowContext
from kvguard.vault import VaultConfig, diff
from tests.cases import make_event

BEFORE = VaultConfig.from_arm(vault())
AFTER = VaultConfig.from_arm(with_grants(grant("0b1c2d3e-4f50-4617-8829-3a4b5c6d7e8f")))


def finding(rule: str) -> Finding:
    return Finding(rule=rule, title=rule, severity="high", score=70, evidence={}, mitre=(), remediation=None)


def test_acting_before_deciding_is_a_fault_of_the_flow() -> None:
    context = FlowContext(event=make_event({}), now=NOW)
    with pytest.raises(RuntimeError, match="before deciding"):
        _ = context.decided
    context.decision = Decision("alert", True, "risk over threshold", False, "mode alert", False)
    assert context.decided is context.decision


def test_the_baseline_steers_and_the_vault_as_read_is_current() -> None:
    context = EventContext(event=make_event({}), now=NOW, before=BEFORE, after=AFTER)
    assert context.steering is BEFORE and context.current is AFTER
    first_sight = EventContext(event=make_event({}), now=NOW, after=AFTER)
    assert first_sight.steering is AFTER and first_sight.current is AFTER


def test_the_final_state_is_compared_only_when_the_compared_state_moved() -> None:
    unchanged = EventContext(event=make_event({}), now=NOW, before=BEFORE, after=BEFORE, change=diff(BEFORE, BEFORE),
                             final=BEFORE)
    assert unchanged.moved_to is None
    changed = EventContext(event=make_event({}), now=NOW, before=BEFORE, after=AFTER, change=diff(BEFORE, AFTER),
                           final=AFTER)
    assert changed.moved_to is AFTER
    unchanged.remediated = True
    assert unchanged.moved_to is BEFORE
    assert EventContext(event=make_event({}), now=NOW, after=AFTER, final=AFTER).moved_to is AFTER  # first sight


def test_a_joined_finding_is_not_listed_again() -> None:
    fresh, repeated = finding("KV-AP-01"), finding("KV-AP-02")
    context = EventContext(event=make_event({}), now=NOW, findings=[fresh, repeated], joined=[repeated])
    assert context.listed == [fresh]
