"""The simulated world for replay and tests: vaults in memory with ARM's update semantics, a
Defender and an Event Grid topic that record what they receive, and a clock that moves only when
told. kvguard's own writes emit the `ResourceWriteSuccess` event Azure would emit (caller =
kvguard's identity), so every remediation also exercises the loop guard: the ledger entry the
write noted first must match that event. Beside the vaults the world holds any other ARM resource
(role assignments, diagnostic settings, …) as its ARM JSON.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kvguard.client_request import current_request_id
from kvguard.detection import assessment_name
from kvguard.ids import parse_vault_ref, subscription_of, vault_key
from kvguard.ports import Alert
from kvguard.resources import covers, resource_type_of, scope_of
from kvguard.vault import PERMISSION_CATEGORIES, AccessPolicy, VaultConfig

SIM_IDENTITY = "5ca1ab1e-0000-4000-8000-00000000c0de"  # kvguard's identity in the simulated world
_EVENT_NAMESPACE = uuid.UUID("0c7d2f5e-1a3b-4c5d-8e9f-a0b1c2d3e4f5")


class SimClock:
    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 27, 10, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta


@dataclass
class World:
    """Vault ARM documents by vault key, other resources' ARM documents by resource key, plus what
    Defender and the topic received."""

    clock: SimClock = field(default_factory=SimClock)
    identity: str = SIM_IDENTITY
    vaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    parsed: dict[str, VaultConfig] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    resource_ids: dict[str, str] = field(default_factory=dict)  # every resource the world ever held, as first spelled
    emitted: list[dict[str, Any]] = field(default_factory=list)
    assessments: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: list[dict[str, Any]] = field(default_factory=list)
    published_ids: set[str] = field(default_factory=set)
    _ids: itertools.count = field(default_factory=itertools.count)

    def put(self, doc: Mapping[str, Any], parsed: VaultConfig | None = None) -> None:
        """Store a vault document with its parsed configuration (parsed here unless the caller,
        e.g. the scenario loader, already did). Documents are never changed in place, here or by
        the gateway, so configurations read earlier keep their values."""
        key = vault_key(doc["id"])
        self.vaults[key] = dict(doc)
        self.parsed[key] = parsed if parsed is not None else VaultConfig.from_arm(doc)

    def delete(self, vault_id: str) -> None:
        self.vaults.pop(vault_key(vault_id), None)
        self.parsed.pop(vault_key(vault_id), None)

    def put_resource(self, doc: Mapping[str, Any]) -> None:
        """Store (create or replace) a resource other than a vault, never changed in place."""
        self.resources[vault_key(doc["id"])] = copy.deepcopy(dict(doc))
        self.resource_ids.setdefault(vault_key(doc["id"]), doc["id"])

    def delete_resource(self, resource_id: str) -> bool:
        return self.resources.pop(vault_key(resource_id), None) is not None

    def take_emitted(self) -> list[dict[str, Any]]:
        events, self.emitted = self.emitted, []
        return events

    def own_write_event(
        self, resource_uri: str, operation: str, event_type: str = "Microsoft.Resources.ResourceWriteSuccess"
    ) -> dict[str, Any]:
        """The Event Grid delivery Azure would send for a write (or delete) by kvguard's identity,
        with the client request id the write was sent with, as ARM echoes it."""
        number = next(self._ids)
        request_id = current_request_id()
        sent = {"httpRequest": {"clientRequestId": request_id}} if request_id is not None else {}
        return {
            "id": str(uuid.uuid5(_EVENT_NAMESPACE, f"{resource_uri.lower()}|{number}")),
            "topic": f"/subscriptions/{subscription_of(resource_uri)}",
            "subject": resource_uri,
            "eventType": event_type,
            "eventTime": self.clock.now().isoformat().replace("+00:00", "Z"),
            "dataVersion": "2",
            "metadataVersion": "1",
            "data": {
                "authorization": {
                    "scope": resource_uri,
                    "action": operation,
                    "evidence": {"role": "kvguard remediator", "principalId": self.identity,
                                 "principalType": "ServicePrincipal"},
                },
                "claims": {"oid": self.identity, "appid": self.identity, "idtyp": "app"},
                "correlationId": str(uuid.uuid5(_EVENT_NAMESPACE, f"corr|{number}")),
                "resourceProvider": operation.split("/", 1)[0],
                "resourceUri": resource_uri,
                "operationName": operation,
                "status": "Succeeded",
                "subscriptionId": subscription_of(resource_uri),
                **sent,
            },
        }


class SimVaultGateway:
    """VaultGateway on the simulated world, with ARM's PATCH and accessPolicies semantics."""

    answers_in_process = True  # no request leaves the process: the pipeline reads it on its own thread

    def __init__(self, world: World) -> None:
        self.world = world

    def get(self, vault_id: str) -> VaultConfig | None:
        return self.world.parsed.get(vault_key(vault_id))

    def update(self, vault_id: str, properties: Mapping[str, Any]) -> VaultConfig:
        doc = self._doc(vault_id)
        doc = {**doc, "properties": {**doc.get("properties", {}), **copy.deepcopy(dict(properties))}}
        self.world.put(doc)
        written = self.world.parsed[vault_key(doc["id"])]
        kind = "managedHSMs" if written.kind == "hsm" else "vaults"
        self.world.emitted.append(self.world.own_write_event(doc["id"], f"Microsoft.KeyVault/{kind}/write"))
        return written

    def remove_access_policy(self, vault_id: str, entry: AccessPolicy) -> VaultConfig:
        return self._update_access_policy(vault_id, entry, "remove")

    def add_access_policy(self, vault_id: str, entry: AccessPolicy) -> VaultConfig:
        return self._update_access_policy(vault_id, entry, "add")

    def _update_access_policy(self, vault_id: str, entry: AccessPolicy, kind: str) -> VaultConfig:
        """ARM's `accessPolicies/{add|remove}` of one entry: names matched literally and
        case-insensitively (`all` is a name like any other here), for the entry's principal only;
        an entry left without permissions goes."""
        doc = self._doc(vault_id)
        kept = []
        found = False
        for raw in doc.get("properties", {}).get("accessPolicies", []):
            current = AccessPolicy.from_arm(raw)
            if current.principal.key != entry.principal.key:
                kept.append(raw)
                continue
            found = True
            remaining = {}
            for category in PERMISSION_CATEGORIES:
                names = list(raw.get("permissions", {}).get(category) or [])
                given = {p.lower() for p in entry.get(category)}
                if kind == "remove":
                    names = [p for p in names if p.lower() not in given]
                else:
                    names += sorted(p for p in entry.get(category) if p.lower() not in current.get(category))
                if names:
                    remaining[category] = names
            if remaining:
                kept.append({**raw, "permissions": remaining})
        if kind == "add" and not found:
            kept.append(entry.to_arm())
        doc = {**doc, "properties": {**doc["properties"], "accessPolicies": kept}}
        self.world.put(doc)
        self.world.emitted.append(self.world.own_write_event(
            f"{doc['id']}/accessPolicies/{kind}", "Microsoft.KeyVault/vaults/accessPolicies/write"))
        return self.world.parsed[vault_key(doc["id"])]

    def list_vaults(self, subscription_id: str) -> list[VaultConfig]:
        return [self.world.parsed[k] for k, d in self.world.vaults.items()
                if subscription_of(d["id"]) == subscription_id.lower()]

    def _doc(self, vault_id: str) -> dict[str, Any]:
        doc = self.world.vaults.get(vault_key(vault_id))
        if doc is None or parse_vault_ref(vault_id) is None:
            raise LookupError(f"vault {vault_id} does not exist")
        return doc


