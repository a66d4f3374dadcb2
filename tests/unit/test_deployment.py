"""The check of kvguard's event subscription against what kvguard needs, on ARM GET bodies."""

from __future__ import annotations

from typing import Any

from kvguard.deployment import EVENT_TYPES, OPERATIONS, event_subscription_problems

APP = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/func-kvguard"


def deployed(**filter_fields: Any) -> dict[str, Any]:
    event_filter: dict[str, Any] = {
        "includedEventTypes": list(EVENT_TYPES),
        "advancedFilters": [{"operatorType": "StringIn", "key": "data.operationName", "values": list(OPERATIONS)}],
        **filter_fields,
    }
    return {"properties": {"destination": {"endpointType": "AzureFunction",
                                           "properties": {"resourceId": f"{APP}/functions/on_vault_event"}},
                           "filter": event_filter}}


def test_as_deployed_has_no_problem_and_operations_compare_case_insensitively() -> None:
    assert event_subscription_problems(deployed()) == []
    lowered = deployed()
    lowered["properties"]["filter"]["advancedFilters"][0]["values"] = [o.lower() for o in OPERATIONS]
    assert event_subscription_problems(lowered) == []


def test_no_filter_at_all_passes_everything() -> None:
    assert event_subscription_problems({"properties": {}}) == []


def test_a_missing_subscription_is_one_problem() -> None:
    assert event_subscription_problems(None) == ["the event subscription does not exist"]


def test_every_way_of_dropping_events_is_named() -> None:
    body = deployed(subjectBeginsWith="/subscriptions/s/resourceGroups/rg-other",
                    includedEventTypes=["Microsoft.Resources.ResourceWriteSuccess"])
    body["properties"]["filter"]["advancedFilters"] += [
        {"operatorType": "StringNotIn", "key": "data.authorization.evidence.principalId", "values": ["me"]}]
    body["properties"]["filter"]["advancedFilters"][0]["values"] = ["Microsoft.KeyVault/vaults/write"]
    body["properties"]["destination"]["properties"]["resourceId"] = f"{APP}-elsewhere/functions/collect"

    problems = event_subscription_problems(body)

    assert problems[0] == f"events go to {APP}-elsewhere/functions/collect, not to on_vault_event"
    assert problems[1].startswith("event types not passed: Microsoft.Resources.ResourceActionFailure")
    assert problems[2] == "subjectBeginsWith '/subscriptions/s/resourceGroups/rg-other' narrows the subjects"
    assert problems[3].startswith("operations not passed: Microsoft.KeyVault/vaults/accessPolicies/write")
    assert "Microsoft.Web/sites/config/write" in problems[3]
    assert problems[4] == "advanced filter StringNotIn on data.authorization.evidence.principalId may drop events"
    assert len(problems) == 5
