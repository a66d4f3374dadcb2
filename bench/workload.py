"""A synthetic but realistic event stream for the benchmarks: many vaults, mostly benign writes,
some grants, firewall changes and duplicates, in the Event Grid schema as delivered."""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Iterator
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


def mixed_scenario(deliveries: int = 5000, vaults: int = 200, policies: int = 8, seed: int = 11,
                   every: str = "PT2S") -> dict[str, Any]:
    """A held-out load unlike `scenario`'s tag-heavy one: over `vaults` vaults, a mix of tag
    changes, grants, revokes, firewall changes and flag changes, and 10 % redeliveries of an
    earlier event (not only the last one), as Event Grid retries arrive out of order."""
    docs = [_sized(vault_doc(i), policies) for i in range(vaults)]
    return {"name": f"benchmark: mixed load, {deliveries} deliveries over {vaults} vaults",
            "clock": "2026-11-27T10:00:00Z", "policy": {"mode": "alert"}, "vaults": docs,
            "steps": list(mixed_steps(docs, deliveries, seed, every))}


def mixed_steps(docs: list[dict[str, Any]], deliveries: int, seed: int = 11,
                every: str = "PT2S") -> Iterator[dict[str, Any]]:
    """The steps of `mixed_scenario`, made one by one (a long run need not hold them all)."""
    rng = random.Random(seed)
    vaults = len(docs)
    current = copy.deepcopy(docs)
    callers = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(40)]
    sent: list[dict[str, Any]] = []
    for number in range(deliveries):
        roll = rng.random()
        if roll < 0.10 and sent:
            yield {"event": rng.choice(sent)}
            continue
        index = rng.randrange(vaults)
        doc = current[index]
        props = doc["properties"]
        if roll < 0.45:
            doc["tags"]["touched"] = str(number)
        elif roll < 0.60:
            props["accessPolicies"].append({"tenantId": TENANT, "objectId": str(uuid.UUID(int=rng.getrandbits(128))),
                                            "permissions": {"secrets": ["get"], "keys": ["get", "unwrapKey"]}})
        elif roll < 0.72 and props["accessPolicies"]:
            props["accessPolicies"].pop(rng.randrange(len(props["accessPolicies"])))
        elif roll < 0.86:
            acls = props["networkAcls"]
            if acls["ipRules"] and rng.random() < 0.5:
                acls["ipRules"].pop()
            else:
                acls["ipRules"].append({"value": f"198.51.100.{rng.randrange(256)}/32"})
        else:
            flag = rng.choice(("enabledForDeployment", "enabledForTemplateDeployment", "enabledForDiskEncryption"))
            props[flag] = not props.get(flag, False)
        caller = rng.randrange(len(callers))
        event = envelope(str(uuid.UUID(int=rng.getrandbits(128))), doc["id"], callers[caller],
                         f"10.2.{rng.randrange(256)}.{rng.randrange(256)}", "2026-11-27T10:00:00Z")
        yield {"advance": every}
        yield {"write": copy.deepcopy(doc)}
        yield {"event": event}
        sent.append(event)


def _sized(doc: dict[str, Any], policies: int) -> dict[str, Any]:
    """A vault document with `policies` access-policy entries (Azure allows up to 1,024)."""
    index = int(doc["name"].rsplit("-", 1)[-1])
    doc["properties"]["accessPolicies"] = [
        {"tenantId": TENANT, "objectId": str(uuid.UUID(int=index * 1_000_003 + j)),
         "permissions": {"keys": ["get", "wrapKey", "unwrapKey"], "secrets": ["get"]}}
        for j in range(policies)
    ]
    return doc


def large_vault_scenario(events: int = 2000, policies: int = 1024, vaults: int = 1, seed: int = 13,
                         every: str = "PT2S") -> dict[str, Any]:
    """`events` deliveries against vaults of `policies` access-policy entries each: mostly tag
    changes (the vault document re-read in full each time), some grant and revoke swaps that keep
    the entry count at the limit."""
    docs = [_sized(vault_doc(i), policies) for i in range(vaults)]
    return {"name": f"benchmark: {events} events, {vaults} vaults of {policies} access policies",
            "clock": "2026-11-27T10:00:00Z", "policy": {"mode": "alert"}, "vaults": docs,
            "steps": list(large_vault_steps(docs, events, seed, every))}


def large_vault_steps(docs: list[dict[str, Any]], events: int, seed: int = 13,
                      every: str = "PT2S") -> Iterator[dict[str, Any]]:
    """The steps of `large_vault_scenario`, made one by one."""
    rng = random.Random(seed)
    vaults = len(docs)
    current = copy.deepcopy(docs)
    for number in range(events):
        doc = current[number % vaults]
        if rng.random() < 0.1:
            entries = doc["properties"]["accessPolicies"]
            entries[rng.randrange(len(entries))] = {
                "tenantId": TENANT, "objectId": str(uuid.UUID(int=rng.getrandbits(128))),
                "permissions": {"secrets": ["get"]}}
        else:
            doc["tags"]["touched"] = str(number)
        yield {"advance": every}
        yield {"write": copy.deepcopy(doc)}
        yield {"event": envelope(str(uuid.UUID(int=rng.getrandbits(128))), doc["id"],
                                 "7c1f0e2d-0000-4000-8000-000000000001", "10.3.0.1", "2026-11-27T10:00:00Z")}
