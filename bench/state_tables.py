"""State bytes per retained event on Azure Table Storage (Azurite), for the mixed load. Not a timed test.

    .venv/bin/python bench/state_tables.py [--deliveries 1000]      (also run by `make bench`)

Replays the mixed load of `bench/probe.py --load mixed` (tag, grant, revoke, network and flag
changes, redeliveries, over 200 vaults) into a TablesStateStore on Azurite, then prunes what is
older than half the run, as the reconcile timer does once records pass KVGUARD_RETENTION_DAYS,
and then everything. Azurite neither bills nor limits sizes, so every entity left is measured as
Azure counts it (`tests.integration.azurite.entity_size`: keys, property names and values). Prints
the bytes per retained event above what retention never prunes, beside the target of issue 22
(600), and the share of each table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import machine  # noqa: E402
from bench.workload import _sized, mixed_steps, vault_doc  # noqa: E402

TARGET = 600
PREFIX = "kvguard"


# What the rows of the vaults' table are, by how their RowKeys start (`kvguard.adapters.tables`)
ROW_KINDS = {"c|": "claims", "lease": "claims", "baseline": "baselines", "f|": "findings", "a|": "foundagainst",
             "i|": "intents", "m|": "marks", "t|": "audit", "o|": "ownwrites"}


def stored_bytes(connection_string: str) -> Counter[str]:
    """Every kvguard table's entities, measured as Azure counts them, by table (the vaults'
    table by the kind of row)."""
    from azure.data.tables import TableServiceClient

    from tests.integration.azurite import entity_size

    sizes: Counter[str] = Counter()
    with TableServiceClient.from_connection_string(connection_string) as service:
        for table in service.list_tables():
            if table.name.startswith(PREFIX):
                concern = table.name[len(PREFIX):]
                for entity in service.get_table_client(table.name).list_entities():
                    kind = next((kind for start, kind in ROW_KINDS.items() if entity["RowKey"].startswith(start)),
                                "other") if concern == "vault" else concern
                    sizes[kind] += entity_size(entity)
    return sizes


def measure(deliveries: int, vaults: int, scratch: Path) -> dict[str, Any]:
    from kvguard.adapters.tables import TablesStateStore
    from kvguard.policy import Policy
    from kvguard.replay import build_run
    from kvguard.scenario import LoadedScenario, Scenario, _step
    from tests.integration.azurite import running_azurite

    docs = [_sized(vault_doc(i), 8) for i in range(vaults)]
    data = {"name": "state", "clock": "2026-11-27T10:00:00Z", "policy": {"mode": "alert"}, "vaults": docs,
            "steps": []}
    loaded = LoadedScenario(path="state", scenario=Scenario.model_validate(data), policy=Policy(mode="alert"),
                            steps=[])
    with running_azurite(scratch) as azurite:
        replay = build_run(loaded)
        store = TablesStateStore.from_connection_string(azurite.connection_string, table_prefix=PREFIX)
        replay.pipeline.store = store
        for doc in docs:
            store.put_baseline(doc["id"], doc, None)
        handled = 0
        for step in mixed_steps(docs, deliveries):
            (kind, value), = step.items()
            if kind == "advance":
                replay.world.clock.advance(_step("state", 0, step).value)
            elif kind == "write":
                replay.world.put(value)
            else:
                handled += len(replay.pipeline.handle(json.dumps(value)))
        everything = stored_bytes(azurite.connection_string)
        started, ended = datetime.fromisoformat("2026-11-27T10:00:00+00:00"), replay.world.clock.now()
        store.prune(started + (ended - started) / 2)
        retained = len(store.list_audit())
        half = stored_bytes(azurite.connection_string)
        store.prune(ended + (ended - started))
        floor = stored_bytes(azurite.connection_string)
        store.close()
    return {"events": handled, "retained": retained, "everything": everything, "half": half, "floor": floor}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--vaults", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        figures = measure(args.deliveries, args.vaults, Path(scratch))
    half, floor, retained = figures["half"], figures["floor"], max(figures["retained"], 1)
    per_event = (sum(half.values()) - sum(floor.values())) / retained
    print(f"machine: {machine()}")
    print(f"state on Table Storage (Azurite, sizes as Azure counts them), {figures['events']} mixed deliveries over "
          f"{args.vaults} vaults: {sum(figures['everything'].values()) / figures['events']:,.0f} bytes per event "
          f"with everything kept; after retention prunes the first half, {per_event:,.0f} bytes per retained event "
          f"above {sum(floor.values()) / 1e3:,.0f} kB that retention never prunes - target <= {TARGET}: "
          f"{'met' if per_event <= TARGET else 'NOT MET'}")
    shares = {table: (half[table] - floor.get(table, 0)) / retained for table in half}
    print("per retained event, by kind of record: " + ", ".join(
        f"{table} {size:,.0f}" for table, size in sorted(shares.items(), key=lambda item: -item[1]) if size >= 1))


if __name__ == "__main__":
    main()
