"""A burst on one vault: 50 events delivered at once to 4 workers. Not a timed test.

    .venv/bin/python bench/burst.py [--runs 3] [--events 50] [--workers 4] [--retry-delay 10]
                                    (also run by `make bench`)

Worker processes share one Table Storage state (Azurite) and remediate against the HTTPS fake of
ARM, Defender and an Event Grid topic, each request held for the latencies of
`bench/production.py` (ARM GET 100 ms, ARM write 400 ms, Defender PUT 200 ms, Event Grid POST
40 ms, Table Storage 8 ms). Each worker takes the raw Event Grid JSON the way the Python worker
decodes it and hands it to `function_app.on_vault_event`, one delivery at a time.

The burst: one hardened vault gets 50 writes in quick succession, every fifth a rogue access-policy
grant by an intruder of its own, the others benign tag changes by the vault's owner; then their 50
events arrive together (Event Grid pushes them side by side). Per run, on a fresh state:

- one after another: one worker handles the 50 events in order; the time until the last is done;
- burst: all 50 are handed at once to `--workers` workers; the time until every event is decided
  (handled without raising). The driver plays Event Grid: a delivery that raised is delivered again
  after `--retry-delay` seconds, Event Grid's first retry delay (10 s, real, by default; Event
  Grid waits 30 s, 1 min, 5 min … before the later retries, so a second retry here comes sooner
  than it would in Azure: the figure is a lower bound of the wait before the change).

It prints both times, their ratio (target ≤ 1.5×) and the most retries of one delivery (target
≤ 1), medians over the runs, and the machine. Every run checks that each rogue grant was reverted
exactly once and that every event has its audit record; the script exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import copy
import heapq
import multiprocessing
import os
import queue
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.production import (  # noqa: E402
    KVGUARD,
    LATENCY,
    ROGUE_GRANT,
    TABLE_LATENCY,
    TOPIC_KEY,
    CountingTransport,
    event_json,
    intruder,
    owner,
    vault_doc,
    vault_id,
)
from bench.run import machine  # noqa: E402

BURST_VAULT = 0  # the vault of the burst; the workers warm up on vaults 1, 2, …
GRANT_EVERY = 5  # every fifth write of the burst is a rogue grant
RATIO_TARGET = 1.5
RETRY_TARGET = 1
READY_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class Setup:
    """What a worker process needs to reach the services."""

    arm: str
    ca: str
    tables: str
    prefix: str


@dataclass(frozen=True)
class Burst:
    """The burst's events (raw Event Grid JSON, in the order they happened) and its rogue grants."""

    events: list[str]
    rogues: list[str]


@dataclass
class Phase:
    """One way of handling the burst, measured: the seconds until every event was decided and the
    attempts each delivery took."""

    seconds: float
    attempts: list[int]
    failed: list[str] = field(default_factory=list)

    @property
    def most_retries(self) -> int:
        return max(self.attempts) - 1


def burst(events: int) -> Burst:
    """`events` writes to the burst vault: a rogue grant by a new intruder every `GRANT_EVERY`th
    (the third, the eighth, …), a tag change by the owner otherwise."""
    texts, rogues = [], []
    for number in range(events):
        if number % GRANT_EVERY == 2:
            rogue = intruder(1000 + number)
            rogues.append(rogue)
            texts.append(event_json(BURST_VAULT, rogue, "add"))
        else:
            texts.append(event_json(BURST_VAULT, owner(BURST_VAULT), "write"))
    return Burst(texts, rogues)


def world_after(burst_: Burst) -> dict[str, Any]:
    """The burst vault once every write of the burst has landed: its grants added, its tag changed."""
    doc = vault_doc(BURST_VAULT)
    doc["tags"]["costCenter"] = f"cc-{uuid.uuid4().hex[:6]}"
    for rogue in burst_.rogues:
        doc["properties"]["accessPolicies"].append({**copy.deepcopy(ROGUE_GRANT), "objectId": rogue})
    return doc


# ---- the worker processes -------------------------------------------------------------------------


