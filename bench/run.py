"""kvguard benchmarks: pipeline throughput, end-to-end replay, cold start (with and without telemetry).
Not timed tests.

    make bench            (or: .venv/bin/python bench/run.py [--events N])

Prints figures and, where a comparison exists, ratios; the machine is named in the output.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.workload import scenario  # noqa: E402


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def pipeline_throughput(events: int) -> None:
    """parse -> read -> diff -> detect -> decide -> record, SQLite state in a file, one thread."""
    from kvguard.adapters.sqlite import SQLiteStateStore
    from kvguard.policy import Policy
    from kvguard.replay import build_run
    from kvguard.scenario import LoadedScenario, Scenario, _step

    data = scenario(events)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = LoadedScenario(path="bench", scenario=Scenario.model_validate(data),
                                policy=Policy(mode="alert"), steps=[_step("bench", i, s)
                                                                   for i, s in enumerate(data["steps"])])
        run = build_run(loaded)
        run.pipeline.store = SQLiteStateStore(Path(tmp) / "state.db")
        for doc in data["vaults"]:
            run.pipeline.store.put_baseline(doc["id"], doc, None)
        payloads = [(s.kind, json.dumps(s.value) if s.kind == "event" else s.value) for s in loaded.steps]
        texts = [p for k, p in payloads if k == "event"]
        gc.freeze()  # the benchmark's own inputs are not the pipeline's heap: keep them out of collections
        started = time.perf_counter()
        for text in texts:
            json.loads(text)
        json_seconds = time.perf_counter() - started
        started = time.perf_counter()
        handled = 0
        for kind, payload in payloads:
            if kind == "write":
                run.world.put(payload)  # includes parsing the vault, as an ARM read would
            elif kind == "advance":
                run.world.clock.advance(payload)
            else:
                handled += len(run.pipeline.handle(payload))
        seconds = time.perf_counter() - started
    rate = handled / seconds
    print(f"pipeline: {handled} events in {seconds:.2f} s = {rate:,.0f} events/s "
          f"(plain json.loads of the same inputs: {len(texts) / json_seconds:,.0f}/s, "
          f"pipeline costs {seconds / json_seconds:,.0f}x json.loads)")


def replay_end_to_end(events: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.json"
        path.write_text(json.dumps(scenario(events)))
        started = time.perf_counter()
        result = subprocess.run([str(ROOT / ".venv/bin/kvguard"), "replay", str(path), "--json"],
                                capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
    lines = result.stdout.count("\n") - 1
    print(f"replay --json: {lines} events in {seconds:.2f} s end to end = {lines / seconds:,.0f} events/s "
          "(process start, scenario load and output included)")


def cold_start(runs: int = 7) -> None:
    # Resident memory now (VmRSS), not the high-water mark: Linux carries ru_maxrss over from the
    # parent through fork and exec, so it would report this benchmark's own size.
    # The rule catalog loads when the pipeline is first built, not on import: it is timed here too,
    # so the figure is what a worker pays before it can judge its first event.
    probe = ("import time; t = time.perf_counter(); import function_app; from kvguard import catalog; "
             "catalog.load(); d = time.perf_counter() - t; "
             "rss = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')][0]; print(d, rss)")
    times, rss = _fresh_processes(probe, runs, {})
    print(f"cold start: import function_app + catalog.load() median {statistics.median(times):.3f} s over {runs} "
          "fresh processes "
          f"(min {min(times):.3f}), resident memory after import median {statistics.median(rss):.1f} MB")


# A syntactically valid connection string to an address nothing listens on: configuring the exporter
# costs the same, and nothing leaves the machine.
TELEMETRY_OFF = {"APPLICATIONINSIGHTS_CONNECTION_STRING": ""}
TELEMETRY_ON = {"APPLICATIONINSIGHTS_CONNECTION_STRING":
                "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://127.0.0.1:9/"}


def telemetry_start(runs: int = 7) -> None:
    """What the first invocation pays to set up its observer, with and without Application Insights:
    import function_app, load the catalog, then build the observer (OpenTelemetry is configured
    there, lazily)."""
    probe = ("import time; t = time.perf_counter(); import function_app; from kvguard import catalog, runtime; "
             "catalog.load(); runtime.observer(); d = time.perf_counter() - t; "
             "rss = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')][0]; print(d, rss)")
    for label, env in (("without", TELEMETRY_OFF), ("with", TELEMETRY_ON)):
        times, rss = _fresh_processes(probe, runs, env)
        print(f"first invocation setup {label} APPLICATIONINSIGHTS_CONNECTION_STRING: import function_app, "
              f"catalog and observer median {statistics.median(times):.3f} s over {runs} fresh processes "
              f"(min {min(times):.3f}), resident memory median {statistics.median(rss):.1f} MB")


def _fresh_processes(probe: str, runs: int, env: dict[str, str]) -> tuple[list[float], list[float]]:
    environment = {**os.environ, **env}
    times, rss = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True,
                             env=environment)
        seconds, kib = out.stdout.split()[-2:]
        times.append(float(seconds))
        rss.append(int(kib) / 1024)
    return times, rss


def activity_records(operations: int) -> None:
    """Backfill's own share: Activity Log records (Started, Accepted, Succeeded per operation)
    collapsed to one per operation and normalised into events, before the pipeline sees them."""
    from bench.workload import activity_log
    from kvguard.activity import events

    records = activity_log(operations)
    gc.freeze()
    started = time.perf_counter()
    items, _ = events(records)
    seconds = time.perf_counter() - started
    print(f"activity records: {len(records)} records -> {len(items)} events in {seconds:.2f} s = "
          f"{len(records) / seconds:,.0f} records/s (collapse and normalise; the pipeline's cost comes on top)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    pipeline_throughput(args.events)
    replay_end_to_end(args.events)
    activity_records(args.events)
    cold_start()
    telemetry_start()


if __name__ == "__main__":
    main()