class SimResourceGateway:
    """ResourceGateway on the simulated world: GET by id, DELETE by id (emitting the
    `ResourceDeleteSuccess` Azure would emit), and the `atScope()` listing."""

    def __init__(self, world: World) -> None:
        self.world = world

    def get(self, resource_id: str) -> Mapping[str, Any] | None:
        return self.world.resources.get(vault_key(resource_id))

    def delete(self, resource_id: str) -> bool:
        doc = self.world.resources.get(vault_key(resource_id))
        if doc is None:
            return False
        self.world.delete_resource(resource_id)
        self.world.emitted.append(self.world.own_write_event(
            doc["id"], f"{resource_type_of(doc)}/delete", "Microsoft.Resources.ResourceDeleteSuccess"))
        return True

    def put(self, resource_id: str, document: Mapping[str, Any]) -> Mapping[str, Any]:
        """ARM's PUT: the resource becomes the document (created when new), and the write comes
        back as the `<type>/write` event by kvguard's identity."""
        existing = self.world.resources.get(vault_key(resource_id)) or {}
        doc = {**existing, **copy.deepcopy(dict(document)), "id": existing.get("id", resource_id)}
        doc["type"] = resource_type_of(doc) or resource_type_of(existing)
        doc.setdefault("name", str(doc["id"]).rsplit("/", 1)[-1])
        self.world.put_resource(doc)
        self.world.emitted.append(self.world.own_write_event(doc["id"], f"{doc['type']}/write"))
        return self.world.resources[vault_key(resource_id)]

    def list_at_scope(self, scope: str, resource_type: str) -> list[Mapping[str, Any]]:
        """At the scope or above it, as `atScope()` lists; role assignments also below it (an
        assignment on one secret of a vault), as ARM's list with no filter adds them."""
        wanted = resource_type.lower()
        below = wanted == "microsoft.authorization/roleassignments"
        return [doc for doc in self.world.resources.values()
                if resource_type_of(doc).lower() == wanted and (
                    _at_or_above(scope_of(doc["id"]), scope) or (below and _below(scope_of(doc["id"]), scope)))]


