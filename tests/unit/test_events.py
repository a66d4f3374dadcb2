"""events.parse: every envelope and data shape Event Grid delivers, normalised or rejected with a
reason that names the field."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvguard.events import Rejected, VaultEvent, parse

SUB = "8c3f1d2e-7a6b-4c5d-9e0f-1a2b3c4d5e6f"
TENANT = "d4c3b2a1-0f9e-4d8c-b7a6-5e4d3c2b1a09"
CALLER = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
APP = "f0e1d2c3-b4a5-4968-8776-5a4b3c2d1e0f"
VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-orders/providers/Microsoft.KeyVault/vaults/kv-orders"
DELETED = f"/subscriptions/{SUB}/providers/Microsoft.KeyVault/locations/uksouth/deletedVaults/kv-orders"
RG = f"/subscriptions/{SUB}/resourceGroups/rg-orders"
URL_CLAIM = "http://schemas.microsoft.com/identity/claims/"
XML_CLAIM = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"


def data(resource_uri: str = VAULT, operation: str = "Microsoft.KeyVault/vaults/write", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "authorization": {
            "scope": resource_uri,
            "action": operation,
            "evidence": {"role": "Owner", "principalId": CALLER.replace("-", ""), "principalType": "User"},
        },
        "claims": {
            URL_CLAIM + "objectidentifier": CALLER,
            URL_CLAIM + "tenantid": TENANT,
            XML_CLAIM + "upn": "ines@orders.example",
            "appid": APP,
            "ipaddr": "198.51.100.23",
        },
        "correlationId": "5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
        "httpRequest": {"clientRequestId": "r-1", "clientIpAddress": "203.0.113.9", "method": "PUT",
                        "url": f"https://management.azure.com{resource_uri}?api-version=2023-07-01"},
        "resourceProvider": "Microsoft.KeyVault",
        "resourceUri": resource_uri,
        "operationName": operation,
        "status": "Succeeded",
        "subscriptionId": SUB,
        "tenantId": TENANT,
    }
    body.update(extra)
    return body


def eventgrid(event_type: str = "Microsoft.Resources.ResourceWriteSuccess", body: Any = None,
              event_id: str = "eg-0001", subject: str = VAULT, **extra: Any) -> dict[str, Any]:
    envelope = {
        "id": event_id,
        "topic": f"/subscriptions/{SUB}",
        "subject": subject,
        "eventType": event_type,
        "eventTime": "2026-03-14T09:26:53.589Z",
        "data": data() if body is None else body,
        "dataVersion": "2",
        "metadataVersion": "1",
    }
    envelope.update(extra)
    return envelope


def cloudevent(event_type: str = "Microsoft.Resources.ResourceWriteSuccess", body: Any = None,
               event_id: str = "ce-0001", subject: str | None = VAULT, **extra: Any) -> dict[str, Any]:
    envelope = {
        "id": event_id,
        "source": f"/subscriptions/{SUB}",
        "subject": subject,
        "type": event_type,
        "time": "2026-03-14T09:26:53.589Z",
        "specversion": "1.0",
        "data": data() if body is None else body,
    }
    envelope.update(extra)
    return envelope


def one(raw: Any) -> VaultEvent:
    [item] = parse(raw)
    assert isinstance(item, VaultEvent), item
    return item


def rejected(raw: Any) -> Rejected:
    [item] = parse(raw)
    assert isinstance(item, Rejected), item
    return item


# --- Microsoft.Resources events in both envelopes ----------------------------------------------

ENVELOPES = [eventgrid, cloudevent]


@pytest.mark.parametrize("envelope", ENVELOPES, ids=["eventgrid", "cloudevents"])
def test_a_vault_write_is_normalised(envelope: Any) -> None:
    event = one(envelope())
    assert event.schema == ("eventgrid" if envelope is eventgrid else "cloudevents")
    assert event.vault is not None and event.vault.id == VAULT
    assert (event.kind, event.succeeded, event.status) == ("write", True, "Succeeded")
    assert event.operation == "Microsoft.KeyVault/vaults/write"
    assert event.time == datetime(2026, 3, 14, 9, 26, 53, 589000, tzinfo=UTC)
    assert event.correlation_id == "5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
    assert event.tenant_id == TENANT
    assert event.access_policy_action is None


@pytest.mark.parametrize("envelope", ENVELOPES, ids=["eventgrid", "cloudevents"])
@pytest.mark.parametrize(
    ("event_type", "resource_uri", "operation", "kind", "succeeded"),
    [
        ("Microsoft.Resources.ResourceWriteSuccess", VAULT, "Microsoft.KeyVault/vaults/write", "write", True),
        ("Microsoft.Resources.ResourceWriteFailure", VAULT, "Microsoft.KeyVault/vaults/write", "write", False),
        ("Microsoft.Resources.ResourceDeleteSuccess", VAULT, "Microsoft.KeyVault/vaults/delete", "delete", True),
        ("Microsoft.Resources.ResourceActionSuccess", DELETED,
         "Microsoft.KeyVault/locations/deletedVaults/purge/action", "purge", True),
        ("Microsoft.Resources.ResourceWriteSuccess", VAULT + "/accessPolicies/add",
         "Microsoft.KeyVault/vaults/accessPolicies/write", "access_policy", True),
    ],
    ids=["write", "write failure", "delete", "purge", "access policy"],
)
def test_each_operation_maps_to_its_kind(envelope: Any, event_type: str, resource_uri: str, operation: str,
                                         kind: str, succeeded: bool) -> None:
    status = "Succeeded" if succeeded else "Failed"
    event = one(envelope(event_type, data(resource_uri, operation, status=status), subject=resource_uri))
    assert (event.kind, event.succeeded) == (kind, succeeded)
    assert event.vault is not None
    assert event.vault.id == (DELETED if kind == "purge" else VAULT)


def test_a_purge_names_the_deleted_vault_with_its_location() -> None:
    event = one(eventgrid("Microsoft.Resources.ResourceActionSuccess",
                          data(DELETED, "Microsoft.KeyVault/locations/deletedVaults/purge/action"), subject=DELETED))
    assert event.vault is not None
    assert (event.vault.name, event.vault.location, event.vault.resource_group) == ("kv-orders", "uksouth", None)


@pytest.mark.parametrize("action", ["add", "replace", "remove"])
def test_access_policy_writes_are_trimmed_to_the_vault_and_keep_the_action(action: str) -> None:
    uri = f"{VAULT}/accessPolicies/{action}"
    event = one(eventgrid(body=data(uri, "Microsoft.KeyVault/vaults/accessPolicies/write"), subject=uri))
    assert event.vault is not None and event.vault.id == VAULT
    assert event.kind == "access_policy"
    assert event.access_policy_action == action


def test_access_policy_action_is_lower_cased_and_none_without_a_tail() -> None:
    uri = f"{VAULT.replace('resourceGroups', 'resourcegroups')}/AccessPolicies/Replace/"
    event = one(eventgrid(body=data(uri, "microsoft.keyvault/vaults/accesspolicies/write")))
    assert event.access_policy_action == "replace"
    assert event.vault is not None and event.vault.key == VAULT.lower()
    bare = one(eventgrid(body=data(VAULT, "Microsoft.KeyVault/vaults/accessPolicies/write")))
    assert bare.kind == "access_policy" and bare.access_policy_action is None


def test_case_differences_in_type_operation_status_and_ids_do_not_matter() -> None:
    body = data(VAULT.upper().replace(SUB.upper(), SUB), "MICROSOFT.KEYVAULT/VAULTS/WRITE", status="succeeded")
    event = one(eventgrid("microsoft.resources.resourcewritesuccess", body))
    assert event.kind == "write"
    assert event.succeeded is True
    assert event.vault is not None and event.vault.key == VAULT.lower()
    failure = one(cloudevent("MICROSOFT.RESOURCES.RESOURCEWRITEFAILURE", data(status="Failed")))
    assert failure.succeeded is False


def test_a_success_event_whose_status_is_not_succeeded_is_not_a_success() -> None:
    assert one(eventgrid(body=data(status="Failed"))).succeeded is False
    assert one(eventgrid(body=data(status=None))).succeeded is True


def test_other_key_vault_operations_are_kind_other() -> None:
    event = one(eventgrid("Microsoft.Resources.ResourceActionSuccess",
                          data(VAULT, "Microsoft.KeyVault/vaults/deploy/action")))
    assert event.vault is not None
    assert event.kind == "other"


# --- the caller ------------------------------------------------------------------------------


def test_caller_from_url_claims_evidence_and_http_request() -> None:
    caller = one(eventgrid()).caller
    assert caller.object_id == CALLER
    assert caller.tenant_id == TENANT
    assert caller.upn == "ines@orders.example"
    assert caller.app_id == APP
    assert caller.ip == "203.0.113.9"
    assert caller.evidence_principal_id == CALLER.replace("-", "")
    assert caller.principal_type == "User"
    assert caller.id == CALLER
    assert caller.ids() == {CALLER, APP, CALLER.replace("-", ""), "ines@orders.example"}


def test_caller_from_short_claims_is_lower_cased() -> None:
    claims = {"oid": CALLER.upper(), "tid": TENANT.upper(), "upn": "Ines@Orders.example", "appid": APP.upper()}
    caller = one(cloudevent(body=data(claims=claims))).caller
    assert (caller.object_id, caller.tenant_id, caller.app_id) == (CALLER, TENANT, APP)
    assert caller.upn == "Ines@Orders.example"
    assert "ines@orders.example" in caller.ids()


@pytest.mark.parametrize("evidence", [[], {}, None], ids=["empty list", "empty map", "null"])
def test_evidence_may_be_an_empty_list_or_map(evidence: Any) -> None:
    body = data()
    body["authorization"]["evidence"] = evidence
    caller = one(eventgrid(body=body)).caller
    assert caller.evidence_principal_id is None
    assert caller.object_id == CALLER


def test_missing_http_request_falls_back_to_the_ipaddr_claim() -> None:
    body = data()
    del body["httpRequest"]
    assert one(eventgrid(body=body)).caller.ip == "198.51.100.23"
    del body["claims"]["ipaddr"]
    assert one(eventgrid(body=body)).caller.ip is None


def test_http_request_and_claims_as_json_strings() -> None:
    body = data()
    body["httpRequest"] = json.dumps({"clientIpAddress": "192.0.2.77", "method": "PUT"})
    body["claims"] = json.dumps({"oid": CALLER, "tid": TENANT})
    caller = one(eventgrid(body=body)).caller
    assert caller.ip == "192.0.2.77"
    assert (caller.object_id, caller.tenant_id) == (CALLER, TENANT)


@pytest.mark.parametrize("field", ["claims", "httpRequest"])
@pytest.mark.parametrize("envelope", ENVELOPES, ids=["eventgrid", "cloudevents"])
@pytest.mark.parametrize("as_text", [True, False], ids=["delivery text", "decoded delivery"])
def test_json_text_nested_too_deeply_in_a_field_is_rejected_naming_it(envelope: Any, field: str, as_text: bool) -> None:
    body = data()
    body[field] = "[" * 100_000 + "]" * 100_000
    raw = envelope(body=body)

    item = rejected(json.dumps(raw) if as_text else raw)

    assert item.reason == f"data.{field}: value error, json text nested too deeply"
    assert item.event_id == raw["id"]
    assert json.loads(item.raw)["data"][field] == body[field]


def test_unknown_extra_fields_are_accepted() -> None:
    body = data(newField={"nested": [1, 2]}, entity="x")
    body["authorization"]["extra"] = True
    body["httpRequest"]["tlsVersion"] = "1.3"
    event = one(eventgrid(body=body, futureEnvelopeField="y"))
    assert event.kind == "write"
    assert event.raw["futureEnvelopeField"] == "y"


def test_an_event_without_claims_has_an_unknown_caller() -> None:
    body = data()
    del body["claims"]
    del body["authorization"]
    del body["httpRequest"]
    caller = one(eventgrid(body=body)).caller
    assert caller.id is None
    assert caller.ids() == frozenset()
    assert caller.describe() == "unknown caller"


# --- VaultAccessPolicyChanged -------------------------------------------------------------------


def policy_changed(nbf: Any, exp: Any) -> dict[str, Any]:
    return {"Id": f"https://kv-orders.vault.azure.net/{CALLER}", "VaultName": "kv-orders",
            "ObjectType": "Vault", "ObjectName": "kv-orders", "Version": "", "NBF": nbf, "EXP": exp}


@pytest.mark.parametrize(("nbf", "exp"), [(1773480413, 1805016413), ("1773480413", "1805016413"), (None, None)])
def test_vault_access_policy_changed_takes_the_vault_from_the_topic(nbf: Any, exp: Any) -> None:
    raw = eventgrid("Microsoft.KeyVault.VaultAccessPolicyChanged", policy_changed(nbf, exp), subject="kv-orders",
                    topic=VAULT)
    event = one(raw)
    assert event.vault is not None and event.vault.id == VAULT
    assert event.is_access_policy_changed
    assert (event.kind, event.succeeded) == ("access_policy", True)


def test_vault_access_policy_changed_as_a_cloudevent_takes_the_vault_from_the_source() -> None:
    raw = cloudevent("Microsoft.KeyVault.VaultAccessPolicyChanged", policy_changed(1, 2), subject="kv-orders",
                     source=VAULT.replace("resourceGroups", "resourcegroups"))
    event = one(raw)
    assert event.vault is not None and event.vault.key == VAULT.lower()


def test_vault_access_policy_changed_rejections_name_the_field() -> None:
    no_vault = rejected(eventgrid("Microsoft.KeyVault.VaultAccessPolicyChanged", policy_changed(1, 2),
                                  subject="kv-orders", topic=f"/subscriptions/{SUB}"))
    assert no_vault.reason.startswith("topic/source:")
    missing_name = {k: v for k, v in policy_changed(1, 2).items() if k != "VaultName"}
    reason = rejected(eventgrid("Microsoft.KeyVault.VaultAccessPolicyChanged", missing_name, topic=VAULT)).reason
    assert "data.VaultName" in reason



@pytest.mark.parametrize("nbf", ["", "soon", None, 1559081980, "1559081980"])
def test_vault_access_policy_changed_is_read_whatever_its_nbf_looks_like(nbf: Any) -> None:
    # kvguard never reads NBF/EXP: a real delivery must not be lost over their format
    event = one(eventgrid("Microsoft.KeyVault.VaultAccessPolicyChanged", policy_changed(nbf, ""), topic=VAULT))
    assert event.kind == "access_policy"


# --- delivery forms -------------------------------------------------------------------------------


def test_a_batch_keeps_its_order_and_rejects_only_the_bad_item() -> None:
    items = parse([eventgrid(event_id="b-1"), {"id": "b-2"}, cloudevent(event_id="b-3")])
    assert [type(i).__name__ for i in items] == ["VaultEvent", "Rejected", "VaultEvent"]
    assert isinstance(items[0], VaultEvent) and items[0].id == "b-1"
    assert isinstance(items[1], Rejected) and items[1].event_id == "b-2"
    assert isinstance(items[2], VaultEvent) and items[2].id == "b-3"


def test_json_text_and_bytes_parse_like_the_dict() -> None:
    raw = [eventgrid(event_id="t-1")]
    text = json.dumps(raw)
    for form in (text, text.encode("utf-8"), bytearray(text.encode("utf-8"))):
        event = one(form)
        assert event.id == "t-1" and event.kind == "write"


def test_an_azure_functions_event_grid_event() -> None:
    event = func.EventGridEvent(
        id="fn-0001",
        data=data(f"{VAULT}/accessPolicies/remove", "Microsoft.KeyVault/vaults/accessPolicies/write"),
        topic=f"/subscriptions/{SUB}",
        subject=f"{VAULT}/accessPolicies/remove",
        event_type="Microsoft.Resources.ResourceWriteSuccess",
        event_time=datetime(2026, 3, 14, 9, 30, tzinfo=UTC),
        data_version="2",
    )
    parsed = one(event)
    assert parsed.id == "fn-0001"
    assert parsed.vault is not None and parsed.vault.id == VAULT
    assert (parsed.kind, parsed.access_policy_action) == ("access_policy", "remove")
    assert parsed.time == datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
    assert parsed.caller.object_id == CALLER


def test_a_naive_event_time_is_taken_as_utc() -> None:
    event = one(eventgrid(eventTime="2026-03-14T09:26:53"))
    assert event.time == datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)


def test_events_of_other_services_parse_with_no_vault() -> None:
    storage = f"/subscriptions/{SUB}/resourceGroups/rg-orders/providers/Microsoft.Storage/storageAccounts/storders"
    resource = one(eventgrid(body=data(storage, "Microsoft.Storage/storageAccounts/write"), subject=storage))
    assert resource.vault is None and resource.kind == "other"
    secret = one(cloudevent("Microsoft.KeyVault.SecretNewVersionCreated",
                            {"Id": "https://kv-orders.vault.azure.net/secrets/s/1", "VaultName": "kv-orders"},
                            source=VAULT, subject="s"))
    assert secret.vault is None and secret.kind == "other"
    handshake = one(eventgrid("Microsoft.EventGrid.SubscriptionValidationEvent", {"validationCode": "123"},
                              subject="x"))
    assert handshake.vault is None


# --- rejections ------------------------------------------------------------------------------------


def without(mapping: dict[str, Any], *path: str) -> dict[str, Any]:
    copied = copy.deepcopy(mapping)
    target = copied
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return copied


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (without(eventgrid(), "data", "resourceUri"), "data.resourceUri"),
        (without(eventgrid(), "data", "operationName"), "data.operationName"),
        (without(cloudevent(), "data", "resourceUri"), "data.resourceUri"),
        (without(eventgrid(), "eventType"), "eventType"),
        (without(eventgrid(), "eventTime"), "eventTime"),
        (without(eventgrid(), "id"), "id"),
        (without(cloudevent(), "source"), "source"),
        (cloudevent(specversion="0.3"), "specversion"),
        (eventgrid(eventTime="yesterday"), "eventTime"),
        (eventgrid(body="not an object"), "data"),
        (eventgrid(body=data(RG), subject=RG), "data.resourceUri"),
        (eventgrid(body=data(authorization="admin")), "data.authorization"),
    ],
    ids=["resourceUri", "operationName", "ce resourceUri", "eventType", "eventTime", "id", "source", "specversion",
         "bad time", "data not an object", "key vault operation on no vault", "authorization not an object"],
)
def test_rejections_name_the_field(raw: dict[str, Any], field: str) -> None:
    item = rejected(raw)
    assert item.reason.split(":", 1)[0] == field, item.reason
    assert json.loads(item.raw) == json.loads(json.dumps(raw))
    assert item.event_id == raw.get("id")


@pytest.mark.parametrize(
    ("raw", "start"),
    [
        ("{not json", "payload: not valid JSON"),
        (b"\xff\xfe{}", "payload: not UTF-8"),
        ([], "payload: an empty batch"),
        (42, "event: expected a JSON object"),
        ("null", "event: expected a JSON object"),
        (["x"], "event: expected a JSON object"),
    ],
)
def test_payloads_that_are_not_events(raw: Any, start: str) -> None:
    item = rejected(raw)
    assert item.reason.startswith(start), item.reason
    assert item.raw


# --- never raises -----------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
KEYS = st.sampled_from(["id", "eventType", "subject", "eventTime", "data", "topic", "type", "source", "specversion",
                        "time", "resourceUri", "operationName", "claims", "httpRequest", "authorization", "evidence",
                        "status", "VaultName", "NBF"])
SHAPED = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30)
    | st.sampled_from([VAULT, DELETED, "1.0", "Microsoft.Resources.ResourceWriteSuccess",
                       "Microsoft.KeyVault.VaultAccessPolicyChanged", "Microsoft.KeyVault/vaults/write",
                       "2026-03-14T09:26:53Z", "{}", "[]"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=8),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON, SHAPED))
def test_parse_never_raises_on_arbitrary_json(raw: Any) -> None:
    items = parse(raw)
    assert items
    for item in items:
        assert isinstance(item, (VaultEvent, Rejected))
        if isinstance(item, Rejected):
            assert item.reason


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(KEYS, SHAPED, max_size=6))
def test_parse_never_raises_on_arbitrary_data_in_a_valid_envelope(body: dict[str, Any]) -> None:
    for raw in (eventgrid(body=body), cloudevent(body=body),
                eventgrid("Microsoft.KeyVault.VaultAccessPolicyChanged", body, topic=VAULT)):
        items = parse(json.dumps(raw))
        assert len(items) == 1 and isinstance(items[0], (VaultEvent, Rejected))


def test_data_delivered_as_json_text_is_read_like_an_object() -> None:
    [event] = parse(cloudevent(body=json.dumps(data())))
    assert isinstance(event, VaultEvent)
    assert event.vault is not None and event.vault.name == "kv-orders"
    assert event.caller.object_id == CALLER


def test_data_text_that_is_not_json_is_rejected_naming_data() -> None:
    [rejected] = parse(eventgrid(body="{not json"))
    assert isinstance(rejected, Rejected)
    assert rejected.reason.startswith("data:")


def test_a_cloudevent_decoded_by_the_functions_worker_is_read() -> None:
    from azure.functions import meta
    from azure.functions.eventgrid import EventGridEventInConverter

    raw = cloudevent(event_id="ce-worker")
    worker_event = EventGridEventInConverter.decode(meta.Datum(type="json", value=json.dumps(raw)),
                                                    trigger_metadata=None)
    [event] = parse(worker_event)
    assert isinstance(event, VaultEvent)
    assert (event.id, event.schema, event.kind) == ("ce-worker", "cloudevents", "write")
    assert event.vault is not None and event.vault.name == "kv-orders"


def test_an_object_that_is_no_event_is_rejected_not_raised() -> None:
    class Broken:
        event_type = "Microsoft.Resources.ResourceWriteSuccess"

        def get_json(self) -> Any:
            raise ValueError("body is not JSON")

    [rejected] = parse(Broken())
    assert isinstance(rejected, Rejected) and rejected.reason.startswith("event: unreadable Broken")


def test_json_with_an_integer_too_long_to_convert_is_rejected() -> None:
    [rejected] = parse('{"id": ' + "9" * 5000 + "}")
    assert isinstance(rejected, Rejected) and rejected.reason.startswith("payload:")
