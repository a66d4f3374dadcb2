"""One pipeline run in a fresh process, for the figures that need a process of their own: peak
resident memory (VmHWM is per process, so it must not include the benchmark's own heap) and the
scaling table. Steps are generated one by one, so the inputs held at any time are one step.

    .venv/bin/python bench/probe.py --load large --events 2000 --policies 1024

Prints one JSON object: events handled, CPU and wall seconds of the event loop, peak resident
memory, and the state file's bytes per processed event.
"""

from __future__ import annotations

import argparse
import gc
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.workload import _sized, large_vault_steps, mixed_steps, vault_doc  # noqa: E402


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def state_bytes(path: Path) -> int:
    """The database's size once the write-ahead log is folded in and free pages are given back
    (what the state costs at rest)."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("VACUUM")
    pages, size = db.execute("PRAGMA page_count").fetchone()[0], db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    return int(pages * size)


def run(load: str, events: int, vaults: int, policies: int) -> dict[str, Any]:
    from kvguard.adapters.sqlite import SQLiteStateStore
    from kvguard.policy import Policy
    from kvguard.replay import build_run
    from kvguard.scenario import LoadedScenario, Scenario, _step

    docs = [_sized(vault_doc(i), policies) for i in range(vaults)]
    steps: Iterator[dict[str, Any]] = (large_vault_steps(docs, events) if load == "large"
                                       else mixed_steps(docs, events))
    data = {"name": "probe", "clock": "2026-11-27T10:00:00Z", "policy": {"mode": "alert"}, "vaults": docs,
            "steps": []}
    loaded = LoadedScenario(path="probe", scenario=Scenario.model_validate(data), policy=Policy(mode="alert"),
                            steps=[])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.db"
        replay = build_run(loaded)
        replay.pipeline.store = SQLiteStateStore(path)
        for doc in docs:
            replay.pipeline.store.put_baseline(doc["id"], doc, None)
        del docs, data
        gc.collect()
        before_kib = status_kib("VmRSS")
        handled = 0
        cpu = wall = 0.0
        for step in steps:
            (kind, value), = step.items()
            if kind == "advance":
                replay.world.clock.advance(_step("probe", 0, step).value)
                continue
            text = json.dumps(value) if kind == "event" else ""
            started_cpu, started_wall = time.process_time(), time.perf_counter()
            if kind == "write":
                replay.world.put(value)  # parses the vault, as the ARM adapter's read would
            else:
                handled += len(replay.pipeline.handle(text))
            cpu += time.process_time() - started_cpu
            wall += time.perf_counter() - started_wall
        peak = status_kib("VmHWM")
        store = replay.pipeline.store
        everything = state_bytes(path)
        # Retention as the reconcile timer applies it (Pipeline.prune): the first half of the run
        # pruned, then everything; what is left at the end is what retention never prunes.
        started, ended = datetime.fromisoformat("2026-11-27T10:00:00+00:00"), replay.world.clock.now()
        store.prune(started + (ended - started) / 2)
        retained = len(store.list_audit())
        half = state_bytes(path)
        store.prune(ended + (ended - started))
        floor = state_bytes(path)
        return {"events": handled, "cpu_seconds": cpu, "wall_seconds": wall, "rss_before_kib": before_kib,
                "peak_kib": peak, "state_bytes": everything, "retained_events": retained,
                "retained_bytes_per_event": (half - floor) / max(retained, 1), "never_pruned_bytes": floor}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--load", choices=("mixed", "large"), default="mixed")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--vaults", type=int, default=200)
    parser.add_argument("--policies", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(run(args.load, args.events, args.vaults, args.policies)))


if __name__ == "__main__":
    main()
