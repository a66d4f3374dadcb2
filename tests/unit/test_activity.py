"""Activity Log records normalised into VaultEvents: the same event Event Grid would deliver, one
per operation, with the request body Event Grid lacks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from kvguard.activity import collapse, events, provider_filter, role_assignment_request, to_event, window
from kvguard.events import Rejected, VaultEvent, parse
from tests.activity_records import FOREIGN_TENANT, INTRUDER, SECRETS_USER, SUB, VAULT, record, role_assignment_records

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OP = "Microsoft.KeyVault/vaults/accessPolicies/write"


def event_of(item: VaultEvent | Rejected) -> VaultEvent:
    assert isinstance(item, VaultEvent), item
    return item


def test_a_record_maps_to_the_event_event_grid_would_deliver() -> None:
    activity = record("e-1", OP, "Succeeded", "2026-11-20T10:00:00Z", resource=f"{VAULT}/accessPolicies/add",
                      tenant=FOREIGN_TENANT)
    delivered = {
        "id": "e-1", "eventType": "Microsoft.Resources.ResourceWriteSuccess", "subject": f"{VAULT}/accessPolicies/add",
        "eventTime": "2026-11-20T10:00:00Z", "topic": f"/subscriptions/{SUB}",
        "data": {"resourceUri": f"{VAULT}/accessPolicies/add", "operationName": OP, "status": "Succeeded",
                 "claims": activity["claims"], "correlationId": activity["correlationId"],
                 "httpRequest": activity["httpRequest"], "tenantId": FOREIGN_TENANT},
    }
    from_log, from_grid = event_of(to_event(activity)), event_of(parse(delivered)[0])

    for name in ("id", "event_type", "vault", "operation", "kind", "access_policy_action", "status", "succeeded",
                 "caller", "correlation_id", "tenant_id", "time"):
        assert getattr(from_log, name) == getattr(from_grid, name), name
    assert from_log.caller.ip == "203.0.113.9" and from_log.caller.object_id == INTRUDER
    assert from_log.raw is activity


@pytest.mark.parametrize(("operation", "status", "event_type"), [
    ("Microsoft.KeyVault/vaults/write", "Failed", "Microsoft.Resources.ResourceWriteFailure"),
    ("Microsoft.KeyVault/vaults/delete", "Succeeded", "Microsoft.Resources.ResourceDeleteSuccess"),
    ("Microsoft.KeyVault/locations/deletedVaults/purge/action", "Succeeded",
     "Microsoft.Resources.ResourceActionSuccess"),
])
def test_the_event_type_follows_the_operation_and_status(operation: str, status: str, event_type: str) -> None:
    resource = (f"/subscriptions/{SUB}/providers/Microsoft.KeyVault/locations/northeurope/deletedVaults/kv-web-01"
                if "purge" in operation else VAULT)
    event = event_of(to_event(record("e", operation, status, "2026-11-20T10:00:00Z", resource=resource)))
    assert event.event_type == event_type
    assert event.succeeded is (status == "Succeeded")


def test_without_claims_the_records_caller_names_the_caller() -> None:
    by_user = {**record("e", OP, "Succeeded", "2026-11-20T10:00:00Z"), "claims": {}, "caller": "ops@contoso.example"}
    by_app = {**by_user, "caller": INTRUDER.upper()}
    assert event_of(to_event(by_user)).caller.upn == "ops@contoso.example"
    assert event_of(to_event(by_app)).caller.object_id == INTRUDER


@pytest.mark.parametrize(("change", "field"), [
    ({"eventDataId": None}, "eventDataId"),
    ({"operationName": {"localizedValue": "x"}}, "operationName.value"),
    ({"resourceId": ""}, "resourceId"),
    ({"eventTimestamp": 7}, "eventTimestamp"),
    ({"eventTimestamp": "last tuesday"}, "eventTimestamp"),
    ({"resourceId": f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/managedHSMs"},
     "resourceId"),
])
def test_a_bad_record_is_rejected_naming_the_field(change: dict[str, object], field: str) -> None:
    bad = {**record("e-9", OP, "Succeeded", "2026-11-20T10:00:00Z"), **change}
    rejected = to_event(bad)
    assert isinstance(rejected, Rejected)
    assert rejected.reason.startswith(field) or f": {field}" in rejected.reason, rejected.reason
    assert "eventTime:" not in rejected.reason and "data.resourceUri" not in rejected.reason  # the envelope's names
    assert json.loads(rejected.raw)["tenantId"] == bad["tenantId"]  # the raw record is kept


def test_started_and_succeeded_collapse_to_the_final_record() -> None:
    started = record("s", OP, "Started", "2026-11-20T10:00:00Z", correlation="c")
    accepted = record("a", OP, "Accepted", "2026-11-20T10:00:01Z", correlation="c")
    succeeded = record("f", OP, "Succeeded", "2026-11-20T10:00:02Z", correlation="c")
    other = record("o", OP, "Failed", "2026-11-20T09:00:00Z", correlation="d")

    collapsed = collapse([succeeded, started, other, accepted])

    assert [r["eventDataId"] for r in collapsed.records] == ["o", "f"]  # oldest first
    assert collapsed.unfinished == 0


def test_an_operation_without_a_final_record_is_counted_not_delivered() -> None:
    collapsed = collapse([record("s", OP, "Started", "2026-11-20T10:00:00Z", correlation="c")])
    assert collapsed.records == [] and collapsed.unfinished == 1


def test_unwatched_operations_categories_and_repeats_are_counted() -> None:
    kept = record("k", OP, "Succeeded", "2026-11-20T10:00:00Z")
    collapsed = collapse([
        kept, kept,
        record("r", "Microsoft.KeyVault/vaults/read", "Succeeded", "2026-11-20T10:00:00Z"),
        record("p", OP, "Succeeded", "2026-11-20T10:00:00Z", category="Policy"),
    ])
    assert [r["eventDataId"] for r in collapsed.records] == ["k"]
    assert (collapsed.unwatched, collapsed.repeated) == (2, 1)


def test_the_role_assignment_request_body_rides_on_the_final_record_as_evidence() -> None:
    [item], _ = events(role_assignment_records("2026-11-20T10:00:00Z"))
    event = event_of(item)

    assert event.id == "ra-succeeded"
    evidence = role_assignment_request(event)
    assert evidence is not None
    assert evidence["principalId"] == INTRUDER
    assert evidence["roleDefinitionId"].endswith(SECRETS_USER)
    assert evidence["scope"] == VAULT and evidence["principalType"] == "User"


def test_a_request_body_that_is_no_json_is_kept_as_text() -> None:
    weird = record("w", OP, "Succeeded", "2026-11-20T10:00:00Z", properties={"requestBody": "not json"})
    assert event_of(to_event(weird)).request == {"text": "not json"}
    assert role_assignment_request(event_of(to_event(weird))) is None  # not a role assignment


def test_the_window_goes_back_from_until_within_the_retention() -> None:
    assert window("P30D", None, NOW) == (NOW - timedelta(days=30), NOW)
    assert window("P90D", None, NOW) == (NOW - timedelta(days=90), NOW)
    start, end = window("2026-11-01T00:00:00Z", "2026-11-15T00:00:00Z", NOW)
    assert (start.day, end.day) == (1, 15)
    with pytest.raises(ValueError, match=r"^--until: 'soon' is not a timestamp such as 2026-11-01T00:00:00Z$"):
        window("P1D", "soon", NOW)
    with pytest.raises(ValueError, match=r"--since.*not before"):
        window("2026-11-20T00:00:00Z", "2026-11-10T00:00:00Z", NOW)


@pytest.mark.parametrize("since", ["P100D", "P91D", "2026-01-01T00:00:00Z"])
def test_a_start_further_back_than_the_activity_log_keeps_is_refused(since: str) -> None:
    with pytest.raises(ValueError, match=r"^--since: .* reaches back \d+ days; the Activity Log keeps 90"):
        window(since, None, NOW)


def test_the_until_help_says_what_its_error_says() -> None:
    from kvguard.cli import build_parser

    backfill = build_parser()._subparsers._group_actions[0].choices["backfill"]  # type: ignore[union-attr]
    (until,) = [a for a in backfill._actions if "--until" in a.option_strings]
    with pytest.raises(ValueError) as refused:
        window("P1D", "soon", NOW)
    assert "a timestamp such as 2026-11-01T00:00:00Z" in (until.help or "")
    assert "a timestamp such as 2026-11-01T00:00:00Z" in str(refused.value)
    assert "duration" not in (until.help or "") and "duration" not in str(refused.value)


def test_the_filter_is_a_shape_the_api_allows() -> None:
    text = provider_filter("Microsoft.KeyVault", NOW - timedelta(days=1), NOW)
    assert text == ("eventTimestamp ge '2026-11-30T12:00:00Z' and eventTimestamp le '2026-12-01T12:00:00Z' "
                    "and resourceProvider eq 'Microsoft.KeyVault'")
