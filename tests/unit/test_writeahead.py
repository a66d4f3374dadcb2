"""A finding written ahead comes back with its restore intents: a retry after a crash plans from
the same intents the first attempt had, whichever handler they are for."""

from __future__ import annotations

from pathlib import Path

from detectors.cases import NOW
from kvguard import writeahead
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.catalog import RULES
from kvguard.detection import Finding, detect_all
from kvguard.intents import INTENT_TYPES
from tests.cases import make_context


def _remediated_findings() -> list[Finding]:
    """The findings of every firing case of every rule with a handler."""
    found: list[Finding] = []
    for rule in (r for r in RULES.values() if r.remediation is not None):
        for case in (c for c in rule.cases if c.fires):
            found.extend(detect_all(make_context(case), {rule.id: rule}))
    return found


def test_findings_keep_their_restore_intents_through_the_state_store(tmp_path: Path) -> None:
    findings = _remediated_findings()
    assert {type(i) for f in findings for i in f.restore} == set(INTENT_TYPES)  # every type is exercised
    store = SQLiteStateStore(tmp_path / "state.db")
    try:
        store.begin_action("vault", "revert_access_policy", writeahead.intent("evt-1", findings, [], []), NOW)
        [pending] = store.pending_actions("vault")
        assert writeahead.findings_of(pending.intent) == findings
    finally:
        store.close()


def test_a_finding_recorded_without_restore_intents_reads_back_without_them() -> None:
    # what an attempt recorded before findings kept their intents: read, not refused
    finding = next(f for f in _remediated_findings() if f.rule == "KV-NET-03")
    recorded = writeahead.intent("evt-1", [finding], [], [])
    del recorded["findings"][0]["restore"]
    [read] = writeahead.findings_of(recorded)
    assert read.restore == () and read.evidence == finding.evidence
