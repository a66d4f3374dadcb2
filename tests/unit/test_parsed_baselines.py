"""The pipeline's parsed baselines are bounded by the memory they hold, not by their number."""

from __future__ import annotations

import pytest

from kvguard import pipeline as pipeline_module
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.pipeline import Pipeline
from kvguard.policy import Policy
from kvguard.ports import Baseline
from kvguard.sim import SimClock, SimVaultGateway, World
from kvguard.vault import VaultConfig, footprint
from tests.unit.test_vault import TENANT, arm, entry


def config(entries: int, name: str) -> VaultConfig:
    doc = arm([entry(f"{number:08x}-0000-4000-8000-{len(name):012x}", tenant=TENANT, secrets=["get"])
               for number in range(entries)])
    doc["id"] += name
    return VaultConfig.from_arm(doc)


def test_footprint_grows_with_the_entries_a_vault_holds() -> None:
    assert footprint(config(1024, "big")) > 100 * footprint(config(1, "small"))


def test_one_large_vault_displaces_many_small_baselines_and_the_total_stays_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(clock=SimClock("2026-11-27T10:00:00Z"))
    pipeline = Pipeline(gateway=SimVaultGateway(world), store=SQLiteStateStore(), policy=Policy(), clock=world.clock)
    small = [config(1, f"s{number}") for number in range(40)]
    big = config(200, "big")
    monkeypatch.setattr(pipeline_module, "PARSED_BASELINE_BYTES", footprint(big) + 10 * footprint(small[0]))
    for number, parsed in enumerate(small):
        pipeline._remember(f"etag-{number}", parsed)
    pipeline._remember("etag-big", big)
    assert pipeline._parsed_bytes == sum(footprint(c) for c in pipeline._parsed.values())
    assert pipeline._parsed_bytes <= pipeline_module.PARSED_BASELINE_BYTES
    assert "etag-big" in pipeline._parsed and len(pipeline._parsed) <= 11


def test_a_baseline_read_again_is_kept_over_older_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(clock=SimClock("2026-11-27T10:00:00Z"))
    pipeline = Pipeline(gateway=SimVaultGateway(world), store=SQLiteStateStore(), policy=Policy(), clock=world.clock)
    first, second, third = (config(1, name) for name in ("a", "b", "c"))
    monkeypatch.setattr(pipeline_module, "PARSED_BASELINE_BYTES", 2 * footprint(first))
    pipeline._remember("etag-a", first)
    pipeline._remember("etag-b", second)
    assert pipeline._baseline_config(Baseline(first.id, dict(first.raw), "etag-a")) is first
    pipeline._remember("etag-c", third)
    assert list(pipeline._parsed) == ["etag-a", "etag-c"]
