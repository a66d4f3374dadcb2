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
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def pipeline_cpu(events: int, runs: int) -> None:
    """CPU time per event (time.process_time: the machine is shared, and wall time would count the
    other processes' turns) on the bench workload: parse -> read -> diff -> detect -> decide ->
    record, SQLite state in a WAL file, one thread. The storage floor is measured in the same run,
    on the same event texts: json.loads plus one SQLite upsert in WAL mode per event."""
    per_event, floors, statements = [], [], []
    for _ in range(runs):
        cpu, handled, executed = _pipeline_once(events)
        per_event.append(cpu / handled)
        statements.append(executed / handled)
        floors.append(_storage_floor(events))
    micros, floor = statistics.median(per_event) * 1e6, statistics.median(floors) * 1e6
    print(f"pipeline CPU per event (bench workload, {events} events, median of {runs} runs): {micros:,.0f} µs "
          f"({min(per_event) * 1e6:,.0f}-{max(per_event) * 1e6:,.0f}), {1e6 / micros:,.0f} events/s of one core "
          f"- target <= 200 µs: {verdict(micros <= 200)}")
    print(f"storage floor (json.loads + one SQLite upsert, WAL) in the same run: {floor:,.1f} µs per event; "
          f"pipeline = {micros / floor:,.1f}x the floor - goal <= 3x: {verdict(micros / floor <= 3)}; "
          f"{statistics.median(statements):.1f} SQLite statements per event")


def _pipeline_once(events: int) -> tuple[float, int, int]:
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
        store = SQLiteStateStore(Path(tmp) / "state.db")
        run.pipeline.store = store
        for doc in data["vaults"]:
            store.put_baseline(doc["id"], doc, None)
        payloads = [(s.kind, json.dumps(s.value) if s.kind == "event" else s.value) for s in loaded.steps]
        executed = 0

        def count(_: str) -> None:
            nonlocal executed
            executed += 1

        store._db.set_trace_callback(count)  # statements as SQLite runs them (BEGIN and COMMIT too)
        gc.collect()
        gc.freeze()  # the benchmark's own inputs are not the pipeline's heap: keep them out of collections
        started = time.process_time()
        handled = 0
        for kind, payload in payloads:
            if kind == "write":
                run.world.put(payload)  # includes parsing the vault, as an ARM read would
            elif kind == "advance":
                run.world.clock.advance(payload)
            else:
                handled += len(run.pipeline.handle(payload))
        cpu = time.process_time() - started
        store.close()
    gc.unfreeze()
    return cpu, handled, executed


def _storage_floor(events: int) -> float:
    """CPU seconds per event of the least any JSON-in, SQLite-state design pays."""
    texts = [json.dumps(s["event"]) for s in scenario(events)["steps"] if "event" in s]
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE seen (id TEXT PRIMARY KEY, subject TEXT NOT NULL)")
        started = time.process_time()
        for text in texts:
            event = json.loads(text)
            db.execute("INSERT INTO seen (id, subject) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET"
                       " subject = excluded.subject", (event["id"], event["subject"]))
        cpu = time.process_time() - started
        db.close()
    return cpu / len(texts)


