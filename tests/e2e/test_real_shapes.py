"""Vaults in the shapes of each Key Vault API version (2016-10-01, 2019-09-01, 2023-07-01,
2026-02-01), replayed through `kvguard replay --json`. Each scenario's `expect` block names, per
delivered event id, the rules that must fire (`fires`), must not fire (`not`) and the handlers'
statuses (`actions`); `findings` counts a rule's findings over the whole replay; `final` names
permissions a principal must hold at the end (after expanding `all`) and settings the vault must
end with."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvguard.cli import main
from kvguard.vault import VaultConfig

SHAPES = sorted((Path(__file__).parent / "real_shapes").glob("*.yaml"))


def replay(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    out = StringIO()
    assert main(["replay", str(path), "--json"], out=out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    return {line["event_id"]: line for line in lines[:-1] if line.get("event_id")}, lines[-1]


def test_every_api_version_has_a_shape() -> None:
    assert {p.name[:10] for p in SHAPES} >= {"2016-10-01", "2019-09-01", "2023-07-01", "2026-02-01"}


@pytest.mark.parametrize("path", SHAPES, ids=[p.stem for p in SHAPES])
def test_real_shape(path: Path) -> None:
    expect = yaml.safe_load(path.read_text())["expect"]
    records, summary = replay(path)
    for rule, count in expect.get("findings", {}).items():
        assert summary["summary"]["findings"].get(rule, 0) == count, rule
    for event_id, wanted in expect.get("events", {}).items():
        assert event_id in records, f"{event_id} was not delivered"
        fired = {f["rule"] for f in records[event_id]["findings"]}
        assert set(wanted.get("fires", [])) <= fired, f"{event_id}: fired {sorted(fired)}"
        assert not set(wanted.get("not", [])) & fired, f"{event_id}: fired {sorted(fired)}"
        statuses = {a["handler"]: a["status"] for a in records[event_id]["actions"]
                    if not a["detail"].startswith("resolved")}
        for handler, status in wanted.get("actions", {}).items():
            assert statuses.get(handler) == status, f"{event_id}: {handler} {statuses.get(handler)}"
    for vault_id, final in expect.get("final", {}).items():
        state = summary["vaults"][next(k for k in summary["vaults"] if k.lower() == vault_id.lower())]
        config = VaultConfig.from_arm(state["config"])
        for object_id, categories in final.get("permissions", {}).items():
            entry = config.policy_for(f"{object_id}|")
            assert entry is not None, f"{object_id} lost its access policy"
            for category, names in categories.items():
                assert entry.effective(category) == {n.lower() for n in names}, (object_id, category)
        for setting, value in final.get("settings", {}).items():
            expected = frozenset(value) if isinstance(value, list) else value
            assert getattr(config, setting) == expected, setting
