"""The Functions app end to end: the declared bindings, then one delivery decoded the way the
worker decodes it and handed to the registered function, with every adapter real (ARM, Defender
and Event Grid on the local HTTPS fake, state in Azurite)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum

import function_app
from kvguard import runtime
from kvguard.detection import assessment_name
from kvguard.pipeline import Pipeline
from kvguard.settings import Settings
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake
from tests.integration.azurite import Azurite, running_azurite

SUB = "5d4c3b2a-1908-4f7e-8d6c-b5a493827160"
TENANT = "e1d2c3b4-a5f6-4a7b-8c9d-0e1f2a3b4c5d"
VAULT_ID = f"/subscriptions/{SUB}/resourceGroups/rg-billing/providers/Microsoft.KeyVault/vaults/kv-billing-eu"
OWNER = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
INTRUDER = "7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2918"
ROGUE = "3c2b1a09-f8e7-4d6c-9b5a-493827160f5e"
KVGUARD = "9a8b7c6d-5e4f-4321-8fed-cba987654321"
TOPIC_KEY = "e2e-topic-key-4f1d9c"
WRITES = r"/accessPolicies/|/vaults/[^/]+$"


def vault_doc(*extra_policies: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": VAULT_ID,
        "name": "kv-billing-eu",
        "type": "Microsoft.KeyVault/vaults",
        "location": "westeurope",
        "tags": {"criticality": "high"},
        "properties": {
            "tenantId": TENANT,
            "sku": {"family": "A", "name": "standard"},
            "accessPolicies": [
                {"tenantId": TENANT, "objectId": OWNER, "permissions": {"keys": ["Get", "WrapKey", "UnwrapKey"]}},
                *extra_policies,
            ],
            "enableRbacAuthorization": False,
            "enableSoftDelete": True,
            "softDeleteRetentionInDays": 90,
            "enablePurgeProtection": True,
            "publicNetworkAccess": "Disabled",
            "networkAcls": {"defaultAction": "Deny", "bypass": "None", "ipRules": [], "virtualNetworkRules": []},
            "vaultUri": "https://kv-billing-eu.vault.azure.net/",
        },
    }


ROGUE_GRANT = {"tenantId": TENANT, "objectId": ROGUE, "permissions": {"secrets": ["Get", "List"]}}


def event_json(event_id: str, caller: str, action: str = "add", time: datetime | None = None,
               request_id: str = "c0ffee00-1a2b-4c3d-8e4f-5a6b7c8d9e0f") -> str:
    """A ResourceWriteSuccess for `az keyvault set-policy`, as Event Grid delivers one element;
    sent now unless `time` says when, with the client request id the write was sent with."""
    uri = f"{VAULT_ID.replace('resourceGroups', 'resourcegroups')}/accessPolicies/{action}"
    return json.dumps({
        "id": event_id,
        "topic": f"/subscriptions/{SUB}",
        "subject": uri,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        # Now, as for a live write: an own write's event is matched to the ledger by its time.
        "eventTime": (time or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "dataVersion": "2",
        "metadataVersion": "1",
        "data": {
            "authorization": {
                "scope": uri,
                "action": "Microsoft.KeyVault/vaults/accessPolicies/write",
                "evidence": {"role": "Contributor", "principalId": caller, "principalType": "User"},
            },
            "claims": {
                "oid": caller,
                "http://schemas.microsoft.com/identity/claims/tenantid": TENANT,
                "ipaddr": "198.51.100.23",
            },
            "correlationId": "4b3a2918-0f7e-4d6c-8b5a-493827160f00",
            "httpRequest": {"clientIpAddress": "198.51.100.23", "method": "PUT", "clientRequestId": request_id},
            "resourceProvider": "Microsoft.KeyVault",
            "resourceUri": uri,
            "operationName": "Microsoft.KeyVault/vaults/accessPolicies/write",
            "status": "Succeeded",
            "subscriptionId": SUB,
            "tenantId": TENANT,
        },
    })


def deliver(json_text: str) -> None:
    """Decode the way the Python worker does for an eventGridTrigger, then call the function."""
    event = EventGridEventInConverter.decode(Datum(type="json", value=json_text), trigger_metadata=None)
    assert isinstance(event, func.EventGridEvent)
    functions["on_vault_event"].get_user_function()(event)


functions = {str(fn.get_function_name()): fn for fn in function_app.app.get_functions()}


# ---- bindings ------------------------------------------------------------------------------------


def test_the_three_functions_and_their_bindings() -> None:
    assert sorted(functions) == ["health", "on_vault_event", "reconcile"]

    on_event = functions["on_vault_event"].get_trigger()
    assert on_event is not None
    assert (on_event.type, on_event.name) == ("eventGridTrigger", "event")

    reconcile = functions["reconcile"].get_trigger()
    assert reconcile is not None
    timer = reconcile.get_dict_repr()
    assert (timer["type"], timer["name"]) == ("timerTrigger", "timer")
    assert timer["schedule"] == "%KVGUARD_RECONCILE_SCHEDULE%"
    assert timer["runOnStartup"] is False

    health = [b.get_dict_repr() for b in functions["health"].get_bindings()]
    trigger = next(b for b in health if b["type"] == "httpTrigger")
    assert trigger["name"] == "req"
    assert [str(getattr(m, "value", m)) for m in trigger["methods"]] == ["GET"]
    assert str(getattr(trigger["authLevel"], "value", trigger["authLevel"])) == "function"
    assert trigger["route"] == "health"
    assert [(b["type"], b["name"]) for b in health if b["type"] == "http"] == [("http", "$return")]


# ---- end to end ----------------------------------------------------------------------------------


@pytest.fixture
def azurite(tmp_path: Path) -> Iterator[Azurite]:
    """One Azurite per test: the app uses the default table names, so tests cannot share one."""
    with running_azurite(tmp_path) as service:
        yield service


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake(eventgrid_key=TOPIC_KEY) as running:
        running.add_vault(vault_doc())
        yield running


@pytest.fixture
def installed(
    fake: ArmFake, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Pipeline]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.write_ca_bundle(tmp_path / "ca.pem")))
    settings = Settings(
        mode="remediate",
        state_backend="tables",
        tables_connection=azurite.connection_string,
        arm_endpoint=fake.base_url,
        own_principal_ids=[KVGUARD.upper()],
        defender=True,
        eventgrid_topic_endpoint=f"{fake.base_url}/api/events",
        eventgrid_topic_key=TOPIC_KEY,
    )
    pipeline = runtime.build(settings, credential=FakeCredential())
    # The vault as kvguard last accepted it; then the world changes behind its back.
    pipeline.store.put_baseline(VAULT_ID, vault_doc(), None, now=pipeline.clock.now())
    fake.add_vault(vault_doc(copy.deepcopy(ROGUE_GRANT)))
    runtime.install(pipeline)
    yield pipeline
    runtime.install(None)


def test_a_rogue_grant_is_alerted_and_removed(installed: Pipeline, fake: ArmFake) -> None:
    event_id = "1e2d3c4b-5a69-4788-97a6-b5c4d3e2f1a0"

    deliver(event_json(event_id, INTRUDER))

    # Removed with a targeted accessPolicies/remove: the owner's entry stays.
    (remove,) = fake.requests_to("PUT", r"/accessPolicies/remove$")
    assert [e["objectId"] for e in remove.json["properties"]["accessPolicies"]] == [ROGUE]
    assert [p["objectId"] for p in fake.vault(VAULT_ID)["properties"]["accessPolicies"]] == [OWNER]
    # The Defender assessment for the rule, and a detection CloudEvent on the topic.
    # Raised Unhealthy beside the revert (either may arrive first), then Healthy once the revert
    # resolved it.
    puts = fake.requests_to("PUT", rf"/providers/Microsoft\.Security/assessments/{assessment_name('KV-AP-01')}$")
    assert [p.json["properties"]["status"]["code"] for p in puts] == ["Unhealthy", "Healthy"]
    assert puts[0].json["properties"]["additionalData"]["eventId"] == event_id
    assert fake.requests.index(remove) < fake.requests.index(puts[1])
    detections = [e for e in fake.events if e["type"] == "kvguard.detection"]
    assert "KV-AP-01" in {e["subject"] for e in detections}
    assert all(e["source"] == VAULT_ID and e["data"]["eventId"] == event_id for e in detections)
    assert "KV-AP-01" in {e["subject"] for e in fake.events if e["type"] == "kvguard.detection.resolved"}
    # The audit trail in Azurite says what was done.
    (record,) = [r for r in installed.store.list_audit(VAULT_ID) if r.event_id == event_id]
    assert record.outcome["outcome"] == "processed"
    assert {"handler": "revert_access_policy", "status": "applied"}.items() <= next(
        a for a in record.outcome["actions"] if a["handler"] == "revert_access_policy"
    ).items()

    # (a) The follow-up event of kvguard's own revert, carrying the client request id the revert
    # was sent with, is "self": nothing is read or written.
    sent = remove.headers["x-ms-client-request-id"]
    before = len(fake.requests)
    own_event = "8f7e6d5c-4b3a-4291-8087-f6e5d4c3b2a1"
    deliver(event_json(own_event, KVGUARD, action="remove", request_id=sent))
    assert len(fake.requests) == before
    assert [r.event_id for r in installed.store.list_audit(VAULT_ID)] == [event_id]
    assert installed.handle(event_json(own_event, KVGUARD, action="remove", request_id=sent))[0].outcome == "self"

    # (b) A redelivery of the first event does nothing.
    deliver(event_json(event_id, INTRUDER))
    assert len(fake.requests) == before
    assert len(fake.requests_to("PUT", r"/accessPolicies/remove$")) == 1
    assert installed.handle(event_json(event_id, INTRUDER))[0].outcome == "duplicate"


def test_health_reports_without_secrets(installed: Pipeline, fake: ArmFake, azurite: Azurite) -> None:
    request = func.HttpRequest(method="GET", url="http://localhost/api/health", body=b"", params={})

    response = functions["health"].get_user_function()(request)

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_body().decode()
    report = json.loads(body)
    assert report["ok"] is True
    assert report["version"]
    assert report["mode"] == "remediate"
    assert (report["state"], report["arm"]) == ("ok", "ok")
    assert report["sinks"] == ["publish_detection", "raise_defender_alert"]
    for secret in (TOPIC_KEY, azurite.connection_string, "AccountKey", azurite.endpoint):
        assert secret not in body
    # The probe really asked ARM.
    assert fake.requests_to("GET", r"/vaults/kvguard-health-probe$")


def test_health_is_503_when_arm_fails(installed: Pipeline, fake: ArmFake) -> None:
    fake.inject("GET", r"/vaults/kvguard-health-probe$", status=403,
                body={"error": {"code": "AuthorizationFailed", "message": "no read"}})

    response = functions["health"].get_user_function()(func.HttpRequest("GET", "http://localhost/api/health", body=b""))

    report = json.loads(response.get_body())
    assert response.status_code == 503
    assert report["ok"] is False
    assert report["state"] == "ok"
    assert report["arm"].startswith("unreachable")


def test_the_function_logs_traces_and_fills_the_findings_table(
    installed: Pipeline, fake: ArmFake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What operators see of one delivery through the registered function: one JSON log line, one
    span with its counters, and the findings table's rows on the Logs Ingestion endpoint."""
    from kvguard.adapters.ingestion import LogsIngestionFindingsLog
    from kvguard.findings_table import STREAM
    from kvguard.telemetry import Observer
    from tests.unit.test_telemetry import Telemetry

    telemetry = Telemetry()
    findings_log = LogsIngestionFindingsLog(fake.base_url, "dcr-e2e", FakeCredential(),
                                            connection_verify=str(fake.write_ca_bundle(tmp_path / "ca-e2e.pem")))
    runtime.install_observer(Observer(instruments=telemetry.instruments, findings_log=findings_log))
    caplog.set_level("INFO", logger="kvguard")
    try:
        deliver(event_json("5b4a3928-1706-4f5e-8d4c-3b2a19087f6e", INTRUDER))
    finally:
        runtime.install_observer(None)

    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("kvguard outcome ")]
    fields = json.loads(line.removeprefix("kvguard outcome "))
    assert fields["event_id"] == "5b4a3928-1706-4f5e-8d4c-3b2a19087f6e" and fields["outcome"] == "processed"
    assert {"handler": "revert_access_policy", "status": "applied"} in fields["actions"]
    assert INTRUDER not in line and "198.51.100.23" not in line
    [span] = telemetry.spans.get_finished_spans()
    assert (span.attributes or {})["kvguard.event_id"] == fields["event_id"]
    rows = fake.ingested[("dcr-e2e", STREAM)]
    assert {r["EventId"] for r in rows} == {fields["event_id"]}
    assert ("revert_access_policy", "applied") in {(r["Handler"], r["Status"]) for r in rows}


