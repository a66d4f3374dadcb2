"""The ledger of own writes under attack, with the pipeline on the real SDK against the HTTPS ARM
fake and on both state stores (SQLite, and Azure Tables in Azurite).

Someone runs code as kvguard's identity. An own-identity event is `self` only when it carries the
nonce kvguard sent as the client request id of a write it noted in the ledger; an entry is voided
when its write fails; a correlation id never matches. So a throttled or refused revert leaves no
entry that a redelivery or the next unplanned write could be taken for, and copying a correlation
id of kvguard's gains nothing."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kvguard.adapters.arm import ArmVaultGateway
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.adapters.tables import TablesStateStore
from kvguard.pipeline import Pipeline
from kvguard.policy import Policy
from kvguard.ports import StateStore, TransientError
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake
from tests.integration.test_faults import ROGUE, ROGUE_GRANT, SUB, TENANT, VAULT_ID, vault_doc

KVGUARD = "3c4d5e6f-7081-4a92-8b3c-4d5e6f708192"
REMOVE = r"/accessPolicies/remove$"
THROTTLED = {"error": {"code": "TooManyRequests", "message": "Slow down."}}
SCOPE_LOCKED = {"error": {"code": "ScopeLocked", "message": "The scope is locked by a ReadOnly lock."}}
BAD_REQUEST = {"error": {"code": "BadRequest", "message": "The request is invalid."}}


def own_identity_event(event_id: str, *, request_id: str | None = "chosen-by-the-intruder",
                       correlation_id: str = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d",
                       action: str = "add") -> dict[str, Any]:
    """An `accessPolicies/write` by kvguard's identity, made now, with the client request id the
    caller sent (an intruder picks any; kvguard's own writes carry the nonce it noted)."""
    uri = f"{VAULT_ID}/accessPolicies/{action}"
    http = {"clientIpAddress": "203.0.113.7", "method": "PUT",
            **({"clientRequestId": request_id} if request_id is not None else {})}
    return {
        "id": event_id, "topic": f"/subscriptions/{SUB}", "subject": uri,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"), "dataVersion": "2",
        "data": {
            "authorization": {"scope": uri, "action": "Microsoft.KeyVault/vaults/accessPolicies/write",
                              "evidence": {"principalId": KVGUARD, "principalType": "ServicePrincipal"}},
            "claims": {"oid": KVGUARD, "appid": KVGUARD,
                       "http://schemas.microsoft.com/identity/claims/tenantid": TENANT},
            "correlationId": correlation_id, "httpRequest": http,
            "resourceUri": uri, "operationName": "Microsoft.KeyVault/vaults/accessPolicies/write",
            "status": "Succeeded", "subscriptionId": SUB, "tenantId": TENANT,
        },
    }


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        running.add_vault(vault_doc(copy.deepcopy(ROGUE_GRANT)))  # the intruder's grant, made as kvguard
        yield running


@pytest.fixture
def gateway(fake: ArmFake, tmp_path: Path) -> Iterator[ArmVaultGateway]:
    gw = ArmVaultGateway(
        FakeCredential(), endpoint=fake.base_url, connection_verify=str(fake.write_ca_bundle(tmp_path / "ca.pem")),
        retry_total=2, retry_backoff_factor=0.01, retry_backoff_max=0.05,
    )
    yield gw
    gw.close()


@pytest.fixture(params=["sqlite", "tables"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        sqlite = SQLiteStateStore(str(tmp_path / "state.db"))
        yield sqlite
        sqlite.close()
        return
    connection = request.getfixturevalue("azurite_connection_string")
    tables = TablesStateStore.from_connection_string(connection, table_prefix=request.getfixturevalue("table_prefix"))
    yield tables
    tables.close()


@pytest.fixture
def pipeline(gateway: ArmVaultGateway, store: StateStore) -> Pipeline:
    policy = Policy.model_validate({"mode": "remediate", "own_principal_ids": [KVGUARD]})
    pipeline = Pipeline(gateway=gateway, store=store, policy=policy)
    store.put_baseline(VAULT_ID, vault_doc(), None, now=pipeline.clock.now())
    return pipeline


def rules(outcome: Any) -> set[str]:
    return {f.rule for f in outcome.findings}


def principals(fake: ArmFake) -> list[str]:
    return [p["objectId"] for p in fake.vault(VAULT_ID)["properties"]["accessPolicies"]]


def test_a_redelivery_after_a_throttled_revert_is_judged_again_and_the_revert_retried(
    pipeline: Pipeline, fake: ArmFake
) -> None:
    """Issue 19, item 2: the unplanned write is alerted, the revert is throttled (429 through the
    SDK's retries), Event Grid redelivers; the redelivery must not take the ledger entry of the
    revert that failed: it is processed, raises KV-SELF-01 again and the revert is made."""
    attack = own_identity_event("c1000000-0000-4000-8000-000000000001")
    fake.inject("PUT", REMOVE, status=429, headers={"Retry-After": "0"}, body=THROTTLED, times=3)

    with pytest.raises(TransientError, match="429"):
        pipeline.handle(attack)
    assert len(fake.requests_to("PUT", REMOVE)) == 3
    assert ROGUE in principals(fake)

    (again,) = pipeline.handle(attack)

    assert again.outcome == "processed", again.reason
    assert {"KV-SELF-01", "KV-AP-01"} <= rules(again)
    assert {a.handler: a.status for a in again.actions}["revert_access_policy"] == "applied"
    assert ROGUE not in principals(fake)
    # The revert that landed carried a nonce of its own; the throttled ones each had theirs, voided.
    sent = {r.headers["x-ms-client-request-id"] for r in fake.requests_to("PUT", REMOVE)}
    assert len(sent) == 2 and "chosen-by-the-intruder" not in sent
    landed = fake.requests_to("PUT", REMOVE)[-1].headers["x-ms-client-request-id"]
    (own,) = pipeline.handle(own_identity_event("c1000000-0000-4000-8000-000000000002", request_id=landed,
                                                action="remove"))
    assert own.outcome == "self"
    for failed in sent - {landed}:
        (replayed,) = pipeline.handle(own_identity_event("c1000000-0000-4000-8000-000000000003",
                                                         request_id=failed, action="remove"))
        assert replayed.outcome == "processed" and "KV-SELF-01" in rules(replayed)


@pytest.mark.parametrize(("status", "body"), [(409, SCOPE_LOCKED), (400, BAD_REQUEST)], ids=["scope-locked", "400"])
def test_a_revert_refused_for_good_leaves_no_entry_for_the_next_unplanned_write(
    pipeline: Pipeline, fake: ArmFake, status: int, body: dict[str, Any]
) -> None:
    """Issue 19, item 3: the revert is refused for good; its entry is voided, so the identity's next
    unplanned write to the vault, hours later or at once, raises KV-SELF-01 and is not `self`."""
    if status == 409:
        fake.inject("PUT", REMOVE, status=status, body=body, times=3)  # ARM answers a lock the same each time
    else:
        fake.inject("PUT", REMOVE, status=status, body=body)
    (first,) = pipeline.handle(own_identity_event("c2000000-0000-4000-8000-000000000001"))
    assert "KV-SELF-01" in rules(first)
    assert {a.handler: a.status for a in first.actions}["revert_access_policy"] == "failed"
    fake.clear_faults()

    (next_write,) = pipeline.handle(own_identity_event("c2000000-0000-4000-8000-000000000002",
                                                       request_id=None))

    assert next_write.outcome == "processed", next_write.reason
    assert "KV-SELF-01" in rules(next_write)
    assert ROGUE not in principals(fake)  # judged like anyone's: the grant is reverted now


def test_a_write_carrying_the_correlation_id_of_a_kvguard_write_is_not_self(pipeline: Pipeline, fake: ArmFake) -> None:
    """Issue 19, item 3: any own-identity write that carried the correlation id of one of kvguard's
    writes was `self`; only the nonce of the write matches now."""
    (first,) = pipeline.handle(own_identity_event("c3000000-0000-4000-8000-000000000001"))
    assert {a.handler: a.status for a in first.actions}["revert_access_policy"] == "applied"
    (remove,) = fake.requests_to("PUT", REMOVE)
    nonce = remove.headers["x-ms-client-request-id"]
    kvguards = own_identity_event("c3000000-0000-4000-8000-000000000002", request_id=nonce, action="remove",
                                  correlation_id="9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a")
    assert pipeline.handle(kvguards)[0].outcome == "self"
    fake.add_vault(vault_doc(copy.deepcopy(ROGUE_GRANT)))  # the intruder grants again, reusing that correlation id

    (reused,) = pipeline.handle(own_identity_event("c3000000-0000-4000-8000-000000000003",
                                                   correlation_id="9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"))

    assert reused.outcome == "processed" and "KV-SELF-01" in rules(reused)
    assert ROGUE not in principals(fake)