def work(index: int, setup: Setup, tasks: Any, results: Any) -> None:
    """One worker: the Functions app's pipeline on the shared state, warmed up on a vault of its own
    without latency, then one delivery at a time until told to stop."""
    os.environ["REQUESTS_CA_BUNDLE"] = setup.ca
    from azure.functions.eventgrid import EventGridEventInConverter
    from azure.functions.meta import Datum

    import function_app
    from kvguard import runtime
    from kvguard.adapters.tables import TablesStateStore
    from kvguard.ports import TransientError
    from kvguard.settings import Settings
    from tests.integration.armfake import FakeCredential

    settings = Settings(
        mode="remediate", state_backend="tables", tables_connection=setup.tables, arm_endpoint=setup.arm,
        own_principal_ids=[KVGUARD], defender=True, eventgrid_topic_endpoint=f"{setup.arm}/api/events",
        eventgrid_topic_key=TOPIC_KEY,
    )
    transport = CountingTransport()
    store = TablesStateStore.from_connection_string(setup.tables, setup.prefix, transport=transport)
    runtime.install(runtime.build(settings, credential=FakeCredential(), store=store))
    functions = {str(fn.get_function_name()): fn for fn in function_app.app.get_functions()}
    handler = functions["on_vault_event"].get_user_function()

    def deliver(text: str) -> None:
        handler(EventGridEventInConverter.decode(Datum(type="json", value=text), trigger_metadata=None))

    deliver(event_json(1 + index, owner(1 + index), "write"))
    transport.delay = TABLE_LATENCY
    results.put(("ready", index, ""))
    while (task := tasks.get()) is not None:
        number, text = task
        try:
            deliver(text)
            results.put(("ok", number, ""))
        except TransientError as error:
            results.put(("raised", number, str(error)))
        except Exception:  # nothing but TransientError may reach the host
            results.put(("unhandled", number, traceback.format_exc()))
    store.close()


def phase(fake: Any, tables: str, workers: int, burst_: Burst, retry_delay: float, run: int) -> Phase:
    """Hand the burst to `workers` fresh worker processes on a fresh state, play Event Grid until
    every event is decided, and check what they did."""
    from kvguard.adapters.tables import TablesStateStore

    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as scratch:
        setup = Setup(fake.base_url, str(fake.write_ca_bundle(Path(scratch) / "ca.pem")), tables,
                      f"burst{run}w{workers}{uuid.uuid4().hex[:6]}")
        store = TablesStateStore.from_connection_string(tables, setup.prefix)
        fake.latency = None
        for index in range(1 + workers):
            fake.add_vault(vault_doc(index))
            store.put_baseline(vault_id(index), vault_doc(index), None)
        tasks, results = context.Queue(), context.Queue()
        processes = [context.Process(target=work, args=(i, setup, tasks, results)) for i in range(workers)]
        for process in processes:
            process.start()
        try:
            for _ in processes:
                kind, index, detail = results.get(timeout=READY_TIMEOUT_SECONDS)
                if kind != "ready":
                    raise SystemExit(f"worker {index} did not warm up: {detail}")
            fake.add_vault(world_after(burst_))
            fake.latency = LATENCY
            sent_before = len(fake.requests)
            measured = _deliver(burst_, tasks, results, retry_delay)
            fake.latency = None
        finally:
            for _ in processes:
                tasks.put(None)
            for process in processes:
                process.join()
        measured.failed += _checked(fake, store, burst_, fake.requests[sent_before:])
        store.close()
    return measured


def _deliver(burst_: Burst, tasks: Any, results: Any, retry_delay: float) -> Phase:
    """Event Grid's part: every event delivered at once, a delivery that raised delivered again
    `retry_delay` seconds later; returns once every event is decided."""
    attempts = [1] * len(burst_.events)
    started = time.perf_counter()
    for number, text in enumerate(burst_.events):
        tasks.put((number, text))
    retries: list[tuple[float, int]] = []
    decided, failed, last = 0, [], started
    while decided < len(burst_.events):
        now = time.perf_counter()
        while retries and retries[0][0] <= now:
            _, number = heapq.heappop(retries)
            attempts[number] += 1
            tasks.put((number, burst_.events[number]))
        wait = retries[0][0] - now if retries else 5.0
        try:
            kind, number, detail = results.get(timeout=max(0.001, min(wait, 5.0)))
        except queue.Empty:
            continue
        if kind == "raised":
            heapq.heappush(retries, (time.perf_counter() + retry_delay, number))
            continue
        if kind == "unhandled":
            failed.append(f"event {number}: unhandled exception\n{detail}")
        decided, last = decided + 1, time.perf_counter()
    return Phase(last - started, attempts, failed)


