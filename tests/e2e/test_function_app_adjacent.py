"""The Functions app end to end for tampering beside the vault: a deleted diagnostic setting put
back and a Defender plan switched off, each delivered the way the worker decodes it, with the real
SDK pipeline talking to the HTTPS ARM fake and state in Azurite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kvguard import runtime
from kvguard.detection import assessment_name
from kvguard.pipeline import Pipeline
from kvguard.settings import Settings
from tests.e2e.test_function_app import INTRUDER, KVGUARD, SUB, TENANT, TOPIC_KEY, VAULT_ID, deliver, vault_doc
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake
from tests.integration.azurite import Azurite, running_azurite

SETTING_ID = f"{VAULT_ID}/providers/Microsoft.Insights/diagnosticSettings/to-sentinel"
PRICING_ID = f"/subscriptions/{SUB}/providers/Microsoft.Security/pricings/KeyVaults"
WORKSPACE = f"/subscriptions/{SUB}/resourceGroups/rg-soc/providers/Microsoft.OperationalInsights/workspaces/law"
SETTING = {
    "id": SETTING_ID, "name": "to-sentinel", "type": "Microsoft.Insights/diagnosticSettings",
    "properties": {"workspaceId": WORKSPACE, "logs": [{"category": "AuditEvent", "enabled": True}],
                   "metrics": [{"category": "AllMetrics", "enabled": True}]},
}
PLAN = {"id": PRICING_ID, "name": "KeyVaults", "type": "Microsoft.Security/pricings",
        "properties": {"pricingTier": "Standard", "subPlan": "PerKeyVault"}}


def resource_event(event_id: str, resource_id: str, operation: str, caller: str,
                   event_type: str = "Microsoft.Resources.ResourceWriteSuccess", request_id: str | None = None) -> str:
    """Sent now: an own write's event is matched with the ledger entry kvguard noted when writing,
    by the client request id the write was sent with (`request_id`)."""
    uri = resource_id.replace("resourceGroups", "resourcegroups")
    return json.dumps({
        "id": event_id, "topic": f"/subscriptions/{SUB}", "subject": uri, "eventType": event_type,
        "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"), "dataVersion": "2", "metadataVersion": "1",
        "data": {
            "authorization": {"scope": uri, "action": operation,
                              "evidence": {"role": "Owner", "principalId": caller, "principalType": "User"}},
            "claims": {"oid": caller, "http://schemas.microsoft.com/identity/claims/tenantid": TENANT},
            "correlationId": "6d5c4b3a-2918-4f7e-8d6c-b5a493827161", "resourceUri": uri,
            "operationName": operation, "status": "Succeeded", "subscriptionId": SUB, "tenantId": TENANT,
            **({"httpRequest": {"clientRequestId": request_id}} if request_id else {}),
        },
    })


@pytest.fixture
def azurite(tmp_path: Path) -> Iterator[Azurite]:
    with running_azurite(tmp_path) as service:
        yield service


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake(eventgrid_key=TOPIC_KEY) as running:
        running.add_vault(vault_doc())
        running.add_resource(SETTING)
        running.add_resource(PLAN)
        yield running


@pytest.fixture
def installed(fake: ArmFake, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.write_ca_bundle(tmp_path / "ca.pem")))
    settings = Settings(
        mode="remediate", state_backend="tables", tables_connection=azurite.connection_string,
        arm_endpoint=fake.base_url, own_principal_ids=[KVGUARD], defender=True,
        eventgrid_topic_endpoint=f"{fake.base_url}/api/events", eventgrid_topic_key=TOPIC_KEY,
    )
    pipeline = runtime.build(settings, credential=FakeCredential())
    now = pipeline.clock.now()
    pipeline.store.put_baseline(VAULT_ID, vault_doc(), None, now=now)
    pipeline.store.put_baseline(SETTING_ID, SETTING, None, now=now)
    pipeline.store.put_baseline(PRICING_ID, PLAN, None, now=now)
    runtime.install(pipeline)
    yield pipeline
    runtime.install(None)


def audit(pipeline: Pipeline, event_id: str) -> dict[str, Any]:
    [record] = [r for r in pipeline.store.list_audit() if r.event_id == event_id]
    return record.outcome


def test_a_deleted_diagnostic_setting_is_put_back(installed: Pipeline, fake: ArmFake) -> None:
    fake.resources.pop(next(k for k in fake.resources if k.endswith("/to-sentinel")))
    event_id = "2f3e4d5c-6b7a-4898-a7b6-c5d4e3f2a1b0"

    deliver(resource_event(event_id, SETTING_ID, "Microsoft.Insights/diagnosticSettings/delete", INTRUDER,
                           "Microsoft.Resources.ResourceDeleteSuccess"))

    [put] = fake.requests_to("PUT", r"/diagnosticSettings/to-sentinel$")
    assert put.param("api-version") == "2021-05-01-preview"
    assert put.json["properties"] == SETTING["properties"]
    assert fake.resource(SETTING_ID)["properties"] == SETTING["properties"]  # type: ignore[index]
    alerts = fake.requests_to("PUT", rf"/providers/Microsoft\.Security/assessments/{assessment_name('KV-LOG-01')}$")
    assert alerts and fake.requests.index(alerts[0]) < fake.requests.index(put)  # alert first
    outcome = audit(installed, event_id)
    assert "KV-LOG-01" in {f["rule"] for f in outcome["findings"]}
    [action] = [a for a in outcome["actions"] if a["handler"] == "restore_diagnostic_setting"]
    assert action["status"] == "applied" and action["before"] == [None]
    # kvguard's own PUT comes back as "self": nothing read, nothing written.
    before = len(fake.requests)
    own = installed.handle(resource_event("3a4b5c6d-7e8f-4a9b-8c0d-1e2f3a4b5c6d", SETTING_ID,
                                          "Microsoft.Insights/diagnosticSettings/write", KVGUARD,
                                          request_id=put.headers["x-ms-client-request-id"]))
    assert own[0].outcome == "self" and len(fake.requests) == before


def test_a_defender_plan_switched_off_raises_a_critical_finding(installed: Pipeline, fake: ArmFake) -> None:
    fake.add_resource({**PLAN, "properties": {"pricingTier": "Free"}})
    event_id = "4b5c6d7e-8f9a-4b0c-9d1e-2f3a4b5c6d7e"

    deliver(resource_event(event_id, PRICING_ID, "Microsoft.Security/pricings/write", INTRUDER))

    outcome = audit(installed, event_id)
    [finding] = [f for f in outcome["findings"] if f["rule"] == "KV-DEF-02"]
    assert finding["severity"] == "critical" and outcome["severity"] == "critical"
    assert fake.requests_to("GET", r"/pricings/KeyVaults$")[0].param("api-version") == "2024-01-01"
    puts = fake.requests_to("PUT", rf"/providers/Microsoft\.Security/assessments/{assessment_name('KV-DEF-02')}$")
    assert [p.json["properties"]["status"]["code"] for p in puts] == ["Unhealthy"]
    assert VAULT_ID.lower() in puts[0].path.lower()  # on the vault the plan covers
    [skipped] = [a for a in outcome["actions"] if a["handler"] == "restore_defender_plan"]
    assert skipped["status"] == "skipped"  # opt-in only
    assert fake.resource(PRICING_ID)["properties"] == {"pricingTier": "Free"}  # type: ignore[index]


def test_the_reconcile_timer_sweeps_the_plan(installed: Pipeline, fake: ArmFake) -> None:
    fake.add_resource({**PLAN, "properties": {"pricingTier": "Free"}})
    installed.store.put_baseline(PRICING_ID, {**PLAN, "properties": {"pricingTier": "Free"}},
                                 installed.store.get_baseline(PRICING_ID).etag,  # type: ignore[union-attr]
                                 now=installed.clock.now())

    outcomes = installed.reconcile([SUB])

    [swept] = [o for o in outcomes if str(o.event_id).startswith("sweep:")]
    assert {f.rule for f in swept.findings} == {"KV-DEF-01"}
    assert fake.requests_to("GET", r"/diagnosticSettings$")  # the vault's settings were listed
