"""Replay: the real pipeline over a scenario, against the simulated world.

Each scenario gets a fresh world and a fresh embedded state store. Own writes made while handling
a step are delivered right after that step, as Azure would deliver them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kvguard import catalog
from kvguard.activity import deliver, events
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.ids import subscription_of, vault_key
from kvguard.outcome import Outcome
from kvguard.pipeline import Pipeline
from kvguard.ports import AlertSink
from kvguard.resources import is_vault_id
from kvguard.scenario import LoadedScenario, Step
from kvguard.sim import SimClock, SimDefender, SimResourceGateway, SimTopic, SimVaultGateway, World


@dataclass
class ReplayRun:
    """One scenario's world and pipeline, kept for the summary and for tests."""

    scenario: LoadedScenario
    world: World
    pipeline: Pipeline
    outcomes: list[Outcome] = field(default_factory=list)


def build_run(loaded: LoadedScenario, extra_sinks: dict[str, AlertSink] | None = None) -> ReplayRun:
    catalog.load()
    world = World(clock=SimClock(loaded.scenario.clock))
    own = sorted({*loaded.policy.own_principal_ids, world.identity})
    policy = loaded.policy.model_copy(update={"own_principal_ids": own})
    sinks: dict[str, AlertSink] = {"raise_defender_alert": SimDefender(world), "publish_detection": SimTopic(world)}
    sinks.update(extra_sinks or {})
    pipeline = Pipeline(
        gateway=SimVaultGateway(world),
        store=SQLiteStateStore(":memory:"),
        policy=policy,
        sinks=sinks,
        clock=world.clock,
        resources=SimResourceGateway(world),
    )
    for doc in loaded.scenario.vaults:
        world.put(doc)
        if loaded.scenario.baselined:
            config = pipeline.gateway.get(doc["id"])
            assert config is not None
            pipeline.store.put_baseline(config.id, dict(config.raw), None, now=world.clock.now())
    for doc in loaded.scenario.resources:
        world.put_resource(doc)
        if loaded.scenario.baselined:
            pipeline.store.put_baseline(doc["id"], doc, None, now=world.clock.now())
    return ReplayRun(loaded, world, pipeline)


def replay(run: ReplayRun, on_outcome: Callable[[Outcome], None] | None = None) -> ReplayRun:
    for step in run.scenario.steps:
        for outcome in _run_step(run, step):
            run.outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    return run


def _run_step(run: ReplayRun, step: Step) -> Iterator[Outcome]:
    world, pipeline = run.world, run.pipeline
    kind, value = step.kind, step.value
    if kind == "write" and step.config is not None:
        world.put(value, step.config)
    elif kind == "write":
        world.put_resource(value)
    elif kind == "delete" and is_vault_id(value):
        world.delete(value)
    elif kind == "delete":
        world.delete_resource(value)
    elif kind == "reconcile":
        yield from pipeline.reconcile(_subscriptions(world))
    elif kind == "advance":
        world.clock.advance(value)
    elif kind == "event":
        yield from pipeline.handle(value)
    elif kind == "events":
        for raw in value:
            yield from pipeline.handle(raw)
    elif kind == "activity":
        yield from deliver(pipeline, events(value)[0])
    for own_write in world.take_emitted():
        yield from pipeline.handle(own_write)


def _subscriptions(world: World) -> list[str]:
    """The subscriptions the reconcile timer would be given: every one the world's resources are in."""
    ids = [doc["id"] for doc in (*world.vaults.values(), *world.resources.values())]
    return sorted({s for s in map(subscription_of, ids) if s is not None})


ActionCounts = dict[str, Counter[str]]


@dataclass
class _VaultCounts:
    """What one scenario's events did to one vault."""

    events: int = 0
    findings: Counter[str] = field(default_factory=Counter)
    actions: ActionCounts = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.events += 1
        self.findings.update(f.rule for f in outcome.findings)
        _count_actions(self.actions, outcome)


def _count_actions(counts: ActionCounts, outcome: Outcome) -> None:
    for action in outcome.actions:
        counts.setdefault(action.handler, Counter())[action.status] += 1


def _merge_actions(into: dict[str, dict[str, int]], more: ActionCounts) -> None:
    for handler_id, statuses in more.items():
        merged = into.setdefault(handler_id, {})
        for status, count in statuses.items():
            merged[status] = merged.get(status, 0) + count


def summarize(runs: list[ReplayRun]) -> dict[str, Any]:
    """The summary object of `--json` (README, "Scenarios and `kvguard replay`"): counts over every
    delivered event, and each vault's end state. Actions are counted by handler, then by status. A
    vault that several scenarios contain (its resource id compared case-insensitively) is one
    entry: their events, findings and actions added up, the scenarios' names listed in replay
    order, and its end state from the last one."""
    vaults: dict[str, dict[str, Any]] = {}
    shown: dict[str, str] = {}  # vault key -> the resource id as first reported
    for run in runs:
        per_vault: dict[str, _VaultCounts] = defaultdict(_VaultCounts)
        display = {vault_key(doc["id"]): doc["id"] for doc in run.world.vaults.values()}
        for outcome in run.outcomes:
            if outcome.vault:
                per_vault[display.setdefault(vault_key(outcome.vault), outcome.vault)].add(outcome)
        for vault_id in sorted({*per_vault, *display.values()}):
            current = run.pipeline.gateway.get(vault_id)
            counts = per_vault.get(vault_id) or _VaultCounts()
            entry = vaults.setdefault(shown.setdefault(vault_key(vault_id), vault_id), {
                "scenarios": [], "exists": False, "events": 0, "findings": {}, "actions": {},
                "open_findings": [], "config": None,
            })
            if run.scenario.scenario.name not in entry["scenarios"]:
                entry["scenarios"].append(run.scenario.scenario.name)
            entry["events"] += counts.events
            entry["findings"] = dict(Counter(entry["findings"]) + counts.findings)
            _merge_actions(entry["actions"], counts.actions)
            entry["exists"] = current is not None
            entry["open_findings"] = sorted(f.rule for f in run.pipeline.store.open_findings(vault_id))
            entry["config"] = dict(current.raw) if current is not None else None
    return {"summary": totals(o for run in runs for o in run.outcomes), "vaults": vaults,
            "resources": _resources(runs)}


def _resources(runs: list[ReplayRun]) -> dict[str, dict[str, Any]]:
    """Every non-vault resource the worlds held, deleted ones included, with its end state from
    the last scenario that has it; a resource several scenarios hold (ids compared
    case-insensitively) is one entry."""
    resources: dict[str, dict[str, Any]] = {}
    shown: dict[str, str] = {}
    for run in runs:
        for key, resource_id in run.world.resource_ids.items():
            current = run.world.resources.get(key)
            resources[shown.setdefault(key, resource_id)] = {
                "exists": current is not None, "config": dict(current) if current is not None else None}
    return dict(sorted(resources.items(), key=lambda item: vault_key(item[0])))


def totals(outcomes: Iterable[Outcome]) -> dict[str, Any]:
    """The counts of the replay summary: events, outcomes by kind, findings by rule, and actions
    by handler, then by status."""
    kinds: Counter[str] = Counter()
    findings: Counter[str] = Counter()
    actions: ActionCounts = {}
    for outcome in outcomes:
        kinds[outcome.outcome] += 1
        findings.update(f.rule for f in outcome.findings)
        _count_actions(actions, outcome)
    return {
        "events": sum(kinds.values()),
        "outcomes": dict(kinds),
        "findings": dict(findings),
        "actions": {handler_id: dict(statuses) for handler_id, statuses in actions.items()},
    }