def mixed_replay(deliveries: int, runs: int) -> None:
    """The held-out mixed load (bench/workload.py mixed_scenario), `kvguard replay --json` end to
    end in a subprocess: process start, scenario load and output included."""
    from bench.workload import mixed_scenario

    rates, cpu_rates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mixed.json"
        path.write_text(json.dumps(mixed_scenario(deliveries, vaults=200)))
        for _ in range(runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            result = subprocess.run([str(ROOT / ".venv/bin/kvguard"), "replay", str(path), "--json"],
                                    capture_output=True, text=True, check=True)
            seconds = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            lines = result.stdout.count("\n") - 1  # the last line is the summary
            rates.append(lines / seconds)
            cpu_rates.append(lines / (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime))
    rate = statistics.median(rates)
    print(f"replay --json, mixed load ({deliveries} deliveries over 200 vaults: tag, grant, revoke, network, flag "
          f"changes, 10 % redeliveries), end to end, median of {runs}: {rate:,.0f} events/s wall "
          f"({min(rates):,.0f}-{max(rates):,.0f}), {statistics.median(cpu_rates):,.0f} events per CPU second "
          f"- target >= 2,500 events/s: {verdict(rate >= 2500)}")


def probe(load: str, events: int, vaults: int, policies: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, str(ROOT / "bench/probe.py"), "--load", load, "--events", str(events),
                          "--vaults", str(vaults), "--policies", str(policies)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    figures: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return figures


def large_vault(events: int) -> None:
    """One vault of 1,024 access policies (the most Azure allows), in a fresh process: events/s
    and the process's peak resident memory (VmHWM) over the whole run."""
    figures = probe("large", events, vaults=1, policies=1024)
    rate, cpu_rate = figures["events"] / figures["wall_seconds"], figures["events"] / figures["cpu_seconds"]
    peak = figures["peak_kib"] / 1024
    print(f"vault of 1,024 access policies, {figures['events']:.0f} events: {rate:,.0f} events/s wall, "
          f"{cpu_rate:,.0f} per CPU second - target >= 500: {verdict(rate >= 500)}; peak resident {peak:,.0f} MB "
          f"({figures['rss_before_kib'] / 1024:,.0f} MB before the first event) - target <= 120 MB: "
          f"{verdict(peak <= 120)}")


def state_size(deliveries: int) -> None:
    """The state file's bytes per processed event of a mixed run (WAL folded in, vacuumed), before
    and after retention (the store's prune, as the reconcile timer runs it)."""
    figures = probe("mixed", deliveries, vaults=200, policies=8)
    kept = figures["retained_bytes_per_event"]
    print(f"state size, {figures['events']:.0f} mixed deliveries over 200 vaults: "
          f"{figures['state_bytes'] / figures['events']:,.0f} bytes per event with everything kept; after retention "
          f"prunes the first half, {kept:,.0f} bytes per retained event above "
          f"{figures['never_pruned_bytes'] / 1e3:,.0f} kB that retention never prunes (baselines, open findings) "
          f"- target <= 600: {verdict(kept <= 600)} (the first goal, <= 300: {verdict(kept <= 300)})")


# events, vaults, policies per vault; the largest runs only with --scale-large (they take minutes).
SCALE_RUNS = [(5_000, 200, 10), (50_000, 200, 10), (5_000, 200, 1_000), (5_000, 5_000, 10), (50_000, 5_000, 10)]
SCALE_LARGE_RUNS = [(200_000, 200, 10), (200_000, 5_000, 10), (50_000, 200, 1_000)]


def scaling(large: bool) -> None:
    """events/s and peak memory of the mixed load as it grows, each run in a fresh process."""
    print("scaling (mixed load, fresh process per run; events/s wall and per CPU second, peak resident):")
    print("| events | vaults | policies per vault | events/s | events per CPU s | peak MB | state bytes/event |")
    print("|---|---|---|---|---|---|---|")
    for events, vaults, policies in SCALE_RUNS + (SCALE_LARGE_RUNS if large else []):
        f = probe("mixed", events, vaults, policies)
        print(f"| {events:,} | {vaults:,} | {policies:,} | {f['events'] / f['wall_seconds']:,.0f} | "
              f"{f['events'] / f['cpu_seconds']:,.0f} | {f['peak_kib'] / 1024:,.0f} | "
              f"{f['state_bytes'] / f['events']:,.0f} |", flush=True)
    if not large:
        print(f"(not run: {', '.join(f'{e:,} events/{v:,} vaults/{p:,} policies' for e, v, p in SCALE_LARGE_RUNS)};"
              " add --scale-large)")


PEER_VENV = ROOT / ".bench-venv" / "c7n-azure"  # a throwaway virtualenv for the peer, made here on first use


def peer_python() -> Path | None:
    """Cloud Custodian's Azure provider in its own virtualenv (its pins are not kvguard's), or None
    with the reason printed when it cannot be installed."""
    python = PEER_VENV / "bin" / "python"
    marker = PEER_VENV / ".installed"
    if marker.exists():
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True, capture_output=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "c7n-azure"], check=True,
                       capture_output=True, text=True)
    except subprocess.CalledProcessError as error:
        print(f"cold start comparison skipped: c7n-azure could not be installed into {PEER_VENV} "
              f"({(error.stderr or '').strip().splitlines()[-1:] or error})")
        return None
    marker.touch()
    return python


@contextmanager
def deployed_copies() -> Iterator[tuple[Path, Path]]:
    """The app as the Functions host runs it, twice: unzipped from the package built with the
    prepackage hook (its bytecode in it) and from one built without (its modules compiled at each
    start, as before the hook). Flex Consumption mounts the package read-only, so no start can keep
    the bytecode it compiles: every probe runs with PYTHONDONTWRITEBYTECODE for the same reason."""
    from tests.infra.test_packaging import build_package, copy_service, prepackage, unzipped

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        copies = []
        for name, hooked in (("deployed", True), ("from-source", False)):
            service = copy_service(root / f"{name}-service")
            if hooked and prepackage(service).returncode != 0:
                raise SystemExit("the prepackage hook failed")
            copies.append(unzipped(build_package(service, root / f"{name}.zip"), root / name))
        yield copies[0], copies[1]


READ_ONLY = {"PYTHONDONTWRITEBYTECODE": "1"}


