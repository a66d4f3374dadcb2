"""The plain path of events.parse (an Event Grid resource event read without building the models)
returns what the models return, and hands everything else to them: the same event, or the same
rejection naming the same field."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kvguard import events
from kvguard.events import Rejected, VaultEvent

SUB = "8c3f1d2e-7a6b-4c5d-9e0f-1a2b3c4d5e6f"
VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-orders/providers/Microsoft.KeyVault/vaults/kv-orders"
CALLER = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"


def event() -> dict[str, Any]:
    return {
        "id": "evt-1",
        "topic": f"/subscriptions/{SUB}",
        "subject": VAULT,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-27T10:00:00Z",
        "dataVersion": "2",
        "data": {
            "authorization": {"scope": VAULT, "action": "Microsoft.KeyVault/vaults/write",
                              "evidence": {"role": "Owner", "principalId": CALLER, "principalType": "User"}},
            "claims": {"oid": CALLER, "appid": "APP-1", "ipaddr": "10.0.0.1", "name": "Ines"},
            "correlationId": "c-1",
            "httpRequest": {"clientIpAddress": "10.0.0.2", "method": "patch", "clientRequestId": "r-1"},
            "resourceProvider": "Microsoft.KeyVault",
            "resourceUri": VAULT + "/accessPolicies/add",
            "operationName": "Microsoft.KeyVault/vaults/accessPolicies/write",
            "status": "Succeeded",
            "subscriptionId": SUB,
            "tenantId": "TENANT-1",
        },
    }


# Where a delivery may differ from the usual one, and what it may hold there instead.
PLACES = [
    ("id",), ("subject",), ("eventType",), ("eventTime",), ("topic",), ("dataVersion",), ("data",),
    ("event_type",), ("event_time",), ("data_version",),
    ("data", "resourceUri"), ("data", "operationName"), ("data", "status"), ("data", "claims"),
    ("data", "authorization"), ("data", "authorization", "evidence"), ("data", "authorization", "scope"),
    ("data", "httpRequest"), ("data", "httpRequest", "method"), ("data", "httpRequest", "clientIpAddress"),
    ("data", "httpRequest", "clientRequestId"), ("data", "httpRequest", "client_request_id"),
    ("data", "correlationId"), ("data", "tenantId"), ("data", "subscriptionId"), ("data", "resource_uri"),
    ("data", "tenant_id"), ("data", "http_request"),
]
VALUES = st.sampled_from([
    None, "", " ", "x", 5, 1.5, True, [], [1], {}, {"k": "v"}, {1: "v"}, "{}", '{"oid": "abc"}', "not json",
    "Microsoft.Resources.ResourceWriteFailure", "Microsoft.Storage.BlobCreated", "Microsoft.KeyVault/vaults/write",
    VAULT, "/subscriptions/x", "2026-11-27T10:00:00", "2026-11-27T10:00:00.123456+02:00", "2026-11-27 10:00:00Z",
    "2026-11-27T10:00:00.1234567Z", "1700000000", 1700000000, "2026-13-01T00:00:00Z", "2026-11-27", "Failed",
    "\u00e9v\u00e9nement",
])
MISSING = object()


def changed(place: tuple[str, ...], value: Any) -> dict[str, Any]:
    raw = event()
    *path, last = place
    target: Any = raw
    for key in path:
        if not isinstance(target, dict) or not isinstance(target.get(key), dict):
            return raw
        target = target[key]
    if value is MISSING:
        target.pop(last, None)
    else:
        target[last] = copy.deepcopy(value)
    return raw


def assert_same(raw: dict[str, Any]) -> None:
    plain, models = events._parse_one(copy.deepcopy(raw)), events._parse_one(copy.deepcopy(raw), plain=False)
    assert type(plain) is type(models), (plain, models)
    if isinstance(models, Rejected):
        assert isinstance(plain, Rejected)
        assert (plain.reason, plain.raw, plain.event_id) == (models.reason, models.raw, models.event_id)
        return
    assert isinstance(plain, VaultEvent) and isinstance(models, VaultEvent)
    assert plain == models
    assert plain.raw == models.raw and plain.request == models.request
    assert plain.time is not None and models.time is not None
    assert (plain.time.isoformat(), plain.time.utcoffset()) == (models.time.isoformat(), models.time.utcoffset())


def test_the_usual_delivery_takes_the_plain_path_and_matches_the_models() -> None:
    assert events._plain_resource_event(event()) is not None
    assert_same(event())


def test_what_the_plain_path_declines_goes_through_the_models() -> None:
    spelled = changed(("event_type",), "Microsoft.Resources.ResourceWriteSuccess")
    as_text = changed(("data", "claims"), '{"oid": "abc"}')
    wrong = changed(("data", "status"), 5)
    for raw in (spelled, as_text, wrong):
        assert events._plain_resource_event(raw) is None
        assert_same(raw)
    rejected = events._parse_one(wrong)
    assert isinstance(rejected, Rejected) and rejected.reason.startswith("data.status: ")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PLACES), VALUES | st.just(MISSING)), min_size=1, max_size=3))
def test_any_change_to_a_delivery_reads_the_same_on_both_paths(changes: list[tuple[tuple[str, ...], Any]]) -> None:
    raw = event()
    for place, value in changes:
        one = changed(place, value)
        # apply on top of the earlier changes
        *path, last = place
        target: Any = raw
        for key in path:
            target = target.get(key) if isinstance(target, dict) else None
        if isinstance(target, dict):
            source: Any = one
            for key in path:
                source = source[key]
            if last in source:
                target[last] = source[last]
            else:
                target.pop(last, None)
    assert_same(raw)