def test_an_unplanned_write_by_kvguards_identity_is_processed_and_raises_kv_self_01(
    installed: Pipeline, fake: ArmFake
) -> None:
    """Someone else runs code as kvguard: the grant names kvguard's identity but matches no entry
    of the ledger, so it is read, judged and reverted like anyone's, with a critical KV-SELF-01."""
    event_id = "2f3e4d5c-6b7a-4890-9a8b-7c6d5e4f3a2b"

    deliver(event_json(event_id, KVGUARD))

    assert fake.requests_to("GET", r"/vaults/kv-billing-eu$"), "processed like anyone's: the vault is read"
    (record,) = [r for r in installed.store.list_audit(VAULT_ID) if r.event_id == event_id]
    assert record.outcome["outcome"] == "processed"
    (self_01,) = [f for f in record.outcome["findings"] if f["rule"] == "KV-SELF-01"]
    assert self_01["severity"] == "critical"
    assert self_01["evidence"]["ownIdentity"] == KVGUARD.lower()
    puts = fake.requests_to("PUT", rf"/providers/Microsoft\.Security/assessments/{assessment_name('KV-SELF-01')}$")
    assert puts and puts[0].json["properties"]["status"]["code"] == "Unhealthy"
    (remove,) = fake.requests_to("PUT", r"/accessPolicies/remove$")
    assert [e["objectId"] for e in remove.json["properties"]["accessPolicies"]] == [ROGUE]

    # The revert was noted before it was made, with the nonce it was sent with: its own event
    # carries that nonce, matches the ledger and costs nothing.
    sent = remove.headers["x-ms-client-request-id"]
    before = len(fake.requests)
    deliver(event_json("6d5c4b3a-2918-4f7e-8d6c-5b4a39281706", KVGUARD, action="remove", request_id=sent))
    assert len(fake.requests) == before
    # Another write by the identity, with the same correlation id but a request id of its own, is
    # unplanned again.
    later = "5c4b3a29-1807-4e6d-9c5b-4a3928170605"
    (outcome,) = installed.handle(event_json(later, KVGUARD))
    assert outcome.outcome == "processed"
    assert "KV-SELF-01" in {f.rule for f in outcome.findings}


