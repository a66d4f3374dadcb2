"""Production-shaped benchmark: round trips and wall time of one delivery, per kind. Not a timed test.

    .venv/bin/python bench/production.py [--runs 5]      (also run by `make bench`)

`function_app.on_vault_event` is handed raw Event Grid JSON decoded the way the Python worker
decodes it, in remediate mode, on Azure Tables (Azurite) and the local HTTPS fake of ARM, Defender
and an Event Grid topic, over 10 hardened vaults. Every request is held for a typical in-region
latency: ARM GET 100 ms, ARM vault write 400 ms, Defender assessment PUT 200 ms, Event Grid POST
40 ms (in the fake, `Latency`), Table Storage 8 ms (at the Tables client's transport,
`CountingTransport`, which also counts the requests). Per delivery kind it prints the requests each
service received, the median wall time and, for a reverted grant, when the revert landed at ARM,
each beside its target (issue 22).

A delivery kind is measured once per run, each run on its own vault; before the runs one round of
every kind on a vault of its own, without latency, opens the tables and connections as a warm
worker has them.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from azure.core.pipeline.transport import HttpRequest, HttpResponse, HttpTransport, RequestsTransport  # noqa: E402

from bench.run import machine  # noqa: E402
from tests.integration.armfake import ArmFake, Latency, Recorded  # noqa: E402

TABLE_LATENCY = 0.008
LATENCY = Latency(arm_read=0.100, arm_write=0.400, assessment_put=0.200, event_grid_post=0.040)
VAULTS = 10

SUB = "6e5d4c3b-2a19-4f8e-9d7c-b6a594837261"
TENANT = "f2e3d4c5-b6a7-4b8c-9d0e-1f2a3b4c5d6e"
ROGUE = "4d3c2b1a-09f8-4e7d-8c6b-5a4938271605"
KVGUARD = "0b9c8d7e-6f5a-4432-9fed-dcba98765432"
TOPIC_KEY = "bench-topic-key-7a2e"

KINDS = ("quiet change (a tag)", "rogue access policy, reverted", "kvguard's own echo", "redelivery")
# Table Storage requests per delivery kind (issue 22's targets)
TABLE_TARGETS = dict(zip(KINDS, (3, 6, 2, 2), strict=True))


class CountingTransport(HttpTransport):
    """The Tables client's transport: every request as it goes on the wire (a batch is one) is
    counted, then held `delay` seconds, the round trip to Table Storage in the same region, before
    `inner` sends it. Handed to the client as its `transport`, so the SDK's own pipeline (signing,
    retries) runs as in production."""

    def __init__(self, delay: float = 0.0, inner: HttpTransport | None = None) -> None:
        self.delay = delay
        self.requests = 0
        self._inner = inner or RequestsTransport()
        self._lock = threading.Lock()

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        with self._lock:
            self.requests += 1
        if self.delay:
            time.sleep(self.delay)
        return self._inner.send(request, **kwargs)

    def open(self) -> None:
        self._inner.open()

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> CountingTransport:
        self._inner.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self._inner.__exit__(*args)


@dataclass
class Delivery:
    """What one delivery cost: requests per service, wall seconds, and for a revert the seconds
    from the delivery until the revert had landed at ARM (its request received and its write
    latency served)."""

    tables: int
    arm_reads: int
    arm_writes: int
    defender_puts: int
    eventgrid_posts: int
    wall: float
    revert_landed: float | None = None
    defender_concurrent: bool | None = None  # None: fewer than two Defender PUTs


def arm_requests(requests: list[Recorded]) -> dict[str, int]:
    """The requests kvguard sent during one delivery, by the service and kind that answers them."""
    counts = {"arm_reads": 0, "arm_writes": 0, "defender_puts": 0, "eventgrid_posts": 0}
    for request in requests:
        path = request.path.lower()
        if path == "/api/events":
            counts["eventgrid_posts"] += 1
        elif "/providers/microsoft.security/assessments/" in path and request.method == "PUT":
            counts["defender_puts"] += 1
        elif request.method == "GET":
            counts["arm_reads"] += 1
        elif request.method in ("PUT", "PATCH", "DELETE", "POST"):
            counts["arm_writes"] += 1
    return counts


def overlapping(requests: list[Recorded], seconds: float) -> bool:
    """Whether some request arrived while an earlier one (each taking `seconds`) was in flight."""
    starts = sorted(r.received for r in requests)
    return any(later < earlier + seconds for earlier, later in itertools.pairwise(starts))


def owner(index: int) -> str:
    """The team that runs vault `index` and changes it now and then (one per vault: a caller changing
    many vaults is a finding of its own, KV-ID-06, and would make later runs unlike the first)."""
    return str(uuid.UUID(int=0x1B2C3D4E_0000 + index, version=4))


def intruder(index: int) -> str:
    """Who grants themselves access to vault `index`, one per vault for the same reason."""
    return str(uuid.UUID(int=0x8A7F6E5D_0000 + index, version=4))


def vault_id(index: int) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/rg-bench/providers/Microsoft.KeyVault/vaults/kv-bench-{index:02d}"


def vault_doc(index: int, *extra_policies: dict[str, Any]) -> dict[str, Any]:
    """A hardened vault: RBAC off with its owner's key entry, purge protection, no public access."""
    return {
        "id": vault_id(index),
        "name": f"kv-bench-{index:02d}",
        "type": "Microsoft.KeyVault/vaults",
        "location": "westeurope",
        "tags": {"criticality": "high"},
        "properties": {
            "tenantId": TENANT,
            "sku": {"family": "A", "name": "standard"},
            "accessPolicies": [
                {"tenantId": TENANT, "objectId": owner(index),
                 "permissions": {"keys": ["Get", "WrapKey", "UnwrapKey"]}},
                *extra_policies,
            ],
            "enableRbacAuthorization": False,
            "enableSoftDelete": True,
            "softDeleteRetentionInDays": 90,
            "enablePurgeProtection": True,
            "publicNetworkAccess": "Disabled",
            "networkAcls": {"defaultAction": "Deny", "bypass": "None", "ipRules": [], "virtualNetworkRules": []},
            "vaultUri": f"https://kv-bench-{index:02d}.vault.azure.net/",
        },
    }


