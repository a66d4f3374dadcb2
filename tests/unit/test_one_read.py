"""What a vault event reads of the state store before it acts: one `load` (the baseline, the open
findings, the intents, every series of marks), sent while ARM is read, not after."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from detectors.cases import INTRUDER, VAULT_ID, grant, vault, with_grants
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.pipeline import Pipeline
from kvguard.policy import Policy
from kvguard.ports import MarkQuery, VaultState
from kvguard.sim import SIM_IDENTITY, SimClock, SimDefender, SimTopic, SimVaultGateway, World
from kvguard.vault import VaultConfig
from tests.unit.test_pipeline import START, VAULT_WRITE, event

READS = ("get_baseline", "open_findings", "pending_actions", "marks_since", "marks_since_each", "load", "audited")


class NotingStore(SQLiteStateStore):
    """The SQLite store, noting each read the pipeline makes (a read `load` makes is its own)."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.reads: list[str] = []
        self._loading = False

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name in READS and not super().__getattribute__("_loading"):
            super().__getattribute__("reads").append(name)
        return attribute

    def load(self, vault_id: str, scope: str, marks: Sequence[MarkQuery]) -> VaultState:
        self._loading = True
        try:
            return super().load(vault_id, scope, marks)
        finally:
            self._loading = False


class SeenGateway(SimVaultGateway):
    """The simulated gateway, telling when a vault's read has started and holding its answer until
    the state store's read has started too: a gateway that waits as a network one does."""

    answers_in_process = False

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.reading = threading.Event()
        self.store_reading = threading.Event()

    def get(self, vault_id: str) -> VaultConfig | None:
        self.reading.set()
        self.store_reading.wait(timeout=10)
        return super().get(vault_id)


class LoadAfterArm(SQLiteStateStore):
    """The SQLite store whose `load` notes whether the vault's ARM read was already on its way."""

    def __init__(self, gateway: SeenGateway) -> None:
        super().__init__(":memory:")
        self.gateway = gateway
        self.arm_on_its_way: list[bool] = []

    def load(self, vault_id: str, scope: str, marks: Sequence[MarkQuery]) -> VaultState:
        self.gateway.store_reading.set()
        self.arm_on_its_way.append(self.gateway.reading.wait(timeout=10))
        return super().load(vault_id, scope, marks)


def _pipeline(world: World, store: SQLiteStateStore, gateway: SimVaultGateway | None = None) -> Pipeline:
    return Pipeline(gateway=gateway or SimVaultGateway(world), store=store,
                    policy=Policy(mode="remediate", own_principal_ids=[SIM_IDENTITY]),
                    sinks={"raise_defender_alert": SimDefender(world), "publish_detection": SimTopic(world)},
                    clock=world.clock)


def _granted(world: World, store: SQLiteStateStore, gateway: SimVaultGateway | None = None) -> Pipeline:
    """The pipeline on a hardened vault kvguard knows, the intruder's grant just landed in it."""
    pipeline = _pipeline(world, store, gateway)
    world.put(vault())
    store.put_baseline(VAULT_ID, vault(), None, now=START)
    world.put(with_grants(grant(INTRUDER, secrets=["get", "list"])))
    return pipeline


def test_a_reverted_grant_reads_the_vaults_state_once() -> None:
    world = World(clock=SimClock(START))
    store = NotingStore()
    pipeline = _granted(world, store)
    store.reads.clear()
    [outcome] = pipeline.handle(event(INTRUDER, VAULT_WRITE, event_id="evt-grant"))
    assert "revert_access_policy" in [a.handler for a in outcome.actions if a.status == "applied"]
    assert store.reads == ["load"]


def test_the_state_store_is_read_while_arm_is() -> None:
    """Each read waits for the other to start: read one after the other, the first would wait in vain."""
    world = World(clock=SimClock(START))
    gateway = SeenGateway(world)
    store = LoadAfterArm(gateway)
    pipeline = _granted(world, store, gateway)
    [outcome] = pipeline.handle(event(INTRUDER, VAULT_WRITE, event_id="evt-grant"))
    assert outcome.outcome == "processed" and outcome.findings
    assert store.arm_on_its_way == [True]


def test_a_redelivery_reports_its_vault_as_spelled_without_reading_the_baseline_again() -> None:
    """The event spells `resourcegroups`, ARM `resourceGroups`: the report names the vault as its
    baseline does, which a worker that judged the vault knows; a worker that did not reads it once."""
    world = World(clock=SimClock(START))
    store = NotingStore()
    pipeline = _granted(world, store)
    delivery = event(INTRUDER, VAULT_WRITE, event_id="evt-grant",
                     resource=VAULT_ID.replace("resourceGroups", "resourcegroups"))
    assert "resourcegroups" in delivery["subject"] and "resourceGroups" in VAULT_ID
    pipeline.handle(delivery)
    store.reads.clear()
    [again] = pipeline.handle(delivery)
    assert (again.outcome, again.vault, store.reads) == ("duplicate", VAULT_ID, [])
    fresh = _pipeline(world, store)
    [elsewhere] = fresh.handle(delivery)
    [once_more] = fresh.handle(delivery)
    assert (elsewhere.vault, once_more.vault, store.reads) == (VAULT_ID, VAULT_ID, ["get_baseline"])


class ClosingStore(SQLiteStateStore):
    """The SQLite store, noting the findings it is asked to close."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.closed: list[tuple[str, bool]] = []

    def close_finding(self, vault_id: str, rule: str) -> bool:
        closed = super().close_finding(vault_id, rule)
        self.closed.append((rule, closed))
        return closed


def test_a_finding_remediated_as_it_was_found_is_not_closed_in_the_store_but_one_open_before_is() -> None:
    world = World(clock=SimClock(START))
    store = ClosingStore()
    pipeline = _granted(world, store)
    [reverted] = pipeline.handle(event(INTRUDER, VAULT_WRITE, event_id="evt-grant"))
    assert reverted.resolutions and store.closed == []  # the sinks hear of it; the store had nothing open
    store.open_finding(VAULT_ID, "KV-AP-01", {"rule": "KV-AP-01", "evidence": {}}, START)
    world.put(with_grants(grant(INTRUDER, secrets=["get", "list"])))
    pipeline.handle(event(INTRUDER, VAULT_WRITE, event_id="evt-grant-again"))
    assert ("KV-AP-01", True) in store.closed


class ThreadNotingGateway(SimVaultGateway):
    """The simulated gateway, noting the thread each read ran on."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.threads: list[threading.Thread] = []

    def get(self, vault_id: str) -> VaultConfig | None:
        self.threads.append(threading.current_thread())
        return super().get(vault_id)


def test_a_gateway_that_answers_in_the_process_is_read_on_the_pipelines_thread() -> None:
    """Handing the simulated world's read to another thread only costs (replay, the benchmarks)."""
    world = World(clock=SimClock(START))
    gateway = ThreadNotingGateway(world)
    store = SQLiteStateStore(":memory:")
    pipeline = _granted(world, store, gateway)
    pipeline.handle(event(INTRUDER, VAULT_WRITE, event_id="evt-grant"))
    assert gateway.threads and set(gateway.threads) == {threading.current_thread()}
