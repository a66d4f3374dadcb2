"""The Functions app end to end for Azure Policy: an exemption on the vault's resource group, from
the Key Vault policy assigned on the subscription, arrives through on_vault_event decoded the way
the worker decodes it; the real PolicyClient of azure-mgmt-resource reads it (and the assignment's
definition) on the HTTPS ARM fake, Defender hears of it first, and with the rule opted in the
exemption is deleted, exactly that one; the assignment switched to DoNotEnforce is enforced again.
State is in Azurite."""

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
from tests.e2e.test_function_app import KVGUARD, SUB, TENANT, TOPIC_KEY, VAULT_ID, deliver, vault_doc
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake
from tests.integration.azurite import Azurite, running_azurite

INTRUDER = "6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d"
RESOURCE_GROUP = VAULT_ID.split("/providers/")[0]
DEFINITION_ID = "/providers/Microsoft.Authorization/policyDefinitions/0b60c0b2-2dc2-4e1c-b5c9-abbed971de53"
ASSIGNMENT_ID = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/policyAssignments/kv-purge-protection"
EXEMPTION_ID = f"{RESOURCE_GROUP}/providers/Microsoft.Authorization/policyExemptions/quick-fix"
OTHER_GROUP_EXEMPTION_ID = (f"/subscriptions/{SUB}/resourceGroups/rg-sandbox/providers/Microsoft.Authorization/"
                            "policyExemptions/sandbox")


def assignment() -> dict[str, Any]:
    return {"id": ASSIGNMENT_ID, "name": "kv-purge-protection", "type": "Microsoft.Authorization/policyAssignments",
            "location": "westeurope",
            "properties": {"displayName": "Key vaults should have deletion protection enabled",
                           "policyDefinitionId": DEFINITION_ID, "scope": f"/subscriptions/{SUB}",
                           "notScopes": [], "enforcementMode": "Default",
                           "parameters": {"effect": {"value": "Deny"}}}}


def definition() -> dict[str, Any]:
    return {"id": DEFINITION_ID, "name": DEFINITION_ID.rsplit("/", 1)[-1],
            "type": "Microsoft.Authorization/policyDefinitions",
            "properties": {"displayName": "Key vaults should have deletion protection enabled", "mode": "Indexed",
                           "policyType": "BuiltIn",
                           "policyRule": {"if": {"allOf": [
                               {"field": "type", "equals": "Microsoft.KeyVault/vaults"},
                               {"field": "Microsoft.KeyVault/vaults/enablePurgeProtection", "notEquals": "true"}]},
                               "then": {"effect": "[parameters('effect')]"}}}}


def exemption(resource_id: str = EXEMPTION_ID) -> dict[str, Any]:
    return {"id": resource_id, "name": resource_id.rsplit("/", 1)[-1],
            "type": "Microsoft.Authorization/policyExemptions",
            "properties": {"policyAssignmentId": ASSIGNMENT_ID, "exemptionCategory": "Waiver",
                           "displayName": "quick fix", "policyDefinitionReferenceIds": []}}


def policy_event(event_id: str, caller: str, resource_id: str, operation: str, event_type: str,
                 request_id: str | None = None) -> str:
    """An exemption's event as Event Grid delivers it (resourceUri spelled `resourcegroups`)."""
    uri = resource_id.replace("resourceGroups", "resourcegroups")
    return json.dumps({
        "id": event_id, "topic": f"/subscriptions/{SUB}", "subject": uri, "eventType": event_type,
        "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"), "dataVersion": "2",
        "metadataVersion": "1",
        "data": {
            "authorization": {"scope": uri, "action": operation,
                              "evidence": {"role": "Resource Policy Contributor", "principalId": caller,
                                           "principalType": "User"}},
            "claims": {"oid": caller, "http://schemas.microsoft.com/identity/claims/tenantid": TENANT},
            "correlationId": "8e7d6c5b-4a39-4281-9f0e-1d2c3b4a5f6e",
            "resourceProvider": "Microsoft.Authorization", "resourceUri": uri, "operationName": operation,
            "status": "Succeeded", "subscriptionId": SUB, "tenantId": TENANT,
            **({"httpRequest": {"clientRequestId": request_id}} if request_id else {}),
        },
    })


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake(eventgrid_key=TOPIC_KEY) as running:
        running.add_vault(vault_doc())
        running.add_policy(definition())
        running.add_policy(assignment())
        yield running


