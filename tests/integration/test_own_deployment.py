"""The reconcile timer's check of kvguard's own event subscription (KV-SELF-02): the real
azure-mgmt-eventgrid client against the local HTTPS ARM fake, the finding raised once while the
problem lasts and closed when the subscription is as deployed again."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kvguard.adapters.arm import ArmVaultGateway
from kvguard.adapters.deployment import ArmDeploymentReader
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.deployment import EVENT_TYPES, SURFACE_OPERATIONS, SURFACES_SUFFIX, VAULT_EVENTS
from kvguard.detection import assessment_name
from kvguard.ids import vault_key
from kvguard.pipeline import Pipeline
from kvguard.policy import Policy
from kvguard.sim import SimClock, SimDefender, World
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake

SUB = "8e7d6c5b-4a39-4281-9706-f5e4d3c2b1a0"
SUBSCRIPTION_ID = (f"/subscriptions/{SUB}/resourceGroups/rg-kvguard/providers/Microsoft.EventGrid"
                   "/systemTopics/evgst-kvguard/eventSubscriptions/kvguard-prod")
APP_ID = f"/subscriptions/{SUB}/resourceGroups/rg-kvguard/providers/Microsoft.Web/sites/func-kvguard-prod"
ACCOUNT_ID = f"/subscriptions/{SUB}/resourceGroups/rg-kvguard/providers/Microsoft.Storage/storageAccounts/stkvguard"
CONTAINER_ID = f"{ACCOUNT_ID}/blobServices/default/containers/deadletters"


def as_deployed() -> dict[str, Any]:
    """The event subscription's ARM GET body as the Bicep deploys it."""
    return {
        "id": SUBSCRIPTION_ID,
        "name": "kvguard-prod",
        "type": "Microsoft.EventGrid/systemTopics/eventSubscriptions",
        "properties": {
            "provisioningState": "Succeeded",
            "destination": {"endpointType": "AzureFunction",
                            "properties": {"resourceId": f"{APP_ID}/functions/on_vault_event", "maxEventsPerBatch": 1}},
            "filter": {
                "includedEventTypes": list(EVENT_TYPES),
                "advancedFilters": [
                    {"operatorType": "StringIn", "key": "data.operationName", "values": list(VAULT_EVENTS)},
                ],
            },
            "eventDeliverySchema": "EventGridSchema",
            "retryPolicy": {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440},
            "deadLetterWithResourceIdentity": {
                "identity": {"type": "SystemAssigned"},
                "deadLetterDestination": {"endpointType": "StorageBlob",
                                          "properties": {"resourceId": ACCOUNT_ID, "blobContainerName": "deadletters"}},
            },
        },
    }


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        yield running


@pytest.fixture
def world() -> World:
    return World(clock=SimClock())


@pytest.fixture
def pipeline(fake: ArmFake, tmp_path: Path, world: World) -> Iterator[Pipeline]:
    ca = str(fake.write_ca_bundle(tmp_path / "ca.pem"))
    options: dict[str, Any] = {"connection_verify": ca, "retry_total": 0}
    reader = ArmDeploymentReader(FakeCredential(), endpoint=fake.base_url, **options)
    gateway = ArmVaultGateway(FakeCredential(), endpoint=fake.base_url, **options)
    yield Pipeline(gateway=gateway, store=SQLiteStateStore(), clock=world.clock, deployment=reader,
                   policy=Policy(mode="observe", own_resource_ids=[SUBSCRIPTION_ID, APP_ID, CONTAINER_ID]),
                   sinks={"raise_defender_alert": SimDefender(world)})
    reader.close()
    gateway.close()


def deploy(fake: ArmFake, body: dict[str, Any]) -> None:
    fake.event_subscriptions[vault_key(SUBSCRIPTION_ID)] = body


def test_a_subscription_as_deployed_raises_nothing(pipeline: Pipeline, fake: ArmFake) -> None:
    deploy(fake, as_deployed())

    assert pipeline.reconcile([]) == []
    (read,) = fake.requests_to("GET", r"/eventSubscriptions/kvguard-prod$")
    assert read.param("api-version")
    assert read.headers["authorization"] == "Bearer fake-token"


def test_a_deleted_subscription_raises_kv_self_02_once_while_it_lasts(
    pipeline: Pipeline, fake: ArmFake, world: World
) -> None:
    (outcome,) = pipeline.reconcile([])

    assert outcome.resource == SUBSCRIPTION_ID and outcome.vault is None
    (finding,) = outcome.findings
    assert (finding.rule, finding.severity) == ("KV-SELF-02", "critical")
    assert finding.evidence["found"] == ["the event subscription does not exist"]
    assert finding.evidence["operation"] == "Microsoft.EventGrid/systemTopics/eventSubscriptions/delete"
    # Alerted although the policy says observe: the mode may be what was changed.
    assert [a.status for a in outcome.actions] == ["applied"]
    assert world.assessments[f"{vault_key(SUBSCRIPTION_ID)}|{assessment_name('KV-SELF-02')}"]["status"] == "Unhealthy"

    world.clock.advance(timedelta(hours=1))
    assert pipeline.reconcile([]) == [], "the same problem is not raised again every hour"
    assert len(fake.requests_to("GET", r"/eventSubscriptions/kvguard-prod$")) == 2


