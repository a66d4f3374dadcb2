"""The pipeline's parsed baselines are bounded by the memory they hold, not by their number."""

from __future__ import annotations

from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.flow.parsed_baselines import PARSED_BASELINE_BYTES, ParsedBaselines
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


def test_a_pipeline_keeps_its_parsed_baselines_within_the_default_bound() -> None:
    world = World(clock=SimClock("2026-11-27T10:00:00Z"))
    pipeline = Pipeline(gateway=SimVaultGateway(world), store=SQLiteStateStore(), policy=Policy(), clock=world.clock)
    assert pipeline.parsed.limit == PARSED_BASELINE_BYTES


def test_one_large_vault_displaces_many_small_baselines_and_the_total_stays_bounded() -> None:
    small = [config(1, f"s{number}") for number in range(40)]
    big = config(200, "big")
    parsed = ParsedBaselines(limit=footprint(big) + 10 * footprint(small[0]))
    for number, one in enumerate(small):
        parsed.remember(f"etag-{number}", one)
    parsed.remember("etag-big", big)
    assert parsed.bytes == sum(footprint(c) for c in parsed.parsed.values())
    assert parsed.bytes <= parsed.limit
    assert "etag-big" in parsed.parsed and len(parsed.parsed) <= 11


def test_a_baseline_read_again_is_kept_over_older_ones() -> None:
    first, second, third = (config(1, name) for name in ("a", "b", "c"))
    parsed = ParsedBaselines(limit=2 * footprint(first))
    parsed.remember("etag-a", first)
    parsed.remember("etag-b", second)
    assert parsed.config_of(Baseline(first.id, dict(first.raw), "etag-a")) is first
    parsed.remember("etag-c", third)
    assert list(parsed.parsed) == ["etag-a", "etag-c"]