def test_the_reconcile_timer_checks_kvguards_own_event_subscription(
    fake: ArmFake, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event subscription was deleted (its deletion may have been the last event it sent): the
    timer reads it through ARM, finds it gone and raises KV-SELF-02 under its id, in Defender."""
    subscription_id = (f"/subscriptions/{SUB}/resourceGroups/rg-kvguard/providers/Microsoft.EventGrid"
                       "/systemTopics/evgst-kvguard/eventSubscriptions/kvguard-e2e")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.write_ca_bundle(tmp_path / "ca.pem")))
    monkeypatch.delenv("KVGUARD_SUBSCRIPTION_IDS", raising=False)
    settings = Settings(state_backend="tables", tables_connection=azurite.connection_string,
                        arm_endpoint=fake.base_url, defender=True, own_resource_ids=[subscription_id])
    pipeline = runtime.build(settings, credential=FakeCredential())
    runtime.install(pipeline)
    try:
        functions["reconcile"].get_user_function()(None)
    finally:
        runtime.install(None)

    assert fake.requests_to("GET", r"/eventSubscriptions/kvguard-e2e$")
    (put,) = fake.requests_to("PUT", rf"/eventSubscriptions/kvguard-e2e/providers/Microsoft\.Security/assessments/"
                                     rf"{assessment_name('KV-SELF-02')}$")
    assert put.json["properties"]["status"]["code"] == "Unhealthy"
    (record,) = pipeline.store.list_audit(subscription_id)
    assert [f["rule"] for f in record.outcome["findings"]] == ["KV-SELF-02"]
    assert record.outcome["resource"] == subscription_id
