"""The Functions app end to end for KV-DENY-01: a deny assignment over a protected vault arrives
through on_vault_event, decoded the way the worker decodes it; the real AuthorizationManagementClient
reads it on the HTTPS ARM fake, and Defender and Event Grid hear of it on the deny's own event. The
next revert, which the deny now refuses with 403, comes after that alert and is recorded failed;
state is in Azurite."""

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
from tests.e2e.test_function_app import (
    INTRUDER,
    KVGUARD,
    ROGUE_GRANT,
    SUB,
    TENANT,
    TOPIC_KEY,
    VAULT_ID,
    deliver,
    event_json,
    vault_doc,
)
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake
from tests.integration.azurite import Azurite, running_azurite

RESOURCE_GROUP = VAULT_ID.split("/providers/")[0]
DENY_NAME = "4e5f6a7b-8c9d-4e0f-9a1b-2c3d4e5f6a7b"
DENY_ID = f"{RESOURCE_GROUP}/providers/Microsoft.Authorization/denyAssignments/{DENY_NAME}"
EVERYONE = "00000000-0000-0000-0000-000000000000"


def deny_doc(exclude: list[str] | None = None) -> dict[str, Any]:
    """A deny of every write and delete on the resource group for Everyone (a stack's or a managed
    application's), as ARM answers a GET (api-version 2022-04-01)."""
    return {
        "id": DENY_ID, "name": DENY_NAME, "type": "Microsoft.Authorization/denyAssignments",
        "properties": {
            "denyAssignmentName": "billing freeze", "description": "", "scope": RESOURCE_GROUP,
            "permissions": [{"actions": ["*/write", "*/delete"], "notActions": [], "dataActions": [],
                             "notDataActions": []}],
            "doNotApplyToChildScopes": False,
            "principals": [{"id": EVERYONE, "type": "SystemDefined"}],
            "excludePrincipals": [{"id": i, "type": "ServicePrincipal"} for i in exclude or []],
            "isSystemProtected": True,
        },
    }


def deny_event(event_id: str, caller: str) -> str:
    uri = DENY_ID.replace("resourceGroups", "resourcegroups")
    operation = "Microsoft.Authorization/denyAssignments/write"
    return json.dumps({
        "id": event_id, "topic": f"/subscriptions/{SUB}", "subject": uri,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"), "dataVersion": "2", "metadataVersion": "1",
        "data": {
            "authorization": {"scope": uri, "action": operation,
                              "evidence": {"role": "Owner", "principalId": caller, "principalType": "User"}},
            "claims": {"oid": caller, "http://schemas.microsoft.com/identity/claims/tenantid": TENANT},
            "correlationId": "6f7a8b9c-0d1e-4f2a-8b3c-4d5e6f7a8b9c",
            "resourceProvider": "Microsoft.Authorization", "resourceUri": uri, "operationName": operation,
            "status": "Succeeded", "subscriptionId": SUB, "tenantId": TENANT,
        },
    })


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake(eventgrid_key=TOPIC_KEY) as running:
        running.add_vault(vault_doc())
        yield running


@pytest.fixture
def installed(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.write_ca_bundle(tmp_path / "ca.pem")))
    with running_azurite(tmp_path) as azurite:
        pipeline = runtime.build(_settings(fake, azurite), credential=FakeCredential())
        pipeline.store.put_baseline(VAULT_ID, vault_doc(), None, now=pipeline.clock.now())
        runtime.install(pipeline)
        yield pipeline
        runtime.install(None)


def _settings(fake: ArmFake, azurite: Azurite) -> Settings:
    return Settings(
        mode="remediate", state_backend="tables", tables_connection=azurite.connection_string,
        arm_endpoint=fake.base_url, own_principal_ids=[KVGUARD], defender=True,
        eventgrid_topic_endpoint=f"{fake.base_url}/api/events", eventgrid_topic_key=TOPIC_KEY,
    )


def deny_assessments(fake: ArmFake) -> list[Any]:
    return fake.requests_to("PUT", rf"/providers/Microsoft\.Security/assessments/{assessment_name('KV-DENY-01')}$")


def test_a_deny_blocking_kvguard_is_reported_before_its_next_revert_fails(installed: Pipeline, fake: ArmFake) -> None:
    fake.add_resource(deny_doc())
    deny_id = "7a8b9c0d-1e2f-4a3b-9c4d-5e6f7a8b9c0d"

    deliver(deny_event(deny_id, INTRUDER))

    # Read through the authorization SDK, raised on the vault it covers, published, and nothing
    # written to the vault: the deny's own event is where it is reported.
    (read,) = fake.requests_to("GET", rf"/denyAssignments/{DENY_NAME}$")
    assert read.param("api-version") == "2022-04-01"
    (raised,) = deny_assessments(fake)
    assert raised.path.lower().lstrip("/").startswith(VAULT_ID.lower().lstrip("/"))
    assert raised.json["properties"]["status"]["code"] == "Unhealthy"
    (detection,) = [e for e in fake.events if e["type"] == "kvguard.detection" and e["subject"] == "KV-DENY-01"]
    blocked = {b["handler"] for b in detection["data"]["evidence"]["blocked"]}
    assert {"revert_access_policy", "restore_network", "restore_settings"} <= blocked
    assert fake.requests_to("PUT", r"/accessPolicies/") == [] and fake.requests_to("PATCH", r"/vaults/") == []
    (record,) = [r for r in installed.store.list_audit(DENY_ID) if r.event_id == deny_id]
    assert [f["rule"] for f in record.outcome["findings"] if f["rule"] == "KV-DENY-01"] == ["KV-DENY-01"]

    # The intruder now adds a rogue access policy; the deny refuses kvguard's revert with 403.
    fake.add_vault(vault_doc(ROGUE_GRANT))
    fake.inject("PUT", r"/accessPolicies/remove$", status=403, times=5, body={"error": {
        "code": "DenyAssignmentAuthorizationFailed",
        "message": f"The client '{KVGUARD}' has permission to perform action "
                   "'Microsoft.KeyVault/vaults/accessPolicies/write', but it is denied by deny assignment "
                   f"'{DENY_NAME}'."}})
    grant_id = "8b9c0d1e-2f3a-4b4c-8d5e-6f7a8b9c0d1e"

    deliver(event_json(grant_id, INTRUDER))

    (refused, *_) = fake.requests_to("PUT", r"/accessPolicies/remove$")
    assert fake.requests.index(raised) < fake.requests.index(refused), "the deny was reported first"
    (grant,) = [r for r in installed.store.list_audit(VAULT_ID) if r.event_id == grant_id]
    (revert,) = [a for a in grant.outcome["actions"] if a["handler"] == "revert_access_policy"]
    assert revert["status"] == "failed"
    assert "KV-DENY-01" in {f.rule for f in installed.store.open_findings(VAULT_ID)} | {
        f.rule for f in installed.store.open_findings(DENY_ID)}


def test_a_deny_that_excludes_kvguards_identity_raises_nothing(installed: Pipeline, fake: ArmFake) -> None:
    fake.add_resource(deny_doc(exclude=[KVGUARD]))

    deliver(deny_event("9c0d1e2f-3a4b-4c5d-9e6f-7a8b9c0d1e2f", INTRUDER))

    assert fake.requests_to("GET", rf"/denyAssignments/{DENY_NAME}$")
    assert deny_assessments(fake) == []
    assert [e for e in fake.events if e["subject"] == "KV-DENY-01"] == []
