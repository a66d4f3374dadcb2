"""The check of kvguard's event subscription against the one kvguard deploys, on ARM GET bodies
(the shape of `GET …/systemTopics/{topic}/eventSubscriptions/{name}`, api-version 2022-06-15)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from kvguard.deployment import (
    EVENT_TYPES,
    MAX_FILTER_VALUES,
    OPERATIONS,
    SURFACE_OPERATIONS,
    SURFACES_SUFFIX,
    VAULT_EVENTS,
    Delivery,
    changed_own_resource,
    delivery_of,
    deployed_operations,
    event_subscription_problems,
)

RG = "/subscriptions/s/resourceGroups/rg"
APP = f"{RG}/providers/Microsoft.Web/sites/func-kvguard"
ACCOUNT = f"{RG}/providers/Microsoft.Storage/storageAccounts/stkvguard"
CONTAINER = f"{ACCOUNT}/blobServices/default/containers/deadletters"
TOPIC = f"{RG}/providers/Microsoft.EventGrid/systemTopics/evgst-kvguard"
SUBSCRIPTION = f"{TOPIC}/eventSubscriptions/kvguard-prod"
DELIVERY = delivery_of([SUBSCRIPTION, APP, CONTAINER])


def deployed(**filter_fields: Any) -> dict[str, Any]:
    """What ARM answers for the subscription infra/modules/event-subscription.bicep deploys."""
    event_filter: dict[str, Any] = {
        "includedEventTypes": list(EVENT_TYPES),
        "advancedFilters": [{"operatorType": "StringIn", "key": "data.operationName", "values": list(VAULT_EVENTS)}],
        "enableAdvancedFilteringOnArrays": False,
        **filter_fields,
    }
    return {"id": SUBSCRIPTION, "name": "kvguard-prod", "type": "Microsoft.EventGrid/systemTopics/eventSubscriptions",
            "properties": {
                "provisioningState": "Succeeded", "topic": TOPIC.lower(),
                "destination": {"endpointType": "AzureFunction",
                                "properties": {"resourceId": f"{APP}/functions/on_vault_event", "maxEventsPerBatch": 1,
                                               "preferredBatchSizeInKilobytes": 64}},
                "filter": event_filter,
                "labels": [],
                "eventDeliverySchema": "EventGridSchema",
                "retryPolicy": {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440},
                "deadLetterWithResourceIdentity": {
                    "identity": {"type": "SystemAssigned"},
                    "deadLetterDestination": {"endpointType": "StorageBlob",
                                              "properties": {"resourceId": ACCOUNT,
                                                             "blobContainerName": "deadletters"}}},
            }}


def test_as_deployed_has_no_problem_and_ids_and_operations_compare_case_insensitively() -> None:
    assert event_subscription_problems(deployed(), DELIVERY, VAULT_EVENTS) == []
    lowered = deployed()
    lowered["properties"]["filter"]["advancedFilters"][0]["values"] = [o.lower() for o in VAULT_EVENTS]
    lowered["properties"]["destination"]["properties"]["resourceId"] = f"{APP}/functions/on_vault_event".lower()
    assert event_subscription_problems(lowered, DELIVERY, VAULT_EVENTS) == []


def test_the_delivery_is_read_from_the_own_resource_ids() -> None:
    assert Delivery(APP, ACCOUNT, "deadletters") == DELIVERY
    assert DELIVERY.function_id == f"{APP}/functions/on_vault_event"
    assert delivery_of([SUBSCRIPTION]) == Delivery()


SURFACES = SUBSCRIPTION + SURFACES_SUFFIX


def test_each_own_subscription_is_judged_by_the_share_of_operations_it_was_deployed_with() -> None:
    own = [SUBSCRIPTION, SURFACES, APP, CONTAINER]
    assert deployed_operations(SUBSCRIPTION, own) == VAULT_EVENTS
    assert deployed_operations(SURFACES.upper(), own) == SURFACE_OPERATIONS
    # A first subscription whose environment's own name ends in the suffix keeps the vault's share.
    assert deployed_operations(SURFACES, [SURFACES, APP]) == VAULT_EVENTS
    assert len(VAULT_EVENTS) <= MAX_FILTER_VALUES and len(SURFACE_OPERATIONS) <= MAX_FILTER_VALUES
    assert set(VAULT_EVENTS) | set(SURFACE_OPERATIONS) == set(OPERATIONS)
    assert not set(VAULT_EVENTS) & set(SURFACE_OPERATIONS)


def test_a_subscription_carrying_the_other_share_is_named_for_both_halves() -> None:
    """The surfaces subscription edited to pass the vault's operations drops every further-surface
    event: each operation missing and each one that does not belong is named."""
    surfaces = deployed()
    surfaces["id"] = SURFACES
    assert event_subscription_problems(surfaces, DELIVERY, SURFACE_OPERATIONS) == [
        f"operations not passed: {', '.join(SURFACE_OPERATIONS)}",
        f"operations kvguard does not deploy: {', '.join(sorted(o.lower() for o in VAULT_EVENTS))}",
    ]
    surfaces["properties"]["filter"]["advancedFilters"][0]["values"] = list(SURFACE_OPERATIONS)
    assert event_subscription_problems(surfaces, DELIVERY, SURFACE_OPERATIONS) == []
    dropped = [o for o in SURFACE_OPERATIONS if o != "Microsoft.Authorization/denyAssignments/write"]
    surfaces["properties"]["filter"]["advancedFilters"][0]["values"] = dropped
    assert event_subscription_problems(surfaces, DELIVERY, SURFACE_OPERATIONS) == [
        "operations not passed: Microsoft.Authorization/denyAssignments/write"]


def test_a_missing_subscription_is_one_problem() -> None:
    assert event_subscription_problems(None, DELIVERY, VAULT_EVENTS) == ["the event subscription does not exist"]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = body["properties"]
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return edit


HIJACKS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("another app's function of the same name",
     _set("destination.properties.resourceId", f"{APP}-x/functions/on_vault_event"),
     f"events go to {APP}-x/functions/on_vault_event, not to {APP}/functions/on_vault_event"),
    ("a webhook", _set("destination", {"endpointType": "WebHook",
                                       "properties": {"endpointBaseUrl": "https://collector.example.net/api/events",
                                                      "maxEventsPerBatch": 1}}),
     "events go to a WebHook endpoint https://collector.example.net/api/events, not to kvguard's function "
     "on_vault_event"),
    ("batched", _set("destination.properties.maxEventsPerBatch", 10), "maxEventsPerBatch is 10, not 1"),
    ("fewer retries", _set("retryPolicy.maxDeliveryAttempts", 1), "retryPolicy maxDeliveryAttempts is 1, not 30"),
    ("shorter time to live", _set("retryPolicy.eventTimeToLiveInMinutes", 1),
     "retryPolicy eventTimeToLiveInMinutes is 1, not 1440"),
    ("an expiry", _set("expirationTimeUtc", "2026-12-08T00:00:00Z"),
     "expires at 2026-12-08T00:00:00Z: delivery stops then"),
    ("another schema", _set("eventDeliverySchema", "CloudEventSchemaV1_0"),
     "eventDeliverySchema is CloudEventSchemaV1_0, not EventGridSchema"),
    ("dead letters removed", _set("deadLetterWithResourceIdentity", None),
     "no dead-letter destination written with the topic's identity: undeliverable events are lost"),
    ("dead letters to another account",
     _set("deadLetterWithResourceIdentity.deadLetterDestination.properties.resourceId", f"{ACCOUNT}x"),
     f"dead letters go to {ACCOUNT}x, not to {ACCOUNT}"),
    ("dead letters to another container",
     _set("deadLetterWithResourceIdentity.deadLetterDestination.properties.blobContainerName", "app-package"),
     "dead letters go to container 'app-package', not 'deadletters'"),
    ("dead letters with another identity", _set("deadLetterWithResourceIdentity.identity", {"type": "UserAssigned"}),
     "dead letters are written with a UserAssigned identity, not the topic's own"),
    ("an event type added",
     _set("filter.includedEventTypes", [*EVENT_TYPES, "Microsoft.Resources.ResourceActionCancel"]),
     "event types kvguard does not deploy: Microsoft.Resources.ResourceActionCancel"),
    ("the event type list removed", _set("filter.includedEventTypes", None),
     "includedEventTypes is not set: every event type is delivered"),
    ("the operation filter removed", _set("filter.advancedFilters", []),
     "no StringIn filter on data.operationName: not the filter kvguard deploys"),
    ("an operation added", _set("filter.advancedFilters", [{"operatorType": "StringIn", "key": "data.operationName",
                                                            "values": [*VAULT_EVENTS, "Microsoft.Web/sites/read"]}]),
     "operations kvguard does not deploy: microsoft.web/sites/read"),
]


@pytest.mark.parametrize(("edit", "problem"), [(edit, problem) for _, edit, problem in HIJACKS],
                         ids=[name for name, _, _ in HIJACKS])
def test_every_difference_from_the_deployed_subscription_is_named(
    edit: Callable[[dict[str, Any]], None], problem: str
) -> None:
    body = copy.deepcopy(deployed())
    edit(body)

    assert event_subscription_problems(body, DELIVERY, VAULT_EVENTS) == [problem]


def test_without_a_named_app_only_the_function_name_is_judged() -> None:
    body = deployed()
    body["properties"]["destination"]["properties"]["resourceId"] = f"{APP}-x/functions/on_vault_event"
    assert event_subscription_problems(body, Delivery(), VAULT_EVENTS) == []
    body["properties"]["destination"]["properties"]["resourceId"] = f"{APP}/functions/collect"
    assert event_subscription_problems(body, Delivery(), VAULT_EVENTS) == [f"events go to {APP}/functions/collect, "
                                                             "not to on_vault_event"]


def test_every_way_of_dropping_events_is_named() -> None:
    body = deployed(subjectBeginsWith="/subscriptions/s/resourceGroups/rg-other",
                    includedEventTypes=["Microsoft.Resources.ResourceWriteSuccess"])
    body["properties"]["filter"]["advancedFilters"] += [
        {"operatorType": "StringNotIn", "key": "data.authorization.evidence.principalId", "values": ["me"]}]
    body["properties"]["filter"]["advancedFilters"][0]["values"] = ["Microsoft.KeyVault/vaults/write"]

    problems = event_subscription_problems(body, DELIVERY, VAULT_EVENTS)

    assert problems[0].startswith("event types not passed: Microsoft.Resources.ResourceActionFailure")
    assert problems[1] == "subjectBeginsWith '/subscriptions/s/resourceGroups/rg-other' narrows the subjects"
    assert problems[2].startswith("operations not passed: Microsoft.KeyVault/vaults/accessPolicies/write")
    assert "Microsoft.Web/sites/config/write" in problems[2] and "Microsoft.Web/sites/stop/action" in problems[2]
    assert problems[3] == "advanced filter StringNotIn on data.authorization.evidence.principalId may drop events"
    assert len(problems) == 4


@pytest.mark.parametrize(("subject", "operation", "owned"), [
    (APP, "Microsoft.Web/sites/write", APP),
    (APP.upper(), "Microsoft.Web/sites/stop/action", APP),
    (f"{APP}/config/appsettings", "Microsoft.Web/sites/config/write", APP),
    (TOPIC, "Microsoft.EventGrid/systemTopics/delete", SUBSCRIPTION),
    (f"{TOPIC}-other", "Microsoft.EventGrid/systemTopics/delete", None),
    (f"{APP}-other", "Microsoft.Web/sites/delete", None),
    (APP, "Microsoft.Web/sites/read", None),
])
def test_the_changed_own_resource(subject: str, operation: str, owned: str | None) -> None:
    assert changed_own_resource(subject, operation, [SUBSCRIPTION, APP]) == owned