def test_a_filter_that_drops_events_raises_kv_self_02_and_its_repair_closes_it(
    pipeline: Pipeline, fake: ArmFake, world: World
) -> None:
    edited = as_deployed()
    edited["properties"]["filter"]["advancedFilters"].append(
        {"operatorType": "StringNotIn", "key": "data.authorization.evidence.principalId", "values": ["x"]})
    edited["properties"]["filter"]["advancedFilters"][0]["values"] = list(VAULT_EVENTS[1:])
    deploy(fake, edited)

    (outcome,) = pipeline.reconcile([])

    (finding,) = outcome.findings
    assert finding.evidence["operation"] == "Microsoft.EventGrid/systemTopics/eventSubscriptions/write"
    assert finding.evidence["found"] == [
        "operations not passed: Microsoft.KeyVault/vaults/write",
        "advanced filter StringNotIn on data.authorization.evidence.principalId may drop events",
    ]
    assert [f.rule for f in pipeline.store.open_findings(SUBSCRIPTION_ID)] == ["KV-SELF-02"]

    deploy(fake, copy.deepcopy(as_deployed()))
    (repaired,) = pipeline.reconcile([])

    assert repaired.findings == () and repaired.resource == SUBSCRIPTION_ID
    assert pipeline.store.open_findings(SUBSCRIPTION_ID) == []
    assert world.assessments[f"{vault_key(SUBSCRIPTION_ID)}|{assessment_name('KV-SELF-02')}"]["status"] == "Healthy"


def test_a_failing_read_is_logged_and_retried_next_time(pipeline: Pipeline, fake: ArmFake) -> None:
    fake.inject("GET", r"/eventSubscriptions/kvguard-prod$", status=403,
                body={"error": {"code": "AuthorizationFailed", "message": "no read"}})

    assert pipeline.reconcile([]) == []
    assert pipeline.store.open_findings(SUBSCRIPTION_ID) == []
    deploy(fake, as_deployed())
    assert pipeline.reconcile([]) == []



def test_a_subscription_redirected_to_another_apps_function_of_the_same_name_raises_kv_self_02(
    pipeline: Pipeline, fake: ArmFake
) -> None:
    hijacked = as_deployed()
    other = APP_ID.replace("func-kvguard-prod", "func-collector")
    hijacked["properties"]["destination"]["properties"]["resourceId"] = f"{other}/functions/on_vault_event"
    hijacked["properties"]["retryPolicy"]["maxDeliveryAttempts"] = 1
    hijacked["properties"]["deadLetterWithResourceIdentity"]["deadLetterDestination"]["properties"][
        "blobContainerName"] = "app-package"
    deploy(fake, hijacked)

    (outcome,) = pipeline.reconcile([])

    (finding,) = outcome.findings
    assert finding.evidence["found"] == [
        f"events go to {other}/functions/on_vault_event, not to {APP_ID}/functions/on_vault_event",
        "retryPolicy maxDeliveryAttempts is 1, not 30",
        "dead letters go to container 'app-package', not 'deadletters'",
    ]


def test_each_of_the_two_subscriptions_is_checked_against_its_own_share(
    fake: ArmFake, tmp_path: Path, world: World
) -> None:
    """The surfaces subscription narrowed to drop the deny-assignment events raises KV-SELF-02 on
    it alone; the vault's subscription, as deployed, raises nothing."""
    surfaces_id = SUBSCRIPTION_ID + SURFACES_SUFFIX
    ca = str(fake.write_ca_bundle(tmp_path / "ca.pem"))
    options: dict[str, Any] = {"connection_verify": ca, "retry_total": 0}
    with closing(ArmDeploymentReader(FakeCredential(), endpoint=fake.base_url, **options)) as reader, \
            closing(ArmVaultGateway(FakeCredential(), endpoint=fake.base_url, **options)) as gateway:
        pipeline = Pipeline(gateway=gateway, store=SQLiteStateStore(), clock=world.clock, deployment=reader,
                            policy=Policy(mode="observe",
                                          own_resource_ids=[SUBSCRIPTION_ID, surfaces_id, APP_ID, CONTAINER_ID]),
                            sinks={"raise_defender_alert": SimDefender(world)})
        deploy(fake, as_deployed())
        surfaces = as_deployed()
        surfaces["id"], surfaces["name"] = surfaces_id, surfaces_id.rsplit("/", 1)[1]
        dropped = "Microsoft.Authorization/denyAssignments/write"
        surfaces["properties"]["filter"]["advancedFilters"][0]["values"] = [
            o for o in SURFACE_OPERATIONS if o != dropped]
        fake.event_subscriptions[vault_key(surfaces_id)] = surfaces

        (outcome,) = pipeline.reconcile([])

        assert outcome.resource == surfaces_id
        (finding,) = outcome.findings
        assert finding.rule == "KV-SELF-02"
        assert finding.evidence["found"] == [f"operations not passed: {dropped}"]
        assert pipeline.store.open_findings(SUBSCRIPTION_ID) == []

        surfaces["properties"]["filter"]["advancedFilters"][0]["values"] = list(SURFACE_OPERATIONS)
        (repaired,) = pipeline.reconcile([])
        assert repaired.resource == surfaces_id and pipeline.store.open_findings(surfaces_id) == []
