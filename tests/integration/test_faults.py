"""Faults on the way to Azure, with the pipeline on real adapters: ARM throttling and outages on
the local HTTPS fake, a vault deleted while its event is in flight, and table storage going away
in the middle of a run. A transient fault raises `TransientError` (so Event Grid redelivers) and
leaves the event claimable; nothing else raises into the host."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import AzureError

from kvguard.adapters.arm import ArmVaultGateway
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.adapters.tables import TablesStateStore
from kvguard.pipeline import Pipeline
from kvguard.policy import Policy
from kvguard.ports import StateStore, TransientError
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake
from tests.integration.azurite import Azurite, start_azurite

SUB = "8e7d6c5b-4a39-4281-9f0e-1d2c3b4a5968"
TENANT = "2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901"
VAULT_ID = f"/subscriptions/{SUB}/resourceGroups/rg-orders/providers/Microsoft.KeyVault/vaults/kv-orders-01"
VAULT_PATH = r"/vaults/kv-orders-01$"
OWNER = "6d5c4b3a-2918-4f7e-8d6c-5b4a39281706"
ROGUE = "f1e2d3c4-b5a6-4978-8695-a4b3c2d1e0f9"
INTRUDER = "0c1d2e3f-4a5b-4c6d-9e8f-7a6b5c4d3e2f"
ARM_ERROR = {"error": {"code": "InternalServerError", "message": "Something went wrong."}}


def vault_doc(*extra_policies: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": VAULT_ID,
        "name": "kv-orders-01",
        "type": "Microsoft.KeyVault/vaults",
        "location": "swedencentral",
        "properties": {
            "tenantId": TENANT,
            "sku": {"family": "A", "name": "standard"},
            "accessPolicies": [
                {"tenantId": TENANT, "objectId": OWNER, "permissions": {"secrets": ["Get"]}},
                *extra_policies,
            ],
            "enableRbacAuthorization": False,
            "enableSoftDelete": True,
            "softDeleteRetentionInDays": 90,
            "enablePurgeProtection": True,
            "publicNetworkAccess": "Disabled",
            "networkAcls": {"defaultAction": "Deny", "bypass": "None", "ipRules": []},
        },
    }


ROGUE_GRANT = {"tenantId": TENANT, "objectId": ROGUE, "permissions": {"secrets": ["Get", "List"]}}


def event(event_id: str, operation: str = "Microsoft.KeyVault/vaults/accessPolicies/write") -> dict[str, Any]:
    deleting = operation.endswith("/delete")
    uri = VAULT_ID if deleting else f"{VAULT_ID}/accessPolicies/add"
    return {
        "id": event_id,
        "topic": f"/subscriptions/{SUB}",
        "subject": uri,
        "eventType": "Microsoft.Resources." + ("ResourceDeleteSuccess" if deleting else "ResourceWriteSuccess"),
        "eventTime": "2026-11-27T11:20:00Z",
        "dataVersion": "2",
        "data": {
            "authorization": {"scope": uri, "action": operation, "evidence": {"principalId": INTRUDER}},
            "claims": {"oid": INTRUDER, "http://schemas.microsoft.com/identity/claims/tenantid": TENANT},
            "resourceUri": uri,
            "operationName": operation,
            "status": "Succeeded",
            "subscriptionId": SUB,
            "tenantId": TENANT,
        },
    }


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        running.add_vault(vault_doc(copy.deepcopy(ROGUE_GRANT)))  # the world after the rogue write
        yield running


@pytest.fixture
def gateway(fake: ArmFake, tmp_path: Path) -> Iterator[ArmVaultGateway]:
    gw = ArmVaultGateway(
        FakeCredential(), endpoint=fake.base_url, connection_verify=str(fake.write_ca_bundle(tmp_path / "ca.pem")),
        retry_total=2, retry_backoff_factor=0.01, retry_backoff_max=0.05,
    )
    yield gw
    gw.close()


def pipeline_on(gateway: ArmVaultGateway, store: StateStore, mode: str = "alert") -> Pipeline:
    """No alert sinks: these faults are about ARM and storage, and alert mode writes nothing to ARM."""
    pipeline = Pipeline(gateway=gateway, store=store, policy=Policy.model_validate({"mode": mode}))
    if store.get_baseline(VAULT_ID) is None:
        store.put_baseline(VAULT_ID, vault_doc(), None, now=pipeline.clock.now())
    return pipeline


@pytest.fixture
def pipeline(gateway: ArmVaultGateway, tmp_path: Path) -> Pipeline:
    return pipeline_on(gateway, SQLiteStateStore(str(tmp_path / "state.db")))


def rules(outcome: Any) -> set[str]:
    return {f.rule for f in outcome.findings}


# ---- ARM -----------------------------------------------------------------------------------------


def test_throttled_once_then_processed(pipeline: Pipeline, fake: ArmFake) -> None:
    fake.inject("GET", VAULT_PATH, status=429, headers={"Retry-After": "1"},
                body={"error": {"code": "TooManyRequests", "message": "Slow down."}})

    (outcome,) = pipeline.handle(event("a0000000-0000-4000-8000-000000000001"))

    assert outcome.outcome == "processed"
    assert "KV-AP-01" in rules(outcome)
    assert len(fake.requests_to("GET", VAULT_PATH)) == 2  # the 429, then the retry the SDK made


def test_persistent_500_raises_transient_and_releases_the_claim(pipeline: Pipeline, fake: ArmFake) -> None:
    event_id = "a0000000-0000-4000-8000-000000000002"
    fake.inject("GET", VAULT_PATH, status=500, body=ARM_ERROR, times=3)  # the try and both retries

    with pytest.raises(TransientError, match="HTTP 500"):
        pipeline.handle(event(event_id))
    assert len(fake.requests_to("GET", VAULT_PATH)) == 3
    assert pipeline.store.list_audit(VAULT_ID) == []
    baseline = pipeline.store.get_baseline(VAULT_ID)
    assert baseline is not None
    assert [p["objectId"] for p in baseline.config["properties"]["accessPolicies"]] == [OWNER]

    # Event Grid redelivers once ARM is back: processed in full, not a duplicate.
    (outcome,) = pipeline.handle(event(event_id))
    assert outcome.outcome == "processed"
    assert "KV-AP-01" in rules(outcome)
    assert [r.event_id for r in pipeline.store.list_audit(VAULT_ID)] == [event_id]
    # And only now is it done.
    assert pipeline.handle(event(event_id))[0].outcome == "duplicate"


def test_vault_deleted_before_its_write_event_is_read(pipeline: Pipeline, fake: ArmFake) -> None:
    fake.delete_vault(VAULT_ID)

    (outcome,) = pipeline.handle(event("a0000000-0000-4000-8000-000000000003"))

    assert outcome.outcome == "processed"
    assert outcome.vault is not None and outcome.vault.lower() == VAULT_ID.lower()
    assert rules(outcome).isdisjoint({"KV-AP-01", "KV-AP-03", "KV-LIFE-01"})  # nothing to compare: it is gone
    assert fake.requests_to("PUT", r"/accessPolicies/") == []
    # The baseline is kept as it was, for the delete event that follows to be judged against.
    baseline = pipeline.store.get_baseline(VAULT_ID)
    assert baseline is not None and not baseline.deleted
    assert [p["objectId"] for p in baseline.config["properties"]["accessPolicies"]] == [OWNER]


def test_vault_deleted_is_kv_life_01(pipeline: Pipeline, fake: ArmFake) -> None:
    fake.delete_vault(VAULT_ID)

    (outcome,) = pipeline.handle(event("a0000000-0000-4000-8000-000000000004", "Microsoft.KeyVault/vaults/delete"))

    assert outcome.outcome == "processed"
    assert "KV-LIFE-01" in rules(outcome)
    baseline = pipeline.store.get_baseline(VAULT_ID)
    assert baseline is not None and baseline.deleted  # remembered for a recovery (KV-LIFE-03)


def test_vault_deleted_during_the_revert(gateway: ArmVaultGateway, fake: ArmFake, tmp_path: Path) -> None:
    pipeline = pipeline_on(gateway, SQLiteStateStore(str(tmp_path / "state.db")), mode="remediate")
    fake.before("PUT", r"/accessPolicies/remove$", lambda: fake.delete_vault(VAULT_ID))

    (outcome,) = pipeline.handle(event("a0000000-0000-4000-8000-000000000005"))

    assert outcome.outcome == "processed"
    assert "KV-AP-01" in rules(outcome)
    (revert,) = [a for a in outcome.actions if a.handler == "revert_access_policy"]
    assert revert.status == "failed"  # visible as a failure, never swallowed
    assert "not found" in revert.detail


# ---- table storage -------------------------------------------------------------------------------


def test_table_storage_stopped_mid_run(gateway: ArmVaultGateway, fake: ArmFake, tmp_path: Path) -> None:
    azurite: Azurite = start_azurite(tmp_path)
    try:
        options: dict[str, Any] = {"retry_total": 1, "retry_backoff_factor": 0.01, "retry_backoff_max": 0.05}
        store = TablesStateStore.from_connection_string(azurite.connection_string, "faults", **options)
        pipeline = pipeline_on(gateway, store)
        first = pipeline.handle(event("a0000000-0000-4000-8000-000000000006"))
        assert [o.outcome for o in first] == ["processed"]

        azurite.stop()
        second = "a0000000-0000-4000-8000-000000000007"
        with pytest.raises(TransientError) as caught:
            pipeline.handle(event(second))
        assert not isinstance(caught.value, AzureError)
        assert isinstance(caught.value.__cause__, AzureError)
    finally:
        azurite.stop()

    # Storage is back (a fresh account): the event that failed is processed, not lost.
    azurite = start_azurite(tmp_path)
    try:
        fresh = TablesStateStore.from_connection_string(azurite.connection_string, "faults", **options)
        pipeline = pipeline_on(gateway, fresh)
        (outcome,) = pipeline.handle(json.dumps(event(second)))
        assert outcome.outcome == "processed"
        assert "KV-AP-01" in rules(outcome)
        assert [r.event_id for r in fresh.list_audit(VAULT_ID)] == [second]
    finally:
        azurite.stop()