def _below(resource_scope: str, scope: str) -> bool:
    return vault_key(resource_scope).startswith(vault_key(scope) + "/")


def _at_or_above(resource_scope: str, scope: str) -> bool:
    below = vault_key(resource_scope).startswith(vault_key(scope) + "/")
    return covers(resource_scope, scope) and not below


class SimDefender:
    """Defender for Cloud custom assessments, one per vault × rule, as the simulated world holds them."""

    answers_in_process = True  # no request leaves the process: the pipeline calls it on its own thread

    def __init__(self, world: World) -> None:
        self.world = world

    def raise_alert(self, alert: Alert) -> str:
        name = assessment_name(alert.rule)
        self.world.assessments[f"{vault_key(alert.vault_id)}|{name}"] = {"status": "Unhealthy", "rule": alert.rule}
        return f"assessment {name} Unhealthy"

    def resolve(self, vault_id: str, rule: str) -> str:
        name = assessment_name(rule)
        self.world.assessments[f"{vault_key(vault_id)}|{name}"] = {"status": "Healthy", "rule": rule}
        return f"assessment {name} Healthy"


class SimTopic:
    """The Event Grid custom topic: keeps each published detection once (deterministic ids)."""

    answers_in_process = True

    def __init__(self, world: World) -> None:
        self.world = world

    def raise_alert(self, alert: Alert) -> str:
        return self._publish("kvguard.detection", alert.vault_id, alert.rule, alert.event_id)

    def resolve(self, vault_id: str, rule: str) -> str:
        return self._publish("kvguard.detection.resolved", vault_id, rule, self.world.clock.now().isoformat())

    def _publish(self, kind: str, vault_id: str, rule: str, cause: str) -> str:
        event_id = str(uuid.uuid5(_EVENT_NAMESPACE, f"{kind}|{vault_key(vault_id)}|{rule}|{cause}"))
        if event_id not in self.world.published_ids:
            self.world.published_ids.add(event_id)
            self.world.published.append({"id": event_id, "type": kind, "source": vault_id, "subject": rule})
        return f"{kind} {event_id}"
