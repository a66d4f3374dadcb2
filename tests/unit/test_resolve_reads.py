"""Which open findings' records the pipeline reads when it judges whether they still hold: a
record is decoded when first read (the SQLite and Tables stores keep it as text until then), and
only a diff finding's record holds what its closing needs (the baseline it was found against)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from detectors.cases import INTRUDER, VAULT_ID, grant, vault, with_grants
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.catalog import RULES
from kvguard.detection import Closing
from kvguard.pipeline import Pipeline
from kvguard.policy import Policy
from kvguard.ports import MarkQuery, OpenFinding, VaultState
from kvguard.sim import SIM_IDENTITY, SimClock, SimDefender, SimTopic, SimVaultGateway, World
from tests.unit.test_pipeline import START, VAULT_WRITE, event


class _Noted(Mapping[str, Any]):
    """A stored record that notes the rule whose record was read."""

    def __init__(self, record: Mapping[str, Any], rule: str, read: list[str]) -> None:
        self._record, self._rule, self._read = record, rule, read

    def __getitem__(self, key: str) -> Any:
        self._read.append(self._rule)
        return self._record[key]

    def __iter__(self) -> Iterator[str]:
        self._read.append(self._rule)
        return iter(self._record)

    def __len__(self) -> int:
        self._read.append(self._rule)
        return len(self._record)


class NotingStore(SQLiteStateStore):
    """The SQLite store, its open findings' records noting when they are read."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.read: list[str] = []

    def open_findings(self, vault_id: str) -> list[OpenFinding]:
        return [self._noted(f) for f in super().open_findings(vault_id)]

    def load(self, vault_id: str, scope: str, marks: Sequence[MarkQuery]) -> VaultState:
        state = super().load(vault_id, scope, marks)
        return replace(state, findings=[self._noted(f) for f in state.findings])

    def _noted(self, finding: OpenFinding) -> OpenFinding:
        return replace(finding, finding=_Noted(finding.finding, finding.rule, self.read))


def test_resolving_reads_the_records_of_diff_findings_only() -> None:
    world = World(clock=SimClock(START))
    store = NotingStore()
    pipeline = Pipeline(gateway=SimVaultGateway(world), store=store,
                        policy=Policy(mode="alert", own_principal_ids=[SIM_IDENTITY]),
                        sinks={"raise_defender_alert": SimDefender(world), "publish_detection": SimTopic(world)},
                        clock=world.clock)
    world.put(vault())
    store.put_baseline(VAULT_ID, vault(), None, now=START)
    granted = with_grants(grant(INTRUDER, secrets=["get", "list"]))
    world.put(granted)
    [first] = pipeline.handle(event(INTRUDER, VAULT_WRITE, event_id="evt-grant"))
    opened = {f.rule for f in store.open_findings(VAULT_ID)}
    closing = {rule: RULES[rule].kind.closing for rule in opened}
    assert {"KV-AP-01", "KV-AP-03"} <= opened and len(set(closing.values())) >= 2, first.findings
    store.read.clear()
    tagged = with_grants(grant(INTRUDER, secrets=["get", "list"]), tags={"team": "payments"})
    world.put(tagged)
    pipeline.handle(event(INTRUDER, VAULT_WRITE, event_id="evt-tags"))
    assert store.read == []  # nothing the diff compares moved: no finding can have closed
    assert {"KV-AP-01", "KV-AP-03"} <= {f.rule for f in store.open_findings(VAULT_ID)}
    store.read.clear()
    world.put(with_grants(grant(INTRUDER, secrets=["get"]), tags={"team": "payments"}))  # list taken away
    pipeline.handle(event(INTRUDER, VAULT_WRITE, event_id="evt-narrowed"))
    assert "KV-AP-01" in store.read, "the diff finding's record is read for the baseline it was found against"
    assert {closing[rule] for rule in store.read if rule in closing} == {Closing.BACK_TO_BASELINE}
    assert "KV-AP-03" not in {f.rule for f in store.open_findings(VAULT_ID)}  # get + list is gone