ROGUE_GRANT = {"tenantId": TENANT, "objectId": ROGUE, "permissions": {"secrets": ["Get", "List"]}}


def event_json(index: int, caller: str, operation: str, request_id: str | None = None) -> str:
    """A ResourceWriteSuccess as Event Grid delivers one element: `operation` is `write` (the vault
    itself) or an access-policy action (`add`, `remove`), sent now with the client request id the
    write carried."""
    uri = vault_id(index).replace("resourceGroups", "resourcegroups")
    action = "Microsoft.KeyVault/vaults/write"
    if operation != "write":
        uri, action = f"{uri}/accessPolicies/{operation}", "Microsoft.KeyVault/vaults/accessPolicies/write"
    return json.dumps({
        "id": str(uuid.uuid4()),
        "topic": f"/subscriptions/{SUB}",
        "subject": uri,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "dataVersion": "2",
        "metadataVersion": "1",
        "data": {
            "authorization": {"scope": uri, "action": action,
                              "evidence": {"role": "Contributor", "principalId": caller, "principalType": "User"}},
            "claims": {"oid": caller, "http://schemas.microsoft.com/identity/claims/tenantid": TENANT,
                       "ipaddr": "198.51.100.23"},
            "correlationId": str(uuid.uuid4()),
            "httpRequest": {"clientIpAddress": "198.51.100.23", "method": "PUT",
                            "clientRequestId": request_id or str(uuid.uuid4())},
            "resourceProvider": "Microsoft.KeyVault",
            "resourceUri": uri,
            "operationName": action,
            "status": "Succeeded",
            "subscriptionId": SUB,
            "tenantId": TENANT,
        },
    })


