"""Failures no redelivery can cure, with the pipeline on the real SDK against the HTTPS ARM fake:
the event is recorded like a rejected payload (reason, raw payload, event id) and acknowledged, so
Event Grid does not retry it for 24 hours. Transient ones still raise with the claim released."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from kvguard.adapters.arm import ArmVaultGateway
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.adapters.tables import TablesStateStore
from kvguard.pipeline import Pipeline
from kvguard.ports import PermanentError, StateStore, TransientError
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake
from tests.integration.test_faults import (
    OWNER,
    ROGUE_GRANT,
    SUB,
    VAULT_ID,
    VAULT_PATH,
    event,
    pipeline_on,
    vault_doc,
)

EVENT_ID = "b0000000-0000-4000-8000-000000000001"
ROGUE_WRITE = "Microsoft.KeyVault/vaults/accessPolicies/write"


def arm_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# (status, body, headers, what the reason must name)
PERMANENT = {
    "400": (400, arm_error("BadRequest", "The vault name is invalid."), {}, "HTTP 400 BadRequest"),
    "401": (401, arm_error("InvalidAuthenticationTokenTenant", "Wrong tenant."), {}, "HTTP 401"),
    "403": (403, arm_error("AuthorizationFailed", "no Microsoft.KeyVault/vaults/read"), {},
            "HTTP 403 AuthorizationFailed"),
    "404-subscription": (404, arm_error("SubscriptionNotFound", f"The subscription '{SUB}' could not be found."), {},
                         "HTTP 404 SubscriptionNotFound"),
    "404-route": (404, arm_error("InvalidResourceType", "The resource type could not be found."), {},
                  "HTTP 404 InvalidResourceType"),
    "405": (405, arm_error("MethodNotAllowed", "No."), {}, "HTTP 405"),
    "200-html": (200, b"<html><body>Sign in</body></html>", {"Content-Type": "text/html"}, "not JSON"),
    "200-array": (200, [1, 2], {}, "a JSON list, not an object"),
    "200-string": (200, "<html>", {}, "a JSON str, not an object"),
    "200-no-vault": (200, {"error": None}, {}, "ARM's answer is not a vault: vault.id: missing or not a string"),
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


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStateStore:
    return SQLiteStateStore(str(tmp_path / "state.db"))


@pytest.fixture
def tables_store(azurite_connection_string: str, table_prefix: str) -> Iterator[TablesStateStore]:
    store = TablesStateStore.from_connection_string(azurite_connection_string, table_prefix, retry_total=0)
    yield store
    store.close()


def assert_recorded_and_acknowledged(pipeline: Pipeline, delivery: dict[str, Any], outcome: Any, names: str) -> None:
    assert outcome.outcome == "rejected"
    assert outcome.reason.startswith("permanent failure: ") and names in outcome.reason
    (rejected,) = pipeline.store.list_rejected()
    assert rejected.event_id == delivery["id"]
    assert rejected.reason == outcome.reason
    assert json.loads(rejected.raw) == delivery
    assert pipeline.store.list_audit() == []
    baseline = pipeline.store.get_baseline(VAULT_ID)
    assert baseline is not None
    assert [p["objectId"] for p in baseline.config["properties"]["accessPolicies"]] == [OWNER]
    # Acknowledged: the claim is complete, a redelivery is a duplicate and nothing is read again.
    reads = len(pipeline.store.list_rejected())
    assert [o.outcome for o in pipeline.handle(copy.deepcopy(delivery))] == ["duplicate"]
    assert len(pipeline.store.list_rejected()) == reads


@pytest.mark.parametrize("case", sorted(PERMANENT))
def test_permanent_arm_answers_are_recorded_not_raised(
    gateway: ArmVaultGateway, fake: ArmFake, store: SQLiteStateStore, case: str
) -> None:
    status, body, headers, names = PERMANENT[case]
    pipeline = pipeline_on(gateway, store)
    fake.inject("GET", VAULT_PATH, status=status, body=body, headers=headers, times=10)
    delivery = event(EVENT_ID, ROGUE_WRITE)

    (outcome,) = pipeline.handle(copy.deepcopy(delivery))

    assert_recorded_and_acknowledged(pipeline, delivery, outcome, names)
    assert len(fake.requests_to("GET", VAULT_PATH)) == 1  # no retry of a refusal: not by the SDK, not by us


def test_a_permanent_failure_is_recorded_on_table_storage_too(
    gateway: ArmVaultGateway, fake: ArmFake, tables_store: StateStore
) -> None:
    pipeline = pipeline_on(gateway, tables_store)
    fake.inject("GET", VAULT_PATH, status=403, body=arm_error("AuthorizationFailed", "no vaults/read"))
    delivery = event(EVENT_ID, ROGUE_WRITE)

    (outcome,) = pipeline.handle(json.dumps(delivery))

    assert_recorded_and_acknowledged(pipeline, delivery, outcome, "HTTP 403 AuthorizationFailed")


@pytest.mark.parametrize("backend", ["sqlite", "tables"])
def test_a_vault_name_too_long_for_a_url_is_414_recorded(
    gateway: ArmVaultGateway, fake: ArmFake, request: pytest.FixtureRequest, backend: str
) -> None:
    store: StateStore = request.getfixturevalue("store" if backend == "sqlite" else "tables_store")
    pipeline = pipeline_on(gateway, store)
    delivery = event(EVENT_ID, ROGUE_WRITE)
    long_id = VAULT_ID.replace("kv-orders-01", "k" * 100_000)
    for holder in (delivery, delivery["data"], delivery["data"]["authorization"]):
        for key in ("subject", "resourceUri", "scope"):
            if key in holder:
                holder[key] = f"{long_id}/accessPolicies/add"

    (outcome,) = pipeline.handle(copy.deepcopy(delivery))

    assert outcome.outcome == "rejected"
    assert "HTTP 414" in outcome.reason
    assert len(outcome.reason) < 1_000  # the 100,000 characters are not repeated in the reason
    (rejected,) = store.list_rejected()
    assert rejected.event_id == EVENT_ID and json.loads(rejected.raw) == delivery
    assert [o.outcome for o in pipeline.handle(copy.deepcopy(delivery))] == ["duplicate"]


# (status, code, requests the SDK makes: the first try and retry_total=2 retries where it retries)
@pytest.mark.parametrize(("status", "code", "tries"), [(429, "TooManyRequests", 3), (500, "InternalServerError", 3),
                                                       (503, "ServiceUnavailable", 3), (409, "Conflict", 1)])
def test_transient_answers_still_raise_and_release_the_claim(
    gateway: ArmVaultGateway, fake: ArmFake, store: SQLiteStateStore, status: int, code: str, tries: int
) -> None:
    pipeline = pipeline_on(gateway, store)
    fake.inject("GET", VAULT_PATH, status=status, body=arm_error(code, "later"), times=tries)

    with pytest.raises(TransientError, match=f"HTTP {status} {code}"):
        pipeline.handle(event(EVENT_ID, ROGUE_WRITE))
    assert store.list_rejected() == []

    (outcome,) = pipeline.handle(event(EVENT_ID, ROGUE_WRITE))  # redelivered once ARM answers again
    assert outcome.outcome == "processed"
    assert "KV-AP-01" in {f.rule for f in outcome.findings}


def test_a_missing_vault_is_still_an_answer_not_a_failure(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    fake.delete_vault(VAULT_ID)  # ARM's own 404 ResourceNotFound

    assert gateway.get(VAULT_ID) is None


def test_a_locked_vault_fails_the_revert_without_raising(
    gateway: ArmVaultGateway, fake: ArmFake, store: SQLiteStateStore
) -> None:
    pipeline = pipeline_on(gateway, store, mode="remediate")
    fake.inject("PUT", r"/accessPolicies/remove$", status=409,
                body=arm_error("ScopeLocked", "The scope cannot perform write operation because it is locked."))

    (outcome,) = pipeline.handle(event(EVENT_ID, ROGUE_WRITE))

    assert outcome.outcome == "processed"
    (revert,) = [a for a in outcome.actions if a.handler == "revert_access_policy"]
    assert revert.status == "failed" and "ScopeLocked" in revert.detail


def test_the_gateway_raises_permanent_error_chained_to_the_answer(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    fake.inject("PATCH", VAULT_PATH, status=400, body=arm_error("BadRequest", "bad networkAcls"))

    with pytest.raises(PermanentError, match="HTTP 400 BadRequest: bad networkAcls") as caught:
        gateway.update(VAULT_ID, {"publicNetworkAccess": "Enabled"})
    assert isinstance(caught.value.__cause__, HttpResponseError)
    assert caught.value.__cause__.status_code == 400
    assert fake.vault(VAULT_ID)["properties"]["publicNetworkAccess"] == "Disabled"
    assert len(fake.requests_to("PATCH", VAULT_PATH)) == 1
