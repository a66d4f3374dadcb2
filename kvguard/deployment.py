"""What kvguard's own deployment must look like for kvguard to see every change: the event types
and operations its Event Grid subscription has to pass, and a check of a subscription's ARM JSON
against them (the reconcile timer's half of KV-SELF-02). The Bicep's filter is tested against the
same lists, so the app and the infra cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
APP_CONFIG_WRITE = "Microsoft.Web/sites/config/write"
# Changes to kvguard's own deployment (KV-SELF-02).
DEPLOYMENT_OPERATIONS = (EVENT_SUBSCRIPTION_WRITE, EVENT_SUBSCRIPTION_DELETE, APP_CONFIG_WRITE)
OPERATIONS = VAULT_OPERATIONS + ADJACENT_OPERATIONS + DEPLOYMENT_OPERATIONS
# The rules that judge a change to kvguard's own deployment (it concerns no vault).
DEPLOYMENT_RULES = ("KV-SELF-02",)
FUNCTION = "on_vault_event"


def is_deployment_operation(operation: str | None) -> bool:
    return (operation or "").strip().lower() in {o.lower() for o in DEPLOYMENT_OPERATIONS}


def is_event_subscription(resource_id: str) -> bool:
    return "/providers/microsoft.eventgrid/" in resource_id.lower() and "/eventsubscriptions/" in resource_id.lower()


def event_subscription_problems(body: Mapping[str, Any] | None) -> list[str]:
    """Why an event subscription (its ARM GET JSON; None: it does not exist) would keep events from
    kvguard; empty when it passes every event type and operation kvguard needs to its function.
    Any advanced filter beyond the operation list counts: each one is a way to drop events (the
    old `StringNotIn` on the caller hid every write made with kvguard's identity)."""
    if body is None:
        return ["the event subscription does not exist"]
    properties = body.get("properties") or {}
    problems = []
    destination = ((properties.get("destination") or {}).get("properties") or {}).get("resourceId")
    if destination is not None and not str(destination).lower().endswith(f"/functions/{FUNCTION}"):
        problems.append(f"events go to {destination}, not to {FUNCTION}")
    event_filter = properties.get("filter") or {}
    included = event_filter.get("includedEventTypes")
    if included is not None:
        missing = sorted(set(EVENT_TYPES) - set(included))
        if missing:
            problems.append(f"event types not passed: {', '.join(missing)}")
    for key in ("subjectBeginsWith", "subjectEndsWith"):
        if event_filter.get(key):
            problems.append(f"{key} {event_filter[key]!r} narrows the subjects")
    for advanced in event_filter.get("advancedFilters") or []:
        operator, key = advanced.get("operatorType"), advanced.get("key")
        if operator == "StringIn" and key == "data.operationName":
            passed = {str(v).lower() for v in advanced.get("values") or []}
            missing = [o for o in OPERATIONS if o.lower() not in passed]
            if missing:
                problems.append(f"operations not passed: {', '.join(missing)}")
        else:
            problems.append(f"advanced filter {operator} on {key} may drop events")
    return problems
