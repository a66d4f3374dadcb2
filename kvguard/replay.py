"""Replay: the real pipeline over a scenario, against the simulated world.

Each scenario gets a fresh world and a fresh embedded state store. Own writes made while handling
a step are delivered right after that step, as Azure would deliver them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import detectors  # noqa: F401  (the rule catalog registers on import; without it no rule runs)
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.ids import vault_key
from kvguard.outcome import Outcome
from kvguard.pipeline import Pipeline
from kvguard.ports import AlertSink
from kvguard.scenario import LoadedScenario, Step
from kvguard.sim import SimClock, SimDefender, SimTopic, SimVaultGateway, World


@dataclass
class ReplayRun:
    """One scenario's world and pipeline, kept for the summary and for tests."""

    scenario: LoadedScenario
    world: World
    pipeline: Pipeline
    outcomes: list[Outcome] = field(default_factory=list)


def build_run(loaded: LoadedScenario, extra_sinks: dict[str, AlertSink] | None = None) -> ReplayRun:
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
    )
    for doc in loaded.scenario.vaults:
        world.put(doc)
        if loaded.scenario.baselined:
            config = pipeline.gateway.get(doc["id"])
            assert config is not None
            pipeline.store.put_baseline(config.id, dict(config.raw), None, now=world.clock.now())
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
    if kind == "write":
        world.put(value, step.config)
    elif kind == "delete":
        world.delete(value)
    elif kind == "advance":
        world.clock.advance(value)
    elif kind == "event":
        yield from pipeline.handle(value)
    elif kind == "events":
        for raw in value:
            yield from pipeline.handle(raw)
    for own_write in world.take_emitted():
        yield from pipeline.handle(own_write)


def summarize(runs: list[ReplayRun]) -> dict[str, Any]:
    """DESIGN.md's summary object: counts over every delivered event, and each vault's end state."""
    outcomes: Counter[str] = Counter()
    findings: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    vaults: dict[str, dict[str, Any]] = {}
    for run in runs:
        per_vault: dict[str, dict[str, Any]] = defaultdict(
            lambda: {"events": 0, "findings": Counter(), "actions": Counter()}
        )
        display = {vault_key(doc["id"]): doc["id"] for doc in run.world.vaults.values()}
        for outcome in run.outcomes:
            outcomes[outcome.outcome] += 1
            for finding in outcome.findings:
                findings[finding.rule] += 1
            for action in outcome.actions:
                actions[action.status] += 1
            if outcome.vault:
                entry = per_vault[display.setdefault(vault_key(outcome.vault), outcome.vault)]
                entry["events"] += 1
                entry["findings"].update(f.rule for f in outcome.findings)
                entry["actions"].update(f"{a.handler}:{a.status}" for a in outcome.actions)
        for vault_id in sorted({*per_vault, *display.values()}):
            current = run.pipeline.gateway.get(vault_id)
            entry = per_vault.get(vault_id, {"events": 0, "findings": Counter(), "actions": Counter()})
            vaults[vault_id] = {
                "scenario": run.scenario.scenario.name,
                "exists": current is not None,
                "events": entry["events"],
                "findings": dict(entry["findings"]),
                "actions": dict(entry["actions"]),
                "open_findings": sorted(f.rule for f in run.pipeline.store.open_findings(vault_id)),
                "config": dict(current.raw) if current is not None else None,
            }
    return {
        "summary": {
            "events": sum(outcomes.values()),
            "outcomes": dict(outcomes),
            "findings": dict(findings),
            "actions": dict(actions),
        },
        "vaults": vaults,
    }
