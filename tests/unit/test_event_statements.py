"""The SQLite statements one vault event costs, counted as SQLite runs them (set_trace_callback on
the real store): each read the flow needs is made once per event."""

from __future__ import annotations

from detectors.cases import INTRUDER, OPERATOR, VAULT_ID, grant, vault, with_grants
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.pipeline import Pipeline
from kvguard.policy import Policy
from kvguard.sim import SIM_IDENTITY, SimClock, SimDefender, SimTopic, SimVaultGateway, World
from tests.unit.test_pipeline import START, VAULT_WRITE, event


def _pipeline(world: World, store: SQLiteStateStore) -> Pipeline:
    return Pipeline(gateway=SimVaultGateway(world), store=store,
                    policy=Policy(mode="alert", own_principal_ids=[SIM_IDENTITY]),
                    sinks={"raise_defender_alert": SimDefender(world), "publish_detection": SimTopic(world)},
                    clock=world.clock)


def test_an_event_with_findings_reads_the_open_findings_once() -> None:
    world = World(clock=SimClock(START))
    store = SQLiteStateStore(":memory:")
    pipeline = _pipeline(world, store)
    world.put(vault())
    store.put_baseline(VAULT_ID, vault(), None, now=START)
    world.put(with_grants(grant(INTRUDER, secrets=["get", "list"])))
    [first] = pipeline.handle(event(INTRUDER, VAULT_WRITE, event_id="evt-grant"))
    assert first.findings, "the grant raises findings, so joining and opening both need the open ones"
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    world.put(with_grants(grant(INTRUDER, secrets=["get", "list"]), grant(OPERATOR, secrets=["get", "list"])))
    [again] = pipeline.handle(event(INTRUDER, VAULT_WRITE, event_id="evt-again"))
    store._db.set_trace_callback(None)
    assert again.outcome == "processed" and again.findings, "a second grant: joined against the open ones, then opened"
    # the vault's open findings as `open_findings` reads them (a write of one finding reads its own row)
    findings_reads = [s for s in statements if s.startswith("SELECT") and " FROM findings " in s
                      and s.endswith("ORDER BY rule")]
    assert len(findings_reads) == 1, findings_reads
    assert {f.rule for f in store.open_findings(VAULT_ID)} >= {f.rule for f in again.findings}
