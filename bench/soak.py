"""Soak: kvguard's promises under faults and scale-out. Not a timed test.

    .venv/bin/python bench/soak.py [--deliveries 10000] [--vaults 200] [--workers 3] [--seed 8]

Worker processes share one Table Storage state (Azurite) and remediate against the HTTPS ARM fake,
which fails a share of all calls (429, 500, a write applied and then answered 500, a timeout);
the state store fails a share of its writes too (before or after the write lands). The driver
plays Event Grid: it changes the world (rogue access-policy grants, benign writes), delivers each
event, some twice, some late and out of order, some malformed, and redelivers every delivery
that raised (after a short pause rather than Event Grid's minutes). At the end it checks what
kvguard promises and exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import heapq
import json
import multiprocessing
import queue
import random
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kvguard.ids import vault_key  # noqa: E402
from tests.integration.armfake import ArmFake, FakeCredential, Recorded  # noqa: E402

TENANT = "4c3b2a19-0f8e-4d7c-9b6a-5f4e3d2c1b0a"
SUBSCRIPTION = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
TEAM = "d1c2b3a4-9586-4a7b-8c9d-e0f1a2b3c4d5"
CALLERS = [str(uuid.UUID(int=0xC0FFEE00 + i, version=4)) for i in range(12)]
ARM_ERROR = {"error": {"code": "InternalServerError", "message": "Something went wrong."}}
MAX_ATTEMPTS = 30  # Event Grid's default before it dead-letters
LEASE = timedelta(seconds=5)
ARM_TIMEOUT_SECONDS = 0.25


# ---- the world and the event stream ---------------------------------------------------------------


def vault_id(index: int) -> str:
    return (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-soak/providers/Microsoft.KeyVault/vaults/"
            f"kv-soak-{index:03d}")


def vault_doc(index: int) -> dict[str, Any]:
    return {
        "id": vault_id(index),
        "name": f"kv-soak-{index:03d}",
        "type": "Microsoft.KeyVault/vaults",
        "location": "westeurope",
        "tags": {"criticality": "high" if index % 4 == 0 else "normal"},
        "properties": {
            "tenantId": TENANT,
            "sku": {"family": "A", "name": "standard"},
            "accessPolicies": [{"tenantId": TENANT, "objectId": TEAM,
                                "permissions": {"keys": ["Get", "WrapKey", "UnwrapKey"]}}],
            "enableRbacAuthorization": False,
            "enableSoftDelete": True,
            "softDeleteRetentionInDays": 90,
            "enablePurgeProtection": True,
            "publicNetworkAccess": "Disabled",
            "networkAcls": {"defaultAction": "Deny", "bypass": "None", "ipRules": [], "virtualNetworkRules": []},
        },
    }


def envelope(event_id: str, vault: str, caller: str, grant: bool) -> dict[str, Any]:
    operation = "Microsoft.KeyVault/vaults/accessPolicies/write" if grant else "Microsoft.KeyVault/vaults/write"
    uri = f"{vault.replace('resourceGroups', 'resourcegroups')}/accessPolicies/add" if grant else vault
    return {
        "id": event_id,
        "topic": f"/subscriptions/{SUBSCRIPTION}",
        "subject": uri,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-27T10:00:00Z",
        "dataVersion": "2",
        "metadataVersion": "1",
        "data": {
            "authorization": {"scope": uri, "action": operation, "evidence": {"principalId": caller}},
            "claims": {"oid": caller, "http://schemas.microsoft.com/identity/claims/tenantid": TENANT},
            "resourceUri": uri,
            "operationName": operation,
            "status": "Succeeded",
            "subscriptionId": SUBSCRIPTION,
            "tenantId": TENANT,
        },
    }


MALFORMED = [  # each carries a marker of its own, to find its record among the rejected payloads
    lambda marker: f"<html>502 Bad Gateway {marker}</html>",
    lambda marker: json.dumps({"id": marker, "eventType": 7}),
    lambda marker: json.dumps([{"id": marker, "subject": None, "data": []}]),
    lambda marker: '{"id": "' + marker,
]


@dataclass
class Change:
    """One step of the world: an optional rogue grant to add, then the event that reports it."""

    vault: int
    rogue: str | None
    raw: str


@dataclass(order=True)
class Delivery:
    due: float
    seq: int
    raw: str = field(compare=False)
    event_id: str | None = field(compare=False)
    malformed: bool = field(compare=False)
    change: Change | None = field(compare=False, default=None)
    attempts: int = field(compare=False, default=0)


def plan(seed: int, deliveries: int, vaults: int) -> tuple[list[Delivery], dict[str, int]]:
    """The delivery schedule (by step) and what it holds. About 60 % of the valid events report a
    rogue grant, the rest benign writes; 22 % of the deliveries are duplicates, 6 % malformed, 12 %
    delivered late (after events that happened later)."""
    rng = random.Random(seed)
    schedule: list[Delivery] = []
    originals: list[Delivery] = []
    counts: Counter[str] = Counter()
    seq = 0
    while len(schedule) < deliveries:
        seq += 1
        roll = rng.random()
        if roll < 0.06:
            marker = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            schedule.append(Delivery(seq, seq, rng.choice(MALFORMED)(marker), marker, True))
            counts["malformed"] += 1
            continue
        if roll < 0.28 and originals:
            twin = rng.choice(originals[-50:])
            schedule.append(Delivery(seq + rng.randint(0, 20), seq, twin.raw, twin.event_id, False))
            counts["duplicates"] += 1
            continue
        index = rng.randrange(vaults)
        grant = rng.random() < 0.6
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        rogue = str(uuid.UUID(int=rng.getrandbits(128), version=4)) if grant else None
        raw = json.dumps(envelope(event_id, vault_id(index), rng.choice(CALLERS), grant))
        late = rng.random() < 0.12
        delivery = Delivery(seq + (rng.randint(3, 30) if late else 0), seq, raw, event_id, False,
                            Change(index, rogue, raw))
        counts["late"] += late
        counts["grants"] += grant
        schedule.append(delivery)
        originals.append(delivery)
    return schedule, dict(counts)


# ---- faults ---------------------------------------------------------------------------------------


class ChaosArmFake(ArmFake):
    """The ARM fake, failing `rate` of the ARM and Defender calls in one of four ways."""

    KINDS = ("429", "500", "applied-then-500", "timeout")

    def __init__(self, rate: float, seed: int) -> None:
        super().__init__()
        self.rate = rate
        self._chaos = random.Random(seed)
        self.calls = 0
        self.faults: Counter[str] = Counter()
        # Per vault, the Unhealthy assessments that landed (their additionalData as JSON): what
        # shows that a reverted grant was alerted too, the alerts going out beside the revert.
        self.alerted: dict[str, list[str]] = {}

    def grant(self, vault: str, entry: dict[str, Any]) -> None:
        """An attacker's `accessPolicies/add`, atomic with kvguard's own writes to the vault."""
        with self._lock:
            self.vaults[vault_key(vault)]["properties"]["accessPolicies"].append(entry)

    def handle(self, request: Recorded) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self.calls += 1
            kind = self._chaos.choice(self.KINDS) if self._chaos.random() < self.rate else None
            if kind:
                self.faults[kind] += 1
            self.requests.clear()  # a long run: the record of requests is not needed
        if kind in (None, "applied-then-500"):
            self._note_alert(request)
        if kind is None:
            return super().handle(request)
        if kind == "429":
            return 429, {"error": {"code": "TooManyRequests", "message": "Slow down."}}, {"Retry-After": "0"}
        if kind == "applied-then-500":
            super().handle(request)
        if kind == "timeout":
            time.sleep(ARM_TIMEOUT_SECONDS * 1.5)
        return 500, ARM_ERROR, {}


    def _note_alert(self, request: Recorded) -> None:
        resource, marker, _ = request.path.partition("/providers/Microsoft.Security/assessments/")
        if request.method != "PUT" or not marker:
            return
        properties = request.json.get("properties") or {}
        if (properties.get("status") or {}).get("code") == "Unhealthy":
            with self._lock:
                self.alerted.setdefault(vault_key(resource), []).append(json.dumps(properties.get("additionalData")))


class FlakyStore:
    """A state store whose writes fail `rate` of the time, half before and half after they land.
    A batch's writes land together when it ends: its end fails the same way (before or after the
    transaction), and a write inside it that fails after landing stands for a transaction refused
    and written one by one, failing part way (what was held back lands, then the failure)."""

    WRITES = frozenset({"claim", "claim_beside", "renew", "renew_each", "complete", "release", "put_baseline",
                        "append_audit", "record_rejected", "open_finding", "close_finding", "add_mark",
                        "begin_action", "finish_action", "put_outbox"})

    def __init__(self, store: Any, rate: float, seed: int) -> None:
        self._store = store
        self._rate = rate
        self._rng = random.Random(seed)
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        from kvguard.ports import TransientError

        attribute = getattr(self._store, name)
        if name == "batch":
            return self._flaky_batch
        if name not in self.WRITES:
            return attribute

        def flaky(*args: Any, **kwargs: Any) -> Any:
            roll = self._rng.random()
            if roll < self._rate / 2:
                self.failures += 1
                raise TransientError(f"table storage ({name}): HTTP 503 before the write")
            result = attribute(*args, **kwargs)
            if roll < self._rate:
                self.failures += 1
                self._store._flush()
                raise TransientError(f"table storage ({name}): HTTP 503 after the write")
            return result

        return flaky

    @contextmanager
    def _flaky_batch(self) -> Iterator[None]:
        from kvguard.ports import TransientError

        roll = self._rng.random()
        with self._store.batch():
            yield
            if roll < self._rate / 2:
                self.failures += 1
                raise TransientError("table storage (batch): HTTP 503 before the transaction")
        if roll < self._rate:
            self.failures += 1
            raise TransientError("table storage (batch): HTTP 503 after the transaction")


# ---- workers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    arm: str
    ca: str
    tables: str
    prefix: str
    storage_fault_rate: float
    seed: int


def store_on(setup: Setup) -> Any:
    from kvguard.adapters.tables import TablesStateStore

    return TablesStateStore.from_connection_string(setup.tables, setup.prefix, retry_total=1,
                                                   retry_backoff_factor=0.01, retry_backoff_max=0.05)


def policy() -> Any:
    from kvguard.policy import Policy

    # Every change here is an attack on its own: no circuit breaker stands between it and its revert.
    return Policy.model_validate({"mode": "remediate", "circuit_breaker": {"max_remediations": 1_000_000}})


def work(index: int, setup: Setup, tasks: Any, results: Any) -> None:
    """One worker process: handle deliveries until told to stop; report every outcome or raise."""
    from kvguard.adapters.arm import ArmVaultGateway
    from kvguard.adapters.defender import DefenderAlertSink
    from kvguard.pipeline import Pipeline
    from kvguard.ports import TransientError

    options: dict[str, Any] = {"connection_verify": setup.ca, "retry_total": 2, "retry_backoff_factor": 0.01,
                               "retry_backoff_max": 0.05, "read_timeout": ARM_TIMEOUT_SECONDS}
    store = FlakyStore(store_on(setup), setup.storage_fault_rate, setup.seed * 100 + index)
    pipeline = Pipeline(
        gateway=ArmVaultGateway(FakeCredential(), endpoint=setup.arm, **options), store=store, policy=policy(),
        sinks={"raise_defender_alert": DefenderAlertSink(FakeCredential(), endpoint=setup.arm, **options)},
        lease=LEASE,
    )
    while (task := tasks.get()) is not None:
        seq, raw = task
        try:
            outcomes = pipeline.handle(raw)
            results.put((seq, "ok", [o.outcome for o in outcomes]))
        except TransientError as error:
            results.put((seq, "raised", str(error)))
        except Exception:  # counted: nothing but TransientError may reach the host
            results.put((seq, "unhandled", traceback.format_exc()))
    results.put((None, "storage-faults", store.failures))


# ---- the run and its checks -----------------------------------------------------------------------


def run(*, deliveries: int, vaults: int, workers: int, seed: int, tables: str, prefix: str,
        arm_fault_rate: float = 0.22, storage_fault_rate: float = 0.01, quiet: bool = False) -> dict[str, Any]:
    """Run the soak against the Table Storage at `tables`; the figures and the failed checks."""
    started = time.monotonic()
    fake = ChaosArmFake(arm_fault_rate, seed)
    fake.start()
    assert fake._server is not None
    fake._server.handle_error = lambda request, address: None  # type: ignore[method-assign]  # clients gone
    context = multiprocessing.get_context("spawn")
    try:
        with tempfile.TemporaryDirectory() as scratch:
            ca = str(fake.write_ca_bundle(Path(scratch) / "ca.pem"))
            setup = Setup(fake.base_url, ca, tables, prefix, storage_fault_rate, seed)
            store = store_on(setup)
            for index in range(vaults):
                fake.add_vault(vault_doc(index))
                store.put_baseline(vault_id(index), vault_doc(index), None)
            schedule, counts = plan(seed, deliveries, vaults)
            tasks, results = context.Queue(), context.Queue()
            processes = [context.Process(target=work, args=(i, setup, tasks, results)) for i in range(workers)]
            for process in processes:
                process.start()
            tally = drive(fake, schedule, tasks, results, workers, quiet)
            for _ in processes:
                tasks.put(None)
            storage_faults = 0
            stopped = 0
            while stopped < workers:
                _, kind, value = results.get()
                if kind == "storage-faults":
                    storage_faults += value
                    stopped += 1
            for process in processes:
                process.join()
            figures = check(fake, store, schedule, tally, vaults)
    finally:
        fake.stop()
    figures.update(counts)
    figures.update({
        "deliveries": len(schedule), "vaults": vaults, "workers": workers, "seed": seed,
        "arm calls": fake.calls, "arm calls failed": sum(fake.faults.values()),
        "arm faults": dict(fake.faults), "storage faults": storage_faults,
        "seconds": round(time.monotonic() - started, 1),
    })
    return figures


@dataclass
class Tally:
    redeliveries: int = 0
    unhandled: list[str] = field(default_factory=list)
    done: dict[int, list[str]] = field(default_factory=dict)
    gave_up: list[int] = field(default_factory=list)


def drive(fake: ChaosArmFake, schedule: list[Delivery], tasks: Any, results: Any, workers: int,
          quiet: bool) -> Tally:
    """Play Event Grid: change the world step by step, deliver what is due, keep a few deliveries in
    flight per worker, and redeliver whatever raised (after a short pause, at most MAX_ATTEMPTS)."""
    tally = Tally()
    by_seq = {d.seq: d for d in schedule}
    due: list[tuple[float, int]] = [(d.due, d.seq) for d in schedule]
    heapq.heapify(due)
    changes = sorted((d for d in schedule if d.change is not None), key=lambda d: d.seq)
    applied, in_flight, step = 0, 0, 0.0
    retry: list[tuple[float, int]] = []
    capacity = 4 * workers
    while due or retry or in_flight or applied < len(changes):
        while applied < len(changes) and changes[applied].seq <= step:
            add_rogue_grant(fake, changes[applied].change)
            applied += 1
        while in_flight < capacity:
            if retry and retry[0][0] <= time.monotonic():
                _, seq = heapq.heappop(retry)
            elif due and due[0][0] <= step:
                _, seq = heapq.heappop(due)
            else:
                break
            by_seq[seq].attempts += 1
            tasks.put((seq, by_seq[seq].raw))
            in_flight += 1
        if not (due and due[0][0] <= step):
            step += 1  # everything due so far is out: the world moves on
        if in_flight == 0:
            if not due and retry:
                time.sleep(0.02)
            continue
        try:
            seq, kind, value = results.get(timeout=0.05 if in_flight < capacity else 5)
        except queue.Empty:
            continue
        in_flight -= 1
        delivery = by_seq[seq]
        if kind == "ok":
            tally.done[seq] = value
            if not quiet and len(tally.done) % 1000 == 0:
                print(f"  {len(tally.done)} deliveries done, {tally.redeliveries} redelivered", flush=True)
        elif kind == "unhandled":
            tally.unhandled.append(value)
        elif delivery.attempts >= MAX_ATTEMPTS:
            tally.gave_up.append(seq)
        else:
            tally.redeliveries += 1
            heapq.heappush(retry, (time.monotonic() + random.uniform(0.05, 0.3), seq))
    return tally


def add_rogue_grant(fake: ChaosArmFake, change: Change | None) -> None:
    if change is not None and change.rogue is not None:
        fake.grant(vault_id(change.vault), {"tenantId": TENANT, "objectId": change.rogue,
                                            "permissions": {"secrets": ["Get", "List"]}})


def check(fake: ChaosArmFake, store: Any, schedule: list[Delivery], tally: Tally, vaults: int) -> dict[str, Any]:
    from kvguard.detection import assessment_name
    from kvguard.vault import VaultConfig, diff

    rogues = {d.change.rogue: d.change.vault for d in schedule if d.change is not None and d.change.rogue}
    reverted: Counter[str] = Counter()
    audit = store.list_audit()
    for record in audit:
        for action in record.outcome.get("actions", []):
            if action["handler"] == "revert_access_policy" and action["status"] == "applied":
                reverted.update({entry["objectId"] for entry in action["before"] or [] if entry})
    final = {i: VaultConfig.from_arm(fake.vault(vault_id(i))) for i in range(vaults)}
    still_there = {p for p, v in rogues.items() if final[v].policy_for(f"{p}|") is not None}
    names = {assessment_name(rule): rule for rule in ("KV-AP-01", "KV-AP-02", "KV-AP-03", "KV-ID-05", "KV-ID-06",
                                                     "KV-ID-01", "KV-ID-02", "KV-ID-03", "KV-ID-04")}
    left_unhealthy = 0
    for i in range(vaults):
        open_rules = {f.rule for f in store.open_findings(vault_id(i))}
        for name, rule in names.items():
            assessment = fake.assessment(vault_id(i), name)
            if assessment and assessment["properties"]["status"]["code"] == "Unhealthy" and rule not in open_rules:
                left_unhealthy += 1
    valid = {d.event_id for d in schedule if not d.malformed}  # a malformed one's event_id is its marker
    handled = {by.event_id for by in schedule if by.seq in tally.done and not by.malformed}
    malformed = [d for d in schedule if d.malformed]
    rejected = store.list_rejected()
    figures: dict[str, Any] = {
        "changes": len(rogues),
        "changes detected": sum(1 for p in rogues if reverted[p] >= 1),
        "double reverts": sum(1 for p in rogues if reverted[p] > 1),
        "reverts missing from audit": sum(1 for p in rogues if p not in still_there and reverted[p] == 0),
        "reverted grants never alerted": sum(
            1 for p, v in rogues.items()
            if reverted[p] and not any(p in data for data in fake.alerted.get(vault_key(vault_id(v)), []))
        ),
        "sinks left Unhealthy for resolved conditions": left_unhealthy,
        "lost events": len(valid - handled),
        "malformed delivered": len(malformed),
        "malformed recorded": sum(1 for d in malformed if any(d.event_id in r.raw for r in rejected)),
        "unhandled exceptions": len(tally.unhandled),
        "vaults not in their expected state": sum(
            1 for i in range(vaults) if not diff(VaultConfig.from_arm(vault_doc(i)), final[i]).empty
        ),
        "redeliveries": tally.redeliveries,
        "gave up after 30 attempts": len(tally.gave_up),
        "audit records": len(audit),
    }
    failed = []
    if figures["changes detected"] != figures["changes"]:
        failed.append("changes detected")
    for name in ("double reverts", "reverts missing from audit", "reverted grants never alerted",
                 "sinks left Unhealthy for resolved conditions",
                 "lost events", "unhandled exceptions", "vaults not in their expected state"):
        if figures[name]:
            failed.append(name)
    if figures["malformed recorded"] != figures["malformed delivered"]:
        failed.append("malformed recorded")
    figures["failed checks"] = failed
    doubled = [p for p in rogues if reverted[p] > 1]
    left = sorted(still_there)
    unaudited = [p for p in rogues if p not in still_there and reverted[p] == 0]
    unalerted = [p for p, v in rogues.items()
                 if reverted[p] and not any(p in data for data in fake.alerted.get(vault_key(vault_id(v)), []))]
    for principal in doubled[:3] + left[:3] + unaudited[:3] + unalerted[:3]:
        vault = vault_id(rogues[principal])
        print(f"-- {principal} on {vault.rsplit('/', 1)[-1]}:", file=sys.stderr)
        shown = {"revert_access_policy", *(["raise_defender_alert"] if principal in unalerted else [])}
        for record in store.list_audit(vault):
            actions = [(a["handler"], a["status"], a["detail"][:300], a.get("before"))
                       for a in record.outcome.get("actions", []) if a["handler"] in shown]
            print(f"   {record.at.time()} {record.event_id} {record.outcome.get('reason', '')[:80]} {actions}",
                  file=sys.stderr)
    if tally.unhandled:
        figures["first unhandled"] = tally.unhandled[0]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--vaults", type=int, default=200)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--arm-fault-rate", type=float, default=0.22, help="share of ARM calls that fail")
    parser.add_argument("--storage-fault-rate", type=float, default=0.01, help="share of state writes that fail")
    args = parser.parse_args()
    from tests.integration.azurite import running_azurite

    with tempfile.TemporaryDirectory() as scratch, running_azurite(Path(scratch)) as azurite:
        figures = run(deliveries=args.deliveries, vaults=args.vaults, workers=args.workers, seed=args.seed,
                      tables=azurite.connection_string, prefix="soak", arm_fault_rate=args.arm_fault_rate,
                      storage_fault_rate=args.storage_fault_rate)
    for name, value in figures.items():
        print(f"{name:>46}: {value}")
    return 1 if figures["failed checks"] else 0


if __name__ == "__main__":
    sys.exit(main())
