"""Whatever reaches the endpoint, the pipeline answers with an outcome and a reason; it never raises.

A raise makes Event Grid redeliver a payload that can never succeed, for up to a day. So every
payload here goes straight into a Pipeline built the way replay builds it (simulated world,
embedded SQLite state store), and bad input must come back as `rejected` (stored with its raw
payload) or `ignored`, while the valid-looking parts of a delivery still get processed.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvguard.outcome import Outcome
from kvguard.policy import Policy
from kvguard.replay import ReplayRun, build_run
from kvguard.scenario import LoadedScenario, Scenario

SUBSCRIPTION = "6b1f3d5a-8c2e-4f7a-9b0d-2e4c6a8b0d13"
TENANT = "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b"
VAULT_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-garbage/providers/Microsoft.KeyVault/vaults/kv-garbage"
DELETED_VAULT_ID = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.KeyVault/locations/westus/deletedVaults/kv-old"
OUTCOMES = {"processed", "duplicate", "ignored", "rejected", "self"}

VAULT: dict[str, Any] = {
    "id": VAULT_ID,
    "name": "kv-garbage",
    "type": "Microsoft.KeyVault/vaults",
    "location": "westeurope",
    "tags": {"owner": "qa"},
    "properties": {
        "tenantId": TENANT,
        "sku": {"family": "A", "name": "standard"},
        "accessPolicies": [{"tenantId": TENANT, "objectId": "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
                            "permissions": {"secrets": ["get"]}}],
        "enableRbacAuthorization": False,
        "enableSoftDelete": True,
        "softDeleteRetentionInDays": 90,
        "enablePurgeProtection": True,
        "publicNetworkAccess": "Disabled",
        "networkAcls": {"defaultAction": "Deny", "bypass": "None", "ipRules": [], "virtualNetworkRules": []},
    },
}


def fresh_run(mode: str = "remediate") -> ReplayRun:
    """A pipeline over one baselined vault, built exactly as `kvguard replay` builds it."""
    scenario = Scenario(name="garbage", vaults=[VAULT])
    return build_run(LoadedScenario(path="<garbage>", scenario=scenario, policy=Policy(mode=mode), steps=[]))


def write_event(**overrides: Any) -> dict[str, Any]:
    """A well-formed ResourceWriteSuccess for the test vault."""
    event: dict[str, Any] = {
        "id": "7c6b5a49-3827-4160-9f8e-7d6c5b4a3928",
        "topic": f"/subscriptions/{SUBSCRIPTION}",
        "subject": VAULT_ID.replace("resourceGroups", "resourcegroups"),
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-27T10:00:01.250Z",
        "dataVersion": "2",
        "metadataVersion": "1",
        "data": {
            "authorization": {
                "scope": VAULT_ID,
                "action": "Microsoft.KeyVault/vaults/write",
                "evidence": {"role": "Contributor", "principalId": "2b3c4d5e-6f70-4819-a2b3-c4d5e6f70819"},
            },
            "claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier":
                       "2b3c4d5e-6f70-4819-a2b3-c4d5e6f70819", "ipaddr": "192.0.2.44"},
            "correlationId": "8d7c6b5a-4938-4271-8a0f-9e8d7c6b5a49",
            "resourceProvider": "Microsoft.KeyVault",
            "resourceUri": VAULT_ID,
            "operationName": "Microsoft.KeyVault/vaults/write",
            "status": "Succeeded",
            "subscriptionId": SUBSCRIPTION,
            "tenantId": TENANT,
        },
    }
    event.update(overrides)
    return event


def handle(run: ReplayRun, raw: Any) -> list[Outcome]:
    """pipeline.handle, with the invariants every answer must meet."""
    before = len(run.pipeline.store.list_rejected())
    outcomes = run.pipeline.handle(raw)
    assert outcomes, "every delivery gets at least one outcome"
    for outcome in outcomes:
        assert outcome.outcome in OUTCOMES
        assert isinstance(outcome.reason, str) and outcome.reason.strip()
        json.dumps(outcome.to_json(), default=str)  # always reportable
    stored = run.pipeline.store.list_rejected()[before:]
    assert len(stored) == sum(o.outcome == "rejected" for o in outcomes)
    assert [r.reason for r in stored] == [o.reason for o in outcomes if o.outcome == "rejected"]
    assert all(isinstance(r.raw, str) for r in stored)
    return outcomes


def nested(depth: int) -> Any:
    value: Any = {"resourceUri": VAULT_ID}
    for level in range(depth):
        value = {"level": level, "data": value} if level % 2 else [value]
    return value


# --- named garbage ----------------------------------------------------------------------------------

STORAGE_EVENT = {
    "id": "1d2c3b4a-5968-4776-8594-a3b2c1d0e9f8",
    "topic": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-logs/providers/Microsoft.Storage/storageAccounts/stlogs",
    "subject": "/blobServices/default/containers/logs/blobs/app.log",
    "eventType": "Microsoft.Storage.BlobCreated",
    "eventTime": "2026-11-27T10:00:00Z",
    "data": {"api": "PutBlob", "url": "https://stlogs.blob.core.windows.net/logs/app.log"},
    "dataVersion": "",
    "metadataVersion": "1",
}
NO_SUBJECT = {k: v for k, v in write_event().items() if k != "subject"}

GARBAGE: list[tuple[str, Any, str, str]] = [
    # name, payload, expected outcome, a part of the expected reason
    ("a number", 42, "rejected", "expected a JSON object, got int"),
    ("a float", 3.25, "rejected", "expected a JSON object, got float"),
    ("null", None, "rejected", "expected a JSON object, got NoneType"),
    ("true", True, "rejected", "expected a JSON object, got bool"),
    ("a string that is not JSON", "definitely not an event", "rejected", "not valid JSON"),
    ("an empty string", "", "rejected", "not valid JSON"),
    ("JSON text of a number", "17", "rejected", "got int"),
    ("an empty object", {}, "rejected", "id: field required"),
    ("an empty object as text", "{}", "rejected", "eventType: field required"),
    ("an empty batch", [], "rejected", "empty batch"),
    ("an empty batch as bytes", b"[]", "rejected", "empty batch"),
    ("bytes that are not UTF-8", b"\xff\xfe\x00{\x9c", "rejected", "not UTF-8"),
    ("truncated JSON bytes", b'{"id": "abc", "eventType": ', "rejected", "not valid JSON"),
    ("a Storage event", STORAGE_EVENT, "ignored", "Microsoft.Storage.BlobCreated does not concern a Key Vault"),
    ("an event with no subject", NO_SUBJECT, "rejected", "subject: field required"),
    ("data is a list", write_event(data=[1, 2, 3]), "rejected", "data: expected an object"),
    ("claims are not JSON", write_event(data={**write_event()["data"], "claims": "{oops"}), "rejected", "claims"),
    ("eventTime is not a time", write_event(eventTime="half past ten"), "rejected", "eventTime"),
    ("CloudEvents 0.3", {"specversion": "0.3", "id": "x", "type": "t", "source": "/s"}, "rejected",
     "unsupported cloudevents specversion '0.3'"),
    ("a Key Vault operation on no vault",
     write_event(subject=f"/subscriptions/{SUBSCRIPTION}",
                 data={**write_event()["data"], "resourceUri": f"/subscriptions/{SUBSCRIPTION}"}),
     "rejected", "names no Key Vault"),
    ("a lone surrogate escape in the resource id",
     json.dumps(write_event(data={**write_event()["data"], "resourceUri": VAULT_ID + "\udfff"})),
     "rejected", "data.resourceUri"),
    ("huge nested data", write_event(data={**write_event()["data"], "extra": nested(400)}), "processed", ""),
    ("huge nested garbage", nested(400), "rejected", "id: field required"),
    ("huge nested garbage as text", json.dumps([nested(400)]).encode(), "rejected", "id: field required"),
    ("a very long string", "x" * 1_000_000, "rejected", "not valid JSON"),
]


@pytest.mark.parametrize(("payload", "outcome", "reason"), [g[1:] for g in GARBAGE], ids=[g[0] for g in GARBAGE])
def test_garbage_gets_an_outcome_and_a_reason(payload: Any, outcome: str, reason: str) -> None:
    [result] = handle(fresh_run(), payload)
    assert result.outcome == outcome
    assert reason in result.reason


def test_rejected_payloads_are_stored_with_the_raw_payload() -> None:
    run = fresh_run()
    handle(run, "definitely not an event")
    handle(run, b"\xff\xfe\x00{\x9c")
    handle(run, NO_SUBJECT)
    handle(run, 42)
    stored = run.pipeline.store.list_rejected()
    assert [r.raw for r in stored[:1]] == ["definitely not an event"]
    # bytes that are not UTF-8 are kept byte for byte, escaped
    assert stored[1].raw.encode("utf-8").decode("unicode_escape").encode("latin-1") == b"\xff\xfe\x00{\x9c"
    assert json.loads(stored[2].raw) == NO_SUBJECT
    assert stored[2].event_id == NO_SUBJECT["id"]
    assert stored[3].raw == "42" and stored[3].event_id is None
    assert all(r.at == run.world.clock.now() for r in stored)


def test_a_mixed_batch_processes_the_good_and_rejects_the_bad() -> None:
    run = fresh_run()
    batch = [STORAGE_EVENT, write_event(), 7, NO_SUBJECT, write_event()]
    outcomes = handle(run, json.dumps(batch).encode())
    assert [o.outcome for o in outcomes] == ["ignored", "processed", "rejected", "rejected", "duplicate"]
    assert outcomes[1].vault == VAULT_ID


def test_a_valid_event_in_the_same_pipeline_still_works_after_garbage() -> None:
    run = fresh_run()
    for _, payload, _, _ in GARBAGE:
        handle(run, payload)
    run.world.put({**VAULT, "properties": {**VAULT["properties"], "publicNetworkAccess": "Enabled"}})
    [outcome] = handle(run, write_event(id="0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"))
    assert outcome.outcome == "processed"
    assert "KV-NET-01" in {f.rule for f in outcome.findings}
    assert run.pipeline.gateway.get(VAULT_ID).public_network_access == "disabled"  # type: ignore[union-attr]


@pytest.mark.parametrize("payload", [
    "[" * 100_000 + "]" * 100_000,
    '{"data": ' * 5_000 + "1" + "}" * 5_000,
    nested(5_000),
], ids=["deep array text", "deep object text", "deep object"])
def test_json_nested_deeper_than_the_interpreter_allows_is_rejected(payload: Any) -> None:
    [result] = handle(fresh_run(), payload)
    assert result.outcome == "rejected"
    assert result.reason


@pytest.mark.parametrize("payload", [
    json.dumps(write_event(id="\ud800")),
    json.dumps(write_event(data={**write_event()["data"], "claims": {"oid": "\udc00"}})),
    json.dumps(write_event(data={**write_event()["data"], "httpRequest": {"clientIpAddress": "\ud83d"}})),
], ids=["event id", "caller object id", "caller address"])
def test_a_lone_surrogate_escape_is_rejected(payload: str) -> None:
    [result] = handle(fresh_run(), payload)
    assert result.outcome == "rejected"
    assert result.reason


# --- generated garbage -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=25,
)
event_ids = st.uuids().map(str) | st.sampled_from(["dup-1", "dup-2"])
principals = st.sampled_from([
    "2b3c4d5e-6f70-4819-a2b3-c4d5e6f70819",
    "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
    "5CA1AB1E-0000-4000-8000-00000000C0DE",  # kvguard's own identity in the simulated world: outcome self
])
resource_ids = st.sampled_from([
    VAULT_ID, VAULT_ID.lower(), VAULT_ID + "/accessPolicies/add", VAULT_ID.upper() + "/", DELETED_VAULT_ID,
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-garbage/providers/Microsoft.KeyVault/vaults/kv-unknown",
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-garbage/providers/Microsoft.Storage/storageAccounts/stlogs",
])
operations = st.sampled_from([
    "Microsoft.KeyVault/vaults/write", "microsoft.keyvault/vaults/accesspolicies/write",
    "Microsoft.KeyVault/vaults/delete", "Microsoft.KeyVault/locations/deletedVaults/purge/action",
    "Microsoft.KeyVault/vaults/secrets/write", "Microsoft.Storage/storageAccounts/write",
])
event_types = st.sampled_from([
    "Microsoft.Resources.ResourceWriteSuccess", "Microsoft.Resources.ResourceWriteFailure",
    "Microsoft.Resources.ResourceDeleteSuccess", "Microsoft.Resources.ResourceActionSuccess",
    "Microsoft.Resources.ResourceWriteCancel", "Microsoft.KeyVault.VaultAccessPolicyChanged",
    "Microsoft.KeyVault.SecretNewVersionCreated", "Microsoft.Storage.BlobCreated",
])
times = st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat().replace("+00:00", "Z"))
claims = st.fixed_dictionaries({}, optional={
    "oid": principals, "appid": principals, "tid": st.sampled_from([TENANT, "72d0c1b3-9e8f-4a6b-b5c4-d3e2f1a0b9c8"]),
    "upn": st.sampled_from(["ops@contoso.example", "guest_fabrikam.example#EXT#@contoso.example"]),
    "idp": st.sampled_from(["live.com", f"https://sts.windows.net/{TENANT}/"]),
    "ipaddr": st.sampled_from(["203.0.113.9", "[2001:db8::1]:443", "10.1.2.3", "nonsense"]),
})
# The world as the event finds it: unchanged, or changed in ways that fire rules.
changes = st.sampled_from([
    {},
    {"publicNetworkAccess": "Enabled"},
    {"networkAcls": {"defaultAction": "Allow", "bypass": "AzureServices", "ipRules": [{"value": "0.0.0.0/0"}]}},
    {"enableRbacAuthorization": True},
    {"accessPolicies": [*VAULT["properties"]["accessPolicies"],
                        {"tenantId": TENANT, "objectId": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
                         "permissions": {"secrets": ["get", "list"], "keys": ["all"]}}]},
    {"accessPolicies": []},
    {"softDeleteRetentionInDays": 7, "enablePurgeProtection": None},
])


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """A plausible Event Grid or CloudEvents envelope, then a few of its fields dropped or replaced by garbage."""
    data: dict[str, Any] = {
        "resourceUri": draw(resource_ids),
        "operationName": draw(operations),
        "status": draw(st.sampled_from(["Succeeded", "Failed", "Canceled"])),
        "authorization": {"scope": draw(resource_ids), "evidence": {"principalId": draw(principals)}},
        "claims": draw(claims),
        "httpRequest": {"clientIpAddress": draw(st.sampled_from(["198.51.100.3", "[2001:db8::5]:8443", ""]))},
        "correlationId": draw(event_ids),
        "tenantId": TENANT,
    }
    if draw(st.booleans()):
        envelope: dict[str, Any] = {
            "id": draw(event_ids), "eventType": draw(event_types), "subject": draw(resource_ids),
            "eventTime": draw(times), "topic": f"/subscriptions/{SUBSCRIPTION}",
            "dataVersion": "2", "metadataVersion": "1", "data": data,
        }
    else:
        envelope = {"specversion": "1.0", "id": draw(event_ids), "type": draw(event_types),
                    "source": draw(resource_ids), "subject": draw(resource_ids), "time": draw(times), "data": data}
    for target in (envelope, data):
        for key in draw(st.lists(st.sampled_from(sorted(target)), max_size=2, unique=True)):
            if draw(st.booleans()):
                del target[key]
            else:
                target[key] = draw(json_values)
    return envelope


deliveries = envelopes() | st.lists(envelopes() | json_values, min_size=1, max_size=4) | json_values
as_wire = st.sampled_from(["object", "text", "bytes"])


def _wire(value: Any, form: str) -> Any:
    if form == "object":
        return value
    text = json.dumps(value)
    return text if form == "text" else text.encode("utf-8")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, form=as_wire)
def test_arbitrary_json_never_raises(value: Any, form: str) -> None:
    handle(fresh_run(), _wire(value, form))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(delivery=deliveries, change=changes, form=as_wire, mode=st.sampled_from(["observe", "alert", "remediate"]))
def test_envelope_shaped_garbage_never_raises(delivery: Any, change: dict[str, Any], form: str, mode: str) -> None:
    run = fresh_run(mode)
    run.world.put({**VAULT, "properties": {**VAULT["properties"], **change}})
    outcomes = handle(run, _wire(delivery, form))
    items = delivery if isinstance(delivery, list) and delivery else [delivery]
    assert len(outcomes) == len(items)
    for outcome in outcomes:
        if outcome.outcome == "processed":
            assert outcome.vault is not None and 0 <= outcome.risk <= 100
            assert (outcome.risk > 0) == bool(outcome.findings)
    again = handle(run, _wire(delivery, form))
    for first, second in zip(outcomes, again, strict=True):
        assert second.outcome == ("duplicate" if first.outcome == "processed" else first.outcome)


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    handle(fresh_run(), raw)


def test_a_report_that_joins_an_alerted_finding_is_not_scored_again() -> None:
    """A failed write by a named caller, then a caller-less report of the same open firewall: the
    second joins the finding the first alerted, so its record lists no finding and scores none
    (found by the property test above)."""
    run = fresh_run("observe")
    run.world.put({**VAULT, "properties": {**VAULT["properties"], "publicNetworkAccess": "Enabled"}})

    def write(event_id: str, status: str, caller: dict[str, Any] | None) -> dict[str, Any]:
        return {"id": event_id, "eventType": "Microsoft.Resources.ResourceWriteSuccess", "subject": VAULT_ID,
                "eventTime": "2026-11-27T10:00:00Z", "dataVersion": "2",
                "data": {"resourceUri": VAULT_ID, "operationName": "Microsoft.KeyVault/vaults/write",
                         "status": status, "authorization": caller, "claims": {},
                         "correlationId": f"corr-{event_id}"}}

    named = {"scope": VAULT_ID, "evidence": {"principalId": "2b3c4d5e-6f70-4819-a2b3-c4d5e6f70819"}}
    [first] = handle(run, write("e-failed", "Failed", named))
    [second] = handle(run, write("e-unnamed", "Succeeded", None))

    assert "KV-NET-01" in {f.rule for f in first.findings} and first.risk > 0
    assert second.findings == [] and (second.risk, second.severity) == (0, "none")
    assert second.reason.startswith("another report of an alerted change")