def _checked(fake: Any, store: Any, burst_: Burst, sent: list[Any]) -> list[str]:
    """What must hold after the burst: every rogue grant gone and reverted once, and one audit
    record per event."""
    failed = []
    left = {entry["objectId"] for entry in fake.vault(vault_id(BURST_VAULT))["properties"]["accessPolicies"]}
    for rogue in burst_.rogues:
        if rogue in left:
            failed.append(f"rogue grant {rogue} was not reverted")
    removes = [r for r in sent if r.method == "PUT" and r.path.lower().endswith("/accesspolicies/remove")]
    removed = [entry.get("objectId") for r in removes
               for entry in (r.json.get("properties") or {}).get("accessPolicies", [])]
    doubled = {p for p in removed if removed.count(p) > 1}
    if doubled:
        failed.append(f"reverted more than once: {sorted(doubled)}")
    audited = [record.event_id for record in store.list_audit(vault_id(BURST_VAULT))]
    if len(audited) != len(burst_.events) or len(set(audited)) != len(audited):
        failed.append(f"{len(audited)} audit records ({len(set(audited))} events) for {len(burst_.events)} events")
    return failed


# ---- the report -----------------------------------------------------------------------------------


def report(serial: list[Phase], bursts: list[Phase], workers: int, events: int, retry_delay: float) -> bool:
    """Print the figures beside their targets; whether every check held."""
    ratios = [b.seconds / s.seconds for s, b in zip(serial, bursts, strict=True)]
    ratio = statistics.median(ratios)
    retries = max(b.most_retries for b in bursts)
    redelivered = [sum(a - 1 for a in b.attempts) for b in bursts]

    def verdict(met: bool) -> str:
        return "met" if met else "NOT MET"

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):,.2f} s ({min(values):,.2f}-{max(values):,.2f})"

    print(f"machine: {machine()}")
    print(f"burst on one vault: {events} events ({len(burst(events).rogues)} rogue access-policy grants, the rest "
          f"benign tag changes) delivered at once; function_app.on_vault_event, remediate mode, Azure Tables "
          f"(Azurite) and the HTTPS ARM fake; latencies ARM GET {LATENCY.arm_read * 1e3:.0f} ms, ARM write "
          f"{LATENCY.arm_write * 1e3:.0f} ms, Defender PUT {LATENCY.assessment_put * 1e3:.0f} ms, Event Grid POST "
          f"{LATENCY.event_grid_post * 1e3:.0f} ms, Table Storage {TABLE_LATENCY * 1e3:.0f} ms; a raised delivery "
          f"is redelivered after {retry_delay:g} s; medians of {len(serial)} runs (min-max)")
    print(f"one after another, 1 worker: {spread([s.seconds for s in serial])}")
    print(f"burst, {workers} workers, until every event is decided: {spread([b.seconds for b in bursts])}")
    print(f"ratio: {ratio:.2f}x (per run {', '.join(f'{r:.2f}' for r in ratios)}) - target <= {RATIO_TARGET}x: "
          f"{verdict(ratio <= RATIO_TARGET)}")
    print(f"most retries of one delivery: {retries} (redeliveries per run {', '.join(map(str, redelivered))}) - "
          f"target <= {RETRY_TARGET}: {verdict(retries <= RETRY_TARGET)}")
    failed = [problem for p in [*serial, *bursts] for problem in p.failed]
    for problem in failed:
        print(f"CHECK FAILED: {problem}", file=sys.stderr)
    return not failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--retry-delay", type=float, default=10.0,
                        help="seconds before a delivery that raised comes again (Event Grid's first retry: 10)")
    args = parser.parse_args()
    from tests.integration.armfake import arm_fake
    from tests.integration.azurite import running_azurite

    burst_ = burst(args.events)
    serial, bursts = [], []
    with tempfile.TemporaryDirectory() as scratch, running_azurite(Path(scratch)) as azurite, \
            arm_fake(eventgrid_key=TOPIC_KEY) as fake:
        for run in range(args.runs):
            serial.append(phase(fake, azurite.connection_string, 1, burst_, args.retry_delay, run))
            bursts.append(phase(fake, azurite.connection_string, args.workers, burst_, args.retry_delay, run))
            print(f"  run {run + 1}: one after another {serial[-1].seconds:.2f} s, burst {bursts[-1].seconds:.2f} s, "
                  f"most retries {bursts[-1].most_retries}", flush=True)
    return 0 if report(serial, bursts, args.workers, args.events, args.retry_delay) else 1


if __name__ == "__main__":
    sys.exit(main())