@dataclass
class Bench:
    """The running services, the counter and the worker's entry point."""

    fake: ArmFake
    tables: CountingTransport
    deliver: Callable[[str], None]
    results: dict[str, list[Delivery]] = field(default_factory=lambda: {kind: [] for kind in KINDS})

    def measure(self, kind: str, json_text: str) -> Delivery:
        """Deliver one event and note what it cost."""
        tables_before, arm_before = self.tables.requests, len(self.fake.requests)
        started = time.perf_counter()
        self.deliver(json_text)
        wall = time.perf_counter() - started
        sent = self.fake.requests[arm_before:]
        reverts = [r for r in sent if r.method == "PUT" and r.path.lower().endswith("/accesspolicies/remove")]
        defender = [r for r in sent if r.method == "PUT" and "/microsoft.security/assessments/" in r.path.lower()]
        latency = self.fake.latency
        delivery = Delivery(
            tables=self.tables.requests - tables_before, wall=wall, **arm_requests(sent),
            revert_landed=(reverts[0].received + (latency.of(reverts[0]) if latency else 0.0) - started
                           if reverts else None),
            defender_concurrent=overlapping(defender, latency.assessment_put if latency else 0.0)
            if len(defender) > 1 else None,
        )
        self.results[kind].append(delivery)
        return delivery

    def round(self, index: int) -> None:
        """One delivery of each kind on vault `index`."""
        tagged = self.fake.vault(vault_id(index))
        tagged["tags"]["costCenter"] = f"cc-{uuid.uuid4().hex[:6]}"
        self.fake.add_vault(tagged)
        self.measure(KINDS[0], event_json(index, owner(index), "write"))
        granted = self.fake.vault(vault_id(index))
        granted["properties"]["accessPolicies"].append(copy.deepcopy(ROGUE_GRANT))
        self.fake.add_vault(granted)
        rogue = event_json(index, intruder(index), "add")
        arm_before = len(self.fake.requests)
        self.measure(KINDS[1], rogue)
        reverts = [r for r in self.fake.requests[arm_before:]
                   if r.method == "PUT" and r.path.lower().endswith("/accesspolicies/remove")]
        if not reverts:
            raise SystemExit(f"the rogue grant on {vault_id(index)} was not reverted: the benchmark measures nothing")
        sent_with = reverts[0].headers["x-ms-client-request-id"]
        self.measure(KINDS[2], event_json(index, KVGUARD, "remove", request_id=sent_with))
        self.measure(KINDS[3], rogue)


@contextmanager
def running_bench(scratch: Path) -> Iterator[Bench]:
    """Azurite, the HTTPS fake with the vaults, and the worker's pipeline on them, installed as
    `function_app` finds it; the latencies are off until the caller turns them on."""
    import os

    from azure.functions.eventgrid import EventGridEventInConverter
    from azure.functions.meta import Datum

    import function_app
    from kvguard import runtime
    from kvguard.adapters.tables import TablesStateStore
    from kvguard.settings import Settings
    from tests.integration.armfake import FakeCredential, arm_fake
    from tests.integration.azurite import running_azurite

    with arm_fake(eventgrid_key=TOPIC_KEY) as fake, running_azurite(scratch) as azurite:
        os.environ["REQUESTS_CA_BUNDLE"] = str(fake.write_ca_bundle(scratch / "ca.pem"))
        settings = Settings(
            mode="remediate", state_backend="tables", tables_connection=azurite.connection_string,
            arm_endpoint=fake.base_url, own_principal_ids=[KVGUARD], defender=True,
            eventgrid_topic_endpoint=f"{fake.base_url}/api/events", eventgrid_topic_key=TOPIC_KEY,
        )
        counter = CountingTransport()
        store = TablesStateStore.from_connection_string(azurite.connection_string, transport=counter)
        pipeline = runtime.build(settings, credential=FakeCredential(), store=store)
        for index in range(VAULTS):
            fake.add_vault(vault_doc(index))
            pipeline.store.put_baseline(vault_id(index), vault_doc(index), None, now=pipeline.clock.now())
        functions = {str(fn.get_function_name()): fn for fn in function_app.app.get_functions()}
        handler = functions["on_vault_event"].get_user_function()

        def deliver(json_text: str) -> None:
            handler(EventGridEventInConverter.decode(Datum(type="json", value=json_text), trigger_metadata=None))

        runtime.install(pipeline)
        try:
            yield Bench(fake=fake, tables=counter, deliver=deliver)
        finally:
            runtime.install(None)
            store.close()


