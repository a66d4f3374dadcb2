"""A synthetic but realistic event stream for the benchmarks: many vaults, mostly benign writes,
some grants, firewall changes and duplicates, in the Event Grid schema as delivered."""

from __future__ import annotations

import copy
import random
import uuid
from typing import Any

TENANT = "2b7e1f0a-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
SUBSCRIPTION = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"


def vault_doc(index: int) -> dict[str, Any]:
    name = f"kv-bench-{index:03d}"
    return {
        "id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-bench/providers/Microsoft.KeyVault/vaults/{name}",
        "name": name,
        "type": "Microsoft.KeyVault/vaults",
        "location": "northeurope",
        "tags": {"criticality": "high" if index % 5 == 0 else "normal"},
        "properties": {
            "tenantId": TENANT,
            "sku": {"family": "A", "name": "standard"},
            "accessPolicies": [
                {"tenantId": TENANT, "objectId": str(uuid.UUID(int=index * 7919 + j)),
                 "permissions": {"keys": ["get", "wrapKey", "unwrapKey"], "secrets": ["get"]}}
                for j in range(8)
            ],
            "enableRbacAuthorization": False,
            "enableSoftDelete": True,
            "softDeleteRetentionInDays": 90,
            "enablePurgeProtection": True,
            "publicNetworkAccess": "Disabled",
            "networkAcls": {"defaultAction": "Deny", "bypass": "None", "ipRules": [], "virtualNetworkRules": []},
        },
    }


def envelope(event_id: str, vault_id: str, caller: str, ip: str, when: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "topic": f"/subscriptions/{SUBSCRIPTION}",
        "subject": vault_id,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": when,
        "dataVersion": "2",
        "metadataVersion": "1",
        "data": {
            "authorization": {"scope": vault_id, "action": "Microsoft.KeyVault/vaults/write",
                              "evidence": {"role": "Contributor", "principalId": caller, "principalType": "User"}},
            "claims": {"oid": caller, "http://schemas.microsoft.com/identity/claims/tenantid": TENANT,
                       "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn": f"{caller[:8]}@bench.example",
                       "ipaddr": ip},
            "correlationId": str(uuid.uuid4()),
            "httpRequest": {"clientIpAddress": ip, "method": "PUT"},
            "resourceProvider": "Microsoft.KeyVault",
            "resourceUri": vault_id,
            "operationName": "Microsoft.KeyVault/vaults/write",
            "status": "Succeeded",
            "subscriptionId": SUBSCRIPTION,
            "tenantId": TENANT,
        },
    }


def scenario(events: int, vaults: int = 50, seed: int = 7, every: str = "PT2S") -> dict[str, Any]:
    """A replay scenario of `events` deliveries: a write step before each changing event, and the
    simulated clock moving on by `every` between changes (one change every 2 s is a busy tenant:
    1,800 vault changes an hour)."""
    rng = random.Random(seed)
    docs = [vault_doc(i) for i in range(vaults)]
    current = copy.deepcopy(docs)
    callers = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(20)]
    steps: list[dict[str, Any]] = []
    delivered = 0
    previous: dict[str, Any] | None = None
    while delivered < events:
        # Teams own a few vaults each: a caller mostly changes its own, now and then another.
        caller = rng.randrange(len(callers))
        home = [(caller * vaults // len(callers) + k) % vaults for k in range(3)]
        index = rng.choice(home) if rng.random() < 0.98 else rng.randrange(vaults)
        doc = current[index]
        roll = rng.random()
        if roll < 0.05 and previous is not None:
            steps.append({"event": previous})  # a redelivery
            delivered += 1
            continue
        if roll < 0.15:
            doc["properties"]["accessPolicies"].append(
                {"tenantId": TENANT, "objectId": str(uuid.UUID(int=rng.getrandbits(128))),
                 "permissions": {"secrets": ["get", "list"]}})
        elif roll < 0.20:
            doc["properties"]["networkAcls"]["ipRules"].append({"value": f"203.0.113.{rng.randrange(256)}"})
        else:
            doc["tags"]["touched"] = str(delivered)
        steps.append({"advance": every})
        steps.append({"write": copy.deepcopy(doc)})
        previous = envelope(str(uuid.UUID(int=rng.getrandbits(128))), doc["id"], callers[caller],
                            f"10.1.{rng.randrange(256)}.{rng.randrange(256)}", "2026-11-27T10:00:00Z")
        steps.append({"event": previous})
        delivered += 1
    return {"name": f"benchmark: {events} events over {vaults} vaults", "clock": "2026-11-27T10:00:00Z",
            "policy": {"mode": "alert"}, "vaults": docs, "steps": steps}


def activity_log(operations: int, vaults: int = 50, seed: int = 7) -> list[dict[str, Any]]:
    """Activity Log records of `operations` vault writes and access-policy writes, three records
    each (Started, Accepted, Succeeded), shuffled as pages from several providers arrive."""
    rng = random.Random(seed)
    records = []
    for number in range(operations):
        vault_id = vault_doc(number % vaults)["id"]
        operation = "Microsoft.KeyVault/vaults/" + ("write" if number % 3 else "accessPolicies/write")
        caller = f"{number % 20:08x}-0000-4000-8000-{number % 20:012x}"
        for offset, status in enumerate(("Started", "Accepted", "Succeeded")):
            records.append({
                "eventDataId": f"rec-{number}-{offset}", "correlationId": f"corr-{number}",
                "operationName": {"value": operation}, "status": {"value": status},
                "category": {"value": "Administrative"}, "resourceProviderName": {"value": "Microsoft.KeyVault"},
                "eventTimestamp": f"2026-11-{1 + number * 30 // max(operations, 1):02d}T10:00:{offset:02d}Z",
                "resourceId": vault_id, "subscriptionId": vault_id.split("/")[2], "caller": caller,
                "claims": {"oid": caller, "tid": "1a2b3c4d-5e6f-4a7b-8c9d-e0f1a2b3c4d5"},
                "httpRequest": {"clientIpAddress": f"10.0.{number % 250}.{number % 7}"},
                "authorization": {"action": operation, "scope": vault_id},
                "properties": {"requestbody": "{}"} if status == "Started" else {},
            })
    rng.shuffle(records)
    return records
