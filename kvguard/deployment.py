"""What kvguard's own deployment must look like for kvguard to see every change: the event types
and operations its Event Grid subscription has to pass, and a check of a subscription's ARM JSON
against them (the reconcile timer's half of KV-SELF-02). The Bicep's filter is tested against the
same lists, so the app and the infra cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kvguard.ids import owning_id

EVENT_TYPES = (
    "Microsoft.Resources.ResourceWriteSuccess",
    "Microsoft.Resources.ResourceWriteFailure",
    "Microsoft.Resources.ResourceDeleteSuccess",
    "Microsoft.Resources.ResourceDeleteFailure",
    "Microsoft.Resources.ResourceActionSuccess",
    "Microsoft.Resources.ResourceActionFailure",
)
VAULT_OPERATIONS = (
    "Microsoft.KeyVault/vaults/write",
    "Microsoft.KeyVault/vaults/accessPolicies/write",
    "Microsoft.KeyVault/vaults/delete",
    "Microsoft.KeyVault/locations/deletedVaults/purge/action",
)
# Changes to the resources beside a vault (kvguard.resources): audit logging, locks, private
# endpoints, the Defender plan.
ADJACENT_OPERATIONS = (
    "Microsoft.Insights/diagnosticSettings/write",
    "Microsoft.Insights/diagnosticSettings/delete",
    "Microsoft.Authorization/locks/write",
    "Microsoft.Authorization/locks/delete",
    "Microsoft.KeyVault/vaults/privateEndpointConnections/write",
    "Microsoft.KeyVault/vaults/privateEndpointConnections/delete",
    "Microsoft.Security/pricings/write",
)
EVENT_SUBSCRIPTION_WRITE = "Microsoft.EventGrid/systemTopics/eventSubscriptions/write"
EVENT_SUBSCRIPTION_DELETE = "Microsoft.EventGrid/systemTopics/eventSubscriptions/delete"
SYSTEM_TOPIC_DELETE = "Microsoft.EventGrid/systemTopics/delete"
APP_CONFIG_WRITE = "Microsoft.Web/sites/config/write"
APP_WRITE = "Microsoft.Web/sites/write"
APP_STOP = "Microsoft.Web/sites/stop/action"
APP_DELETE = "Microsoft.Web/sites/delete"
# Changes to kvguard's own deployment (KV-SELF-02): its event subscription and the system topic
# that carries it, its app's settings, the app itself (an app settings change can also arrive as a
# write of the site), stopping it and deleting it.
DEPLOYMENT_OPERATIONS = (EVENT_SUBSCRIPTION_WRITE, EVENT_SUBSCRIPTION_DELETE, SYSTEM_TOPIC_DELETE, APP_CONFIG_WRITE,
                         APP_WRITE, APP_STOP, APP_DELETE)
# Role assignments at any scope covering a vault, and custom role definitions (KV-RBAC-*).
RBAC_OPERATIONS = (
    "Microsoft.Authorization/roleAssignments/write",
    "Microsoft.Authorization/roleAssignments/delete",
    "Microsoft.Authorization/roleDefinitions/write",
)
# Network Security Perimeters over a vault (KV-NSP-01) and event subscriptions on a vault's events
# (KV-EG-01); those on a system topic share DEPLOYMENT_OPERATIONS' systemTopics/eventSubscriptions.
PERIMETER_AND_FEED_OPERATIONS = (
    "Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/write",
    "Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/delete",
    "Microsoft.Network/networkSecurityPerimeters/resourceAssociations/write",
    "Microsoft.Network/networkSecurityPerimeters/resourceAssociations/delete",
    "Microsoft.EventGrid/eventSubscriptions/write",
    "Microsoft.EventGrid/eventSubscriptions/delete",
)
OPERATIONS = (VAULT_OPERATIONS + ADJACENT_OPERATIONS + DEPLOYMENT_OPERATIONS + RBAC_OPERATIONS
              + PERIMETER_AND_FEED_OPERATIONS)
# The rules that judge a change to kvguard's own deployment (it concerns no vault).
DEPLOYMENT_RULES = ("KV-SELF-02",)
FUNCTION = "on_vault_event"
# How the Bicep delivers: 30 attempts over 24 hours, the Event Grid schema.
RETRY_POLICY = {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440}
DELIVERY_SCHEMA = "EventGridSchema"


def is_deployment_operation(operation: str | None) -> bool:
    return (operation or "").strip().lower() in {o.lower() for o in DEPLOYMENT_OPERATIONS}


def changed_own_resource(subject: str | None, operation: str | None, own_resource_ids: list[str]) -> str | None:
    """The own resource a deployment change concerns: the one the changed resource is or lies
    under, or, for a deletion, one lying under the deleted resource (deleting a system topic
    deletes kvguard's event subscription on it). None: not kvguard's own."""
    if not subject or not is_deployment_operation(operation):
        return None
    owned = owning_id(subject, own_resource_ids)
    if owned is None and (operation or "").strip().lower().endswith("/delete"):
        owned = next((i for i in own_resource_ids if owning_id(i, [subject])), None)
    return owned


def is_event_subscription(resource_id: str) -> bool:
    return "/providers/microsoft.eventgrid/" in resource_id.lower() and "/eventsubscriptions/" in resource_id.lower()


@dataclass(frozen=True)
class Delivery:
    """Where kvguard deployed its events to go, taken from its own resource ids: the function app
    (its `on_vault_event` function receives them) and the dead-letter container. None where the
    ids do not name it: then only what every deployment shares is judged."""

    function_app_id: str | None = None
    dead_letter_account_id: str | None = None
    dead_letter_container: str | None = None

    @property
    def function_id(self) -> str | None:
        return f"{self.function_app_id}/functions/{FUNCTION}" if self.function_app_id else None


_FUNCTION_APP_RE = re.compile(r"^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.web/sites/[^/]+$",
                              re.IGNORECASE)
_CONTAINER_RE = re.compile(r"^(?P<account>/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.storage"
                           r"/storageaccounts/[^/]+)/blobservices/default/containers/(?P<container>[^/]+)$",
                           re.IGNORECASE)


def delivery_of(own_resource_ids: Iterable[str]) -> Delivery:
    """The delivery kvguard deployed, from its own resource ids (`KVGUARD_OWN_RESOURCE_IDS` names
    the function app and the dead-letter container beside the event subscriptions)."""
    app = account = container = None
    for resource_id in own_resource_ids:
        if _FUNCTION_APP_RE.match(resource_id):
            app = resource_id
        elif (match := _CONTAINER_RE.match(resource_id)) is not None:
            account, container = match["account"], match["container"]
    return Delivery(app, account, container)


def _same_id(left: Any, right: str) -> bool:
    return isinstance(left, str) and left.strip().rstrip("/").lower() == right.rstrip("/").lower()


def _destination_problems(properties: Mapping[str, Any], delivery: Delivery) -> list[str]:
    destination = properties.get("destination") or {}
    endpoint_type = destination.get("endpointType")
    target = destination.get("properties") or {}
    if endpoint_type != "AzureFunction":
        where = target.get("endpointBaseUrl") or target.get("resourceId")
        return [f"events go to a {endpoint_type or 'missing'} endpoint{f' {where}' if where else ''}, "
                f"not to kvguard's function {FUNCTION}"]
    problems = []
    resource_id = target.get("resourceId")
    expected = delivery.function_id
    if expected is not None and not _same_id(resource_id, expected):
        problems.append(f"events go to {resource_id}, not to {expected}")
    elif expected is None and not str(resource_id or "").lower().endswith(f"/functions/{FUNCTION}"):
        problems.append(f"events go to {resource_id}, not to {FUNCTION}")
    if target.get("maxEventsPerBatch") not in (None, 1):
        problems.append(f"maxEventsPerBatch is {target['maxEventsPerBatch']}, not 1")
    return problems


def _filter_problems(event_filter: Mapping[str, Any]) -> list[str]:
    problems = []
    included = event_filter.get("includedEventTypes")
    if included is None:
        problems.append("includedEventTypes is not set: every event type is delivered")
    else:
        missing, extra = sorted(set(EVENT_TYPES) - set(included)), sorted(set(included) - set(EVENT_TYPES))
        if missing:
            problems.append(f"event types not passed: {', '.join(missing)}")
        if extra:
            problems.append(f"event types kvguard does not deploy: {', '.join(extra)}")
    for key in ("subjectBeginsWith", "subjectEndsWith"):
        if event_filter.get(key):
            problems.append(f"{key} {event_filter[key]!r} narrows the subjects")
    operation_filters = 0
    for advanced in event_filter.get("advancedFilters") or []:
        operator, key = advanced.get("operatorType"), advanced.get("key")
        if operator == "StringIn" and key == "data.operationName" and not operation_filters:
            operation_filters += 1
            passed = {str(v).lower() for v in advanced.get("values") or []}
            missing_ops = [o for o in OPERATIONS if o.lower() not in passed]
            extra_ops = sorted(passed - {o.lower() for o in OPERATIONS})
            if missing_ops:
                problems.append(f"operations not passed: {', '.join(missing_ops)}")
            if extra_ops:
                problems.append(f"operations kvguard does not deploy: {', '.join(extra_ops)}")
        else:
            problems.append(f"advanced filter {operator} on {key} may drop events")
    if not operation_filters:
        problems.append("no StringIn filter on data.operationName: not the filter kvguard deploys")
    return problems


def _delivery_problems(properties: Mapping[str, Any], delivery: Delivery) -> list[str]:
    problems = []
    retry = properties.get("retryPolicy") or {}
    for key, deployed in RETRY_POLICY.items():
        value = retry.get(key, deployed)  # absent: ARM's default, which is what kvguard deploys
        if value != deployed:
            problems.append(f"retryPolicy {key} is {value}, not {deployed}")
    if properties.get("expirationTimeUtc"):
        problems.append(f"expires at {properties['expirationTimeUtc']}: delivery stops then")
    schema = properties.get("eventDeliverySchema") or DELIVERY_SCHEMA
    if schema != DELIVERY_SCHEMA:
        problems.append(f"eventDeliverySchema is {schema}, not {DELIVERY_SCHEMA}")
    dead_letter = properties.get("deadLetterWithResourceIdentity") or {}
    destination = dead_letter.get("deadLetterDestination") or {}
    target = destination.get("properties") or {}
    if destination.get("endpointType") != "StorageBlob":
        problems.append("no dead-letter destination written with the topic's identity: undeliverable events are lost")
        return problems
    if (dead_letter.get("identity") or {}).get("type") != "SystemAssigned":
        problems.append(f"dead letters are written with a {(dead_letter.get('identity') or {}).get('type')} "
                        "identity, not the topic's own")
    if delivery.dead_letter_account_id is not None and not _same_id(target.get("resourceId"),
                                                                     delivery.dead_letter_account_id):
        problems.append(f"dead letters go to {target.get('resourceId')}, not to {delivery.dead_letter_account_id}")
    if delivery.dead_letter_container is not None and target.get("blobContainerName") != delivery.dead_letter_container:
        problems.append(f"dead letters go to container {target.get('blobContainerName')!r}, "
                        f"not {delivery.dead_letter_container!r}")
    return problems


def event_subscription_problems(body: Mapping[str, Any] | None, delivery: Delivery) -> list[str]:
    """How an event subscription (its ARM GET JSON; None: it does not exist) differs from the one
    kvguard deploys; empty when it is the same. Every difference counts: a destination that is not
    kvguard's own function (another app's function of the same name, a webhook) takes the events
    away, a filter narrowed or widened is not the one deployed (the old `StringNotIn` on the caller
    hid every write made with kvguard's identity), fewer retries, an expiry or a dead-letter
    destination elsewhere lose events or hand them to someone else."""
    if body is None:
        return ["the event subscription does not exist"]
    properties = body.get("properties") or {}
    return [*_destination_problems(properties, delivery), *_filter_problems(properties.get("filter") or {}),
            *_delivery_problems(properties, delivery)]
