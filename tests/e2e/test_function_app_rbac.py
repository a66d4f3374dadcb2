"""The Functions app end to end for an RBAC vault: a Secrets User grant arrives through
on_vault_event, decoded the way the worker decodes it; the real AuthorizationManagementClient
reads and deletes the assignment on the HTTPS ARM fake, Defender and Event Grid hear of it, state
is in Azurite."""

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
GRANTEE = "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e"
SECRETS_USER = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/" \
               "4633458b-17de-408a-b874-0445c86b69e6"
ASSIGNMENT_ID = f"{VAULT_ID}/providers/Microsoft.Authorization/roleAssignments/2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f"


def rbac_vault() -> dict[str, Any]:
    doc = vault_doc()
    doc["properties"] = {**doc["properties"], "enableRbacAuthorization": True, "accessPolicies": []}
    return doc


def role_event(event_id: str, caller: str, operation: str, event_type: str, request_id: str | None = None) -> str:
    """`request_id`: the client request id the write was sent with (kvguard's nonce on its own)."""
    uri = ASSIGNMENT_ID.replace("resourceGroups", "resourcegroups")
    return json.dumps({
        "id": event_id, "topic": f"/subscriptions/{SUB}", "subject": uri, "eventType": event_type,
        "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"), "dataVersion": "2",
        "metadataVersion": "1",
        "data": {
            "authorization": {"scope": uri, "action": operation,
                              "evidence": {"role": "Owner", "principalId": caller, "principalType": "User"}},
            "claims": {"oid": caller, "http://schemas.microsoft.com/identity/claims/tenantid": TENANT},
            "correlationId": "5d4e3f2a-1b0c-4d9e-8f7a-6b5c4d3e2f1a",
            "resourceProvider": "Microsoft.Authorization", "resourceUri": uri, "operationName": operation,
            "status": "Succeeded", "subscriptionId": SUB, "tenantId": TENANT,
            **({"httpRequest": {"clientRequestId": request_id}} if request_id else {}),
        },
    })


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake(eventgrid_key=TOPIC_KEY) as running:
        running.add_vault(rbac_vault())
        yield running


@pytest.fixture
def installed(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.write_ca_bundle(tmp_path / "ca.pem")))
    with running_azurite(tmp_path) as azurite:
        pipeline = runtime.build(_settings(fake, azurite), credential=FakeCredential())
        pipeline.store.put_baseline(VAULT_ID, rbac_vault(), None, now=pipeline.clock.now())
        fake.add_authorization({
            "id": ASSIGNMENT_ID, "name": ASSIGNMENT_ID.rsplit("/", 1)[-1],
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {"roleDefinitionId": SECRETS_USER, "principalId": GRANTEE, "principalType": "User",
                           "scope": VAULT_ID},
        })
        runtime.install(pipeline)
        yield pipeline
        runtime.install(None)


def _settings(fake: ArmFake, azurite: Azurite) -> Settings:
    return Settings(
        mode="remediate", state_backend="tables", tables_connection=azurite.connection_string,
        arm_endpoint=fake.base_url, own_principal_ids=[KVGUARD], defender=True,
        eventgrid_topic_endpoint=f"{fake.base_url}/api/events", eventgrid_topic_key=TOPIC_KEY,
    )


def test_a_secrets_user_grant_on_an_rbac_vault_is_deleted(installed: Pipeline, fake: ArmFake) -> None:
    event_id = "3e4f5a6b-7c8d-4e9f-8a0b-1c2d3e4f5a6c"
    write, delete = "Microsoft.Authorization/roleAssignments/write", "Microsoft.Authorization/roleAssignments/delete"

    deliver(role_event(event_id, INTRUDER, write, "Microsoft.Resources.ResourceWriteSuccess"))

    # Read first, then deleted by id, exactly that assignment.
    reads = fake.requests_to("GET", r"/roleAssignments/2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f$")
    (removal,) = fake.requests_to("DELETE", r"/roleAssignments/2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f$")
    # read to judge, re-read just before the delete, read after it for the record
    assert [fake.requests.index(r) < fake.requests.index(removal) for r in reads] == [True, True, False]
    assert fake.authorization_resource(ASSIGNMENT_ID) is None
    # The Defender assessment on the vault, and a detection CloudEvent, before the delete.
    puts = fake.requests_to("PUT", rf"/providers/Microsoft\.Security/assessments/{assessment_name('KV-RBAC-01')}$")
    # Raised Unhealthy before the delete, then Healthy once the delete resolved it.
    assert [p.json["properties"]["status"]["code"] for p in puts] == ["Unhealthy", "Healthy"]
    assert fake.requests.index(removal) < fake.requests.index(puts[1])
    assert puts[0].path.lower().lstrip("/").startswith(VAULT_ID.lower().lstrip("/"))
    assert fake.requests.index(puts[0]) < fake.requests.index(removal)
    detections = [e for e in fake.events if e["type"] == "kvguard.detection" and e["subject"] == "KV-RBAC-01"]
    assert [e["data"]["eventId"] for e in detections] == [event_id]
    (record,) = [r for r in installed.store.list_audit(VAULT_ID) if r.event_id == event_id]  # the vault it lies in
    (action,) = [a for a in record.outcome["actions"] if a["handler"] == "remove_role_assignment"]
    assert action["status"] == "applied" and action["before"][0]["properties"]["principalId"] == GRANTEE

    # kvguard's own delete comes back: "self" (the ledger noted it first), nothing read or written.
    before = len(fake.requests)
    own = installed.handle(role_event("7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d", KVGUARD, delete,
                                      "Microsoft.Resources.ResourceDeleteSuccess",
                                      removal.headers["x-ms-client-request-id"]))
    assert [o.outcome for o in own] == ["self"]
    # A redelivery of the grant is a duplicate: no second delete.
    deliver(role_event(event_id, INTRUDER, write, "Microsoft.Resources.ResourceWriteSuccess"))
    assert installed.handle(role_event(event_id, INTRUDER, write,
                                       "Microsoft.Resources.ResourceWriteSuccess"))[0].outcome == "duplicate"
    assert len(fake.requests) == before
    assert len(fake.requests_to("DELETE", r"/roleAssignments/")) == 1