def report(bench: Bench, runs: int) -> None:
    def spread(values: list[int]) -> str:
        low, high = min(values), max(values)
        return f"{low}" if low == high else f"{low}-{high}"

    def verdict(met: bool) -> str:
        return "met" if met else "NOT MET"

    print(f"machine: {machine()}")
    print(f"production-shaped deliveries: function_app.on_vault_event, remediate mode, Azure Tables (Azurite) "
          f"and the HTTPS ARM fake, {VAULTS} hardened vaults; latencies ARM GET {LATENCY.arm_read * 1e3:.0f} ms, "
          f"ARM write {LATENCY.arm_write * 1e3:.0f} ms, Defender PUT {LATENCY.assessment_put * 1e3:.0f} ms, "
          f"Event Grid POST {LATENCY.event_grid_post * 1e3:.0f} ms, Table Storage {TABLE_LATENCY * 1e3:.0f} ms; "
          f"{runs} runs per kind, requests min-max over the runs, wall the median")
    print("| delivery | Table Storage requests (target) | ARM reads / writes (target) | Defender PUTs | "
          "Event Grid POSTs (target) | wall p50 |")
    print("|---|---|---|---|---|---|")
    for kind in KINDS:
        done = bench.results[kind]
        tables = [d.tables for d in done]
        reads, writes = [d.arm_reads for d in done], [d.arm_writes for d in done]
        posts, puts = [d.eventgrid_posts for d in done], [d.defender_puts for d in done]
        table_target = TABLE_TARGETS[kind]
        arm_target = "≤ 2 / 1" if kind == KINDS[1] else "—"
        arm_met = max(reads) <= 2 and set(writes) == {1} if kind == KINDS[1] else None
        post_met = set(posts) == {1} if kind == KINDS[1] else max(posts) <= 1
        concurrent = [d.defender_concurrent for d in done if d.defender_concurrent is not None]
        together = "" if not concurrent else (" (concurrent)" if all(concurrent) else " (one after another)")
        print(f"| {kind} | {spread(tables)} (≤ {table_target}: {verdict(max(tables) <= table_target)}) | "
              f"{spread(reads)} / {spread(writes)} ({arm_target}"
              f"{'' if arm_met is None else ': ' + verdict(arm_met)}) | {spread(puts)}{together} | "
              f"{spread(posts)} ({'1' if kind == KINDS[1] else '≤ 1'}: {verdict(post_met)}) | "
              f"{statistics.median(d.wall for d in done) * 1e3:,.0f} ms |")
    landed = [d.revert_landed for d in bench.results[KINDS[1]] if d.revert_landed is not None]
    floor = LATENCY.arm_read + LATENCY.arm_write
    median = statistics.median(landed)
    print(f"the revert lands at ARM {median * 1e3:,.0f} ms after the delivery (median; {min(landed) * 1e3:,.0f}-"
          f"{max(landed) * 1e3:,.0f}): {median / floor:.2f}x one ARM read + one ARM write ({floor * 1e3:,.0f} ms) "
          f"- target <= 1.25x: {verdict(median <= 1.25 * floor)} (its request reached ARM "
          f"{(median - LATENCY.arm_write) * 1e3:,.0f} ms after the delivery; the write's latency comes on top)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5, help=f"runs per delivery kind, at most {VAULTS - 1}")
    args = parser.parse_args()
    if not 1 <= args.runs < VAULTS:
        parser.error(f"--runs: from 1 to {VAULTS - 1} (each run has a vault of its own; one more warms up)")
    with tempfile.TemporaryDirectory() as scratch, running_bench(Path(scratch)) as bench:
        bench.round(VAULTS - 1)  # warm-up, not reported
        bench.results = {kind: [] for kind in KINDS}
        bench.fake.latency, bench.tables.delay = LATENCY, TABLE_LATENCY
        for index in range(args.runs):
            bench.round(index)
        report(bench, args.runs)


if __name__ == "__main__":
    main()
