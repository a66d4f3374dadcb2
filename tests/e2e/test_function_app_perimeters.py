"""The Functions app end to end for the paths around a vault's network and events: a range added
to a perimeter's inbound rule taken out again (KV-NSP-01), and an event subscription on the vault's
system topic to a foreign webhook deleted (KV-EG-01). Each event is delivered the way the worker
decodes it, with the real SDK pipelines talking to the HTTPS ARM fake and state in Azurite; the
vault's perimeter configuration is found by the reconcile timer's first run, as in production."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kvguard import runtime
from kvguard.detection import assessment_name
from kvguard.pipeline import Pipeline
from kvguard.settings import Settings
from tests.e2e.test_function_app import INTRUDER, KVGUARD, SUB, TOPIC_KEY, VAULT_ID, deliver, vault_doc
from tests.e2e.test_function_app_adjacent import audit, resource_event
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake
from tests.integration.azurite import Azurite, running_azurite

PERIMETER = f"/subscriptions/{SUB}/resourceGroups/rg-net/providers/Microsoft.Network/networkSecurityPerimeters/nsp-eu"
RULE_ID = f"{PERIMETER}/profiles/default/accessRules/corp"
CONFIGURATION_ID = f"{VAULT_ID}/networkSecurityPerimeterConfigurations/1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b.assoc"
TOPIC_ID = f"/subscriptions/{SUB}/resourceGroups/rg-billing/providers/Microsoft.EventGrid/systemTopics/kv-billing"
FEED_ID = f"{TOPIC_ID}/eventSubscriptions/names"
CORP = {"direction": "Inbound", "addressPrefixes": ["10.40.0.0/16"], "subscriptions": []}


def secured_vault() -> dict[str, object]:
    doc = vault_doc()
    return {**doc, "properties": {**doc["properties"], "publicNetworkAccess": "SecuredByPerimeter"}}


@pytest.fixture
def azurite(tmp_path: Path) -> Iterator[Azurite]:
    with running_azurite(tmp_path) as service:
        yield service


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake(eventgrid_key=TOPIC_KEY) as running:
        running.add_vault(secured_vault())
        running.add_resource({
            "id": CONFIGURATION_ID, "name": CONFIGURATION_ID.rsplit("/", 1)[-1],
            "type": "Microsoft.KeyVault/vaults/networkSecurityPerimeterConfigurations",
            "properties": {"networkSecurityPerimeter": {"id": PERIMETER, "perimeterGuid": "1f2e3d4c"},
                           "resourceAssociation": {"name": "assoc", "accessMode": "Enforced"},
                           "profile": {"name": "default", "accessRules": [{"name": "corp", "properties": CORP}]}}})
        running.add_resource({"id": TOPIC_ID, "name": "kv-billing-events", "type": "Microsoft.EventGrid/systemTopics",
                              "properties": {"source": VAULT_ID, "topicType": "Microsoft.KeyVault.vaults"}})
        yield running


@pytest.fixture
def installed(fake: ArmFake, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.write_ca_bundle(tmp_path / "ca.pem")))
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: {KV-NSP-01: {remediate: true}, KV-EG-01: {remediate: true}}\nremediate_threshold: 40\n")
    settings = Settings(
        mode="remediate", state_backend="tables", tables_connection=azurite.connection_string,
        arm_endpoint=fake.base_url, own_principal_ids=[KVGUARD], defender=True, policy_file=str(policy),
        eventgrid_topic_endpoint=f"{fake.base_url}/api/events", eventgrid_topic_key=TOPIC_KEY,
    )
    pipeline = runtime.build(settings, credential=FakeCredential())
    pipeline.reconcile([SUB])  # first run: the vault and its perimeter configuration seeded
    assert pipeline.store.get_baseline(CONFIGURATION_ID) is not None
    runtime.install(pipeline)
    yield pipeline
    runtime.install(None)


def test_a_range_added_to_the_vaults_perimeter_is_taken_out_again(installed: Pipeline, fake: ArmFake) -> None:
    fake.add_resource({"id": RULE_ID, "name": "corp",
                       "type": "Microsoft.Network/networkSecurityPerimeters/profiles/accessRules",
                       "properties": {**CORP, "addressPrefixes": ["10.40.0.0/16", "0.0.0.0/0"],
                                      "provisioningState": "Succeeded"}})
    event_id = "7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f"

    deliver(resource_event(event_id, RULE_ID, "Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/write",
                           INTRUDER))

    [put] = fake.requests_to("PUT", r"/accessRules/corp$")
    assert put.json["properties"]["addressPrefixes"] == ["10.40.0.0/16"]
    assert fake.resource(RULE_ID)["properties"]["addressPrefixes"] == ["10.40.0.0/16"]  # type: ignore[index]
    alerts = fake.requests_to("PUT", rf"/providers/Microsoft\.Security/assessments/{assessment_name('KV-NSP-01')}$")
    assert alerts and fake.requests.index(alerts[0]) < fake.requests.index(put)  # alert first
    assert VAULT_ID.lower() in alerts[0].path.lower()  # the vault the perimeter configuration names
    outcome = audit(installed, event_id)
    [finding] = [f for f in outcome["findings"] if f["rule"] == "KV-NSP-01"]
    assert finding["evidence"]["addedPrefixes"] == ["0.0.0.0/0"]
    [action] = [a for a in outcome["actions"] if a["handler"] == "remove_perimeter_rule_source"]
    assert action["status"] == "applied"
    before = len(fake.requests)
    own = installed.handle(resource_event("8d9e0f1a-2b3c-4d4e-9f5a-6b7c8d9e0f1a", RULE_ID,
                                          "Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/write",
                                          KVGUARD, request_id=put.headers["x-ms-client-request-id"]))
    assert own[0].outcome == "self" and len(fake.requests) == before


def test_a_foreign_webhook_on_the_vaults_events_is_deleted(installed: Pipeline, fake: ArmFake) -> None:
    fake.add_resource({"id": FEED_ID, "name": "names", "type": "Microsoft.EventGrid/systemTopics/eventSubscriptions",
                       "properties": {"topic": TOPIC_ID, "destination": {
                           "endpointType": "WebHook", "properties": {"endpointBaseUrl": "https://drop.example.net/x"}}}})
    event_id = "9e0f1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a2b"

    deliver(resource_event(event_id, FEED_ID, "Microsoft.EventGrid/systemTopics/eventSubscriptions/write", INTRUDER))

    [delete] = fake.requests_to("DELETE", r"/eventSubscriptions/names$")
    assert delete.param("api-version") == "2025-02-15"  # azure-mgmt-eventgrid's
    assert fake.resource(FEED_ID) is None
    outcome = audit(installed, event_id)
    [finding] = [f for f in outcome["findings"] if f["rule"] == "KV-EG-01"]
    assert finding["evidence"]["destination"]["webhook"] == "drop.example.net"
    assert finding["evidence"]["vaults"] == [VAULT_ID]
    [action] = [a for a in outcome["actions"] if a["handler"] == "remove_event_subscription"]
    assert action["status"] == "applied"