def _install(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opted_in: bool) -> Iterator[Pipeline]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.write_ca_bundle(tmp_path / "ca.pem")))
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("rules: {KV-POL-01: {remediate: true}, KV-POL-02: {remediate: true}}\n" if opted_in
                           else "{}\n", encoding="utf-8")
    with running_azurite(tmp_path) as azurite:
        pipeline = runtime.build(_settings(fake, azurite, policy_file), credential=FakeCredential())
        pipeline.store.put_baseline(VAULT_ID, vault_doc(), None, now=pipeline.clock.now())
        runtime.install(pipeline)
        yield pipeline
        runtime.install(None)


@pytest.fixture
def installed(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    yield from _install(fake, tmp_path, monkeypatch, opted_in=True)


def _settings(fake: ArmFake, azurite: Azurite, policy_file: Path) -> Settings:
    return Settings(
        mode="remediate", state_backend="tables", tables_connection=azurite.connection_string,
        arm_endpoint=fake.base_url, own_principal_ids=[KVGUARD], defender=True, policy_file=str(policy_file),
        eventgrid_topic_endpoint=f"{fake.base_url}/api/events", eventgrid_topic_key=TOPIC_KEY,
    )


WRITE, DELETE = "Microsoft.Authorization/policyExemptions/write", "Microsoft.Authorization/policyExemptions/delete"


def test_an_exemption_over_the_vault_is_alerted_then_deleted(installed: Pipeline, fake: ArmFake) -> None:
    event_id = "4f5a6b7c-8d9e-4f0a-9b1c-2d3e4f5a6b7d"
    fake.add_policy(exemption())

    deliver(policy_event(event_id, INTRUDER, EXEMPTION_ID, WRITE, "Microsoft.Resources.ResourceWriteSuccess"))

    # Read at the preview API version the exemptions exist in, re-read just before the delete.
    reads = fake.requests_to("GET", r"/policyExemptions/quick-fix$")
    assert {r.param("api-version") for r in reads} == {"2022-07-01-preview"}
    (removal,) = fake.requests_to("DELETE", r"/policyExemptions/quick-fix$")
    assert [fake.requests.index(r) < fake.requests.index(removal) for r in reads][:2] == [True, True]
    assert fake.policy_resource(EXEMPTION_ID) is None
    assert fake.policy_resource(ASSIGNMENT_ID) == assignment()  # the assignment itself is never written
    # Defender first (Unhealthy on the vault), resolved once the exemption is gone.
    puts = fake.requests_to("PUT", rf"/providers/Microsoft\.Security/assessments/{assessment_name('KV-POL-01')}$")
    assert [p.json["properties"]["status"]["code"] for p in puts] == ["Unhealthy", "Healthy"]
    assert puts[0].path.lower().lstrip("/").startswith(VAULT_ID.lower().lstrip("/"))
    assert fake.requests.index(puts[0]) < fake.requests.index(removal) < fake.requests.index(puts[1])
    detections = [e for e in fake.events if e["type"] == "kvguard.detection" and e["subject"] == "KV-POL-01"]
    assert [e["data"]["eventId"] for e in detections] == [event_id]
    (record,) = [r for r in installed.store.list_audit() if r.event_id == event_id]
    (finding,) = [f for f in record.outcome["findings"] if f["rule"] == "KV-POL-01"]
    assert finding["evidence"]["change"] == "created" and finding["evidence"]["vaults"] == [VAULT_ID]
    (action,) = [a for a in record.outcome["actions"] if a["handler"] == "remove_policy_exemption"]
    assert action["status"] == "applied"
    assert action["before"][0]["properties"]["policyAssignmentId"] == ASSIGNMENT_ID

    # kvguard's own delete comes back: "self" (the ledger noted it first), nothing read or written.
    before = len(fake.requests)
    own = installed.handle(policy_event("5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8e", KVGUARD, EXEMPTION_ID, DELETE,
                                        "Microsoft.Resources.ResourceDeleteSuccess",
                                        removal.headers["x-ms-client-request-id"]))
    assert [o.outcome for o in own] == ["self"]
    # A redelivery is a duplicate: no second delete.
    deliver(policy_event(event_id, INTRUDER, EXEMPTION_ID, WRITE, "Microsoft.Resources.ResourceWriteSuccess"))
    assert len(fake.requests) == before
    assert len(fake.requests_to("DELETE", r"/policyExemptions/")) == 1


def test_an_exemption_on_another_resource_group_is_ignored(installed: Pipeline, fake: ArmFake) -> None:
    fake.add_policy(exemption(OTHER_GROUP_EXEMPTION_ID))
    (outcome,) = installed.handle(policy_event("6b7c8d9e-0f1a-4b2c-9d3e-4f5a6b7c8d9f", INTRUDER,
                                               OTHER_GROUP_EXEMPTION_ID, WRITE,
                                               "Microsoft.Resources.ResourceWriteSuccess"))
    assert (outcome.outcome, outcome.reason) == (
        "ignored", f"scope /subscriptions/{SUB}/resourcegroups/rg-sandbox covers no vault kvguard knows")
    assert fake.policy_resource(OTHER_GROUP_EXEMPTION_ID) is not None
    assert fake.requests_to("DELETE", r"/policyExemptions/") == []
    assert fake.requests_to("PUT", rf"/assessments/{assessment_name('KV-POL-01')}$") == []


def test_without_the_opt_in_the_exemption_is_only_alerted(
        fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for pipeline in _install(fake, tmp_path, monkeypatch, opted_in=False):
        fake.add_policy(exemption())
        deliver(policy_event("7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0a", INTRUDER, EXEMPTION_ID, WRITE,
                             "Microsoft.Resources.ResourceWriteSuccess"))
        assert fake.policy_resource(EXEMPTION_ID) == exemption()
        assert fake.requests_to("DELETE", r"/policyExemptions/") == []
        puts = fake.requests_to("PUT", rf"/assessments/{assessment_name('KV-POL-01')}$")
        assert [p.json["properties"]["status"]["code"] for p in puts] == ["Unhealthy"]
        (record,) = [r for r in pipeline.store.list_audit() if r.event_id == "7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0a"]
        (action,) = [a for a in record.outcome["actions"] if a["handler"] == "remove_policy_exemption"]
        assert action["status"] == "skipped"


def test_a_key_vault_assignment_set_to_do_not_enforce_is_enforced_again(installed: Pipeline, fake: ArmFake) -> None:
    installed.store.put_baseline(ASSIGNMENT_ID, assignment(), None, now=installed.clock.now())
    loosened = assignment()
    loosened["properties"] = {**loosened["properties"], "enforcementMode": "DoNotEnforce", "description": "pilot"}
    fake.add_policy(loosened)
    event_id = "8d9e0f1a-2b3c-4d4e-9f5a-6b7c8d9e0f1b"

    deliver(policy_event(event_id, INTRUDER, ASSIGNMENT_ID, "Microsoft.Authorization/policyAssignments/write",
                         "Microsoft.Resources.ResourceWriteSuccess"))

    # The definition was read to see that the policy governs Key Vault; the PUT keeps the rest.
    assert fake.requests_to("GET", r"/policyDefinitions/0b60c0b2-2dc2-4e1c-b5c9-abbed971de53$")
    (put,) = fake.requests_to("PUT", r"/policyAssignments/kv-purge-protection$")
    assert put.param("api-version") == "2023-04-01"
    assert put.json["location"] == "westeurope" and put.json["properties"]["description"] == "pilot"
    restored = fake.policy_resource(ASSIGNMENT_ID)
    assert restored is not None and restored["properties"]["enforcementMode"] == "Default"
    assert restored["properties"]["policyDefinitionId"] == DEFINITION_ID
    (record,) = [r for r in installed.store.list_audit() if r.event_id == event_id]
    (finding,) = [f for f in record.outcome["findings"] if f["rule"] == "KV-POL-02"]
    assert finding["evidence"]["enforcementMode"] == {"before": "Default", "after": "DoNotEnforce"}
    own = installed.handle(policy_event("9e0f1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a2c", KVGUARD, ASSIGNMENT_ID,
                                        "Microsoft.Authorization/policyAssignments/write",
                                        "Microsoft.Resources.ResourceWriteSuccess",
                                        put.headers["x-ms-client-request-id"]))
    assert [o.outcome for o in own] == ["self"]
