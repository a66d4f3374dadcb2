"""State bytes per event on SQLite, before and after retention. Not a timed test.

    .venv/bin/python bench/state_size.py [--events 20000]

Replays the benchmark workload (bench/workload.py: a change every 2 simulated seconds over 50
vaults) into a SQLite file, then prunes what is older than half the run, as the reconcile timer
does once records pass KVGUARD_RETENTION_DAYS, and compacts the file. Prints the file size per
event for all events, per event still retained, and what is left that retention never prunes
(baselines and open findings).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.workload import scenario  # noqa: E402


def file_size(path: Path) -> int:
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
    return path.stat().st_size


def main() -> None:
    from kvguard.adapters.sqlite import SQLiteStateStore
    from kvguard.policy import Policy
    from kvguard.replay import build_run
    from kvguard.scenario import LoadedScenario, Scenario, _step

    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    data = scenario(args.events)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.db"
        loaded = LoadedScenario(path="bench", scenario=Scenario.model_validate(data), policy=Policy(mode="alert"),
                                steps=[_step("bench", i, s) for i, s in enumerate(data["steps"])])
        run = build_run(loaded)
        store = SQLiteStateStore(path)
        run.pipeline.store = store
        for doc in data["vaults"]:
            store.put_baseline(doc["id"], doc, None)
        started = run.world.clock.now()
        handled = 0
        for step in loaded.steps:
            if step.kind == "write":
                run.world.put(step.value)
            elif step.kind == "advance":
                run.world.clock.advance(step.value)
            else:
                handled += len(run.pipeline.handle(json.dumps(step.value)))
        ended = run.world.clock.now()
        store.close()
        everything = file_size(path)
        store = SQLiteStateStore(path)
        removed = store.prune(started + (ended - started) / 2)
        retained = len(store.list_audit())
        store.close()
        after = file_size(path)
        store = SQLiteStateStore(path)
        store.prune(ended + (ended - started))
        store.close()
        floor = file_size(path)
    print(f"{handled} events over {ended - started} of simulated time")
    print(f"all kept: {everything / 1e6:.1f} MB = {everything / handled:,.0f} bytes per event")
    print(f"pruned to the second half ({removed} records removed, {retained} events kept): {after / 1e6:.1f} MB "
          f"= {(after - floor) / retained:,.0f} bytes per retained event above a floor of {floor / 1e3:.0f} kB "
          "(baselines and open findings, never pruned)")


if __name__ == "__main__":
    main()
