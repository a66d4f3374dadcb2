"""The SQLite statements one vault event costs, counted as SQLite runs them (set_trace_callback on
the real store): each read the flow needs is made once per event."""

from __future__ import annotations

from detectors.cases import INTRUDER, OPERATOR, VAULT_ID, grant, vault, with_grants
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.ids import vault_key
from kvguard.pipeline import Pipeline
from kvguard.policy import Policy
from kvguard.ports import vault_lease
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
    # the vault's open findings as `load` or `open_findings` reads them (a write of one finding
    # reads its own row)
    findings_reads = [s for s in statements if s.startswith("SELECT")
                      and "finding, opened, baseline_etag FROM findings WHERE vault_key = " in s]
    assert len(findings_reads) == 1, findings_reads
    assert {f.rule for f in store.open_findings(VAULT_ID)} >= {f.rule for f in again.findings}


def test_a_quiet_event_claims_in_one_statement_and_renews_with_its_completion() -> None:
    """The event's claim and its vault's lease in one upsert, the vault's state in one SELECT; the
    record's transaction renews nothing on its own (its completion is fenced as the renewal was)."""
    world = World(clock=SimClock(START))
    store = SQLiteStateStore(":memory:")
    pipeline = _pipeline(world, store)
    world.put(vault())
    store.put_baseline(VAULT_ID, vault(), None, now=START)
    pipeline.handle(event(OPERATOR, VAULT_WRITE, event_id="evt-first"))  # the caller's first change
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    [quiet] = pipeline.handle(event(OPERATOR, VAULT_WRITE, event_id="evt-quiet"))
    store._db.set_trace_callback(None)
    assert quiet.outcome == "processed" and not quiet.findings
    assert [s for s in statements if s.startswith("INSERT INTO claims")] == statements[:1]
    before_the_record = statements[:statements.index("BEGIN IMMEDIATE")]
    assert [s for s in before_the_record if s.startswith("SELECT")] == statements[1:2], "the vault's state in one read"
    assert not [s for s in statements if s.startswith("UPDATE claims SET lease_until")]
    assert [s for s in statements if s.startswith("UPDATE claims SET done")], "completed, fenced by its owner"
    assert store.claim("evt-quiet", START, pipeline.lease) == "duplicate"
    assert store.claim(vault_lease(vault_key(VAULT_ID)), START, pipeline.lease) == "claimed"  # let go of