def cold_start(deployed: Path, from_source: Path, runs: int = 7) -> None:
    # Resident memory now (VmRSS), not the high-water mark: Linux carries ru_maxrss over from the
    # parent through fork and exec, so it would report this benchmark's own size.
    # The rule catalog loads when the pipeline is first built, not on import: it is timed here too,
    # so the figure is what a worker pays before it can judge its first event.
    ours = ("import time; t = time.perf_counter(); import function_app; from kvguard import catalog; "
            "catalog.load(); d = time.perf_counter() - t; "
            "rss = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')][0]; print(d, rss)")
    peer = ("import time; t = time.perf_counter(); import c7n_azure.function; d = time.perf_counter() - t; "
            "rss = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')][0]; print(d, rss)")
    peer_exe = peer_python()
    times: list[float] = []
    rss: list[float] = []
    source_times: list[float] = []
    peer_times: list[float] = []
    peer_rss: list[float] = []
    for _ in range(runs):  # interleaved, so all see the same machine
        t, m = _fresh_processes(ours, 1, READ_ONLY, cwd=deployed)
        times += t
        rss += m
        source_times += _fresh_processes(ours, 1, READ_ONLY, cwd=from_source)[0]
        if peer_exe is not None:
            t, m = _fresh_processes(peer, 1, {}, python=str(peer_exe), cwd=Path(tempfile.gettempdir()))
            peer_times += t
            peer_rss += m
    ours_s, ours_mb, source_s = statistics.median(times), statistics.median(rss), statistics.median(source_times)
    print(f"cold start, the package as deployed (its bytecode in it): import function_app + catalog.load() median "
          f"{ours_s:.3f} s over {runs} fresh processes (min {min(times):.3f}), resident memory after import median "
          f"{ours_mb:.1f} MB - target <= 45 MB: {verdict(ours_mb <= 45)}; a package without bytecode (compiled "
          f"at each start) median {source_s:.3f} s = {source_s / ours_s:.2f}x")
    if peer_times:
        peer_s = statistics.median(peer_times)
        ratio = ours_s / peer_s
        print(f"cold start peer: import c7n_azure.function median {peer_s:.3f} s (its bytecode installed by pip), "
              f"{statistics.median(peer_rss):.1f} MB, interleaved in the same run; kvguard = {ratio:.2f}x of it "
              f"(without bytecode {source_s / peer_s:.2f}x) - target <= 0.25x: {verdict(ratio <= 0.25)}")


# A syntactically valid connection string to an address nothing listens on: configuring the exporter
# costs the same, and nothing leaves the machine.
TELEMETRY_OFF = {"APPLICATIONINSIGHTS_CONNECTION_STRING": ""}
TELEMETRY_ON = {"APPLICATIONINSIGHTS_CONNECTION_STRING":
                "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://127.0.0.1:9/"}


def telemetry_start(deployed: Path, runs: int = 7) -> None:
    """What the first invocation pays to set up its observer, with and without Application Insights:
    import function_app, load the catalog, then build the observer (OpenTelemetry is configured
    there, lazily); the package as deployed."""
    probe = ("import time; t = time.perf_counter(); import function_app; from kvguard import catalog, runtime; "
             "catalog.load(); runtime.observer(); d = time.perf_counter() - t; "
             "rss = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')][0]; print(d, rss)")
    for label, env in (("without", TELEMETRY_OFF), ("with", TELEMETRY_ON)):
        times, rss = _fresh_processes(probe, runs, {**READ_ONLY, **env}, cwd=deployed)
        print(f"first invocation setup {label} APPLICATIONINSIGHTS_CONNECTION_STRING: import function_app, "
              f"catalog and observer median {statistics.median(times):.3f} s over {runs} fresh processes "
              f"(min {min(times):.3f}), resident memory median {statistics.median(rss):.1f} MB")


def _fresh_processes(probe: str, runs: int, env: dict[str, str], python: str = sys.executable,
                     cwd: Path = ROOT) -> tuple[list[float], list[float]]:
    environment = {**os.environ, **env}
    times, rss = [], []
    for _ in range(runs):
        out = subprocess.run([python, "-c", probe], cwd=cwd, capture_output=True, text=True, check=True,
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
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; the median is reported")
    parser.add_argument("--scale", action="store_true", help="also the scaling table (a few minutes)")
    parser.add_argument("--scale-large", action="store_true", help="the scaling table with its 200k-event runs")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    pipeline_cpu(args.events, args.runs)
    mixed_replay(args.events, args.runs)
    large_vault(2000)
    state_size(args.events)
    activity_records(args.events)
    with deployed_copies() as (deployed, from_source):
        cold_start(deployed, from_source)
        telemetry_start(deployed)
    if args.scale or args.scale_large:
        scaling(args.scale_large)


if __name__ == "__main__":
    main()
