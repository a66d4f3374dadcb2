"""Deny assignments and eligibility requests through azure-mgmt-authorization, deployment stacks
through azure-mgmt-resource-deploymentstacks, and the routed gateway that picks between them: the
real SDK clients against the local HTTPS ARM fake, each document exactly as ARM sent it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detectors.cases import (
    DENY_ID,
    RESOURCE_GROUP_ID,
    STACK_ID,
    SUBSCRIPTION_ID,
    VAULT_ID,
    deny_assignment,
    eligibility_request,
    stack,
)
from kvguard.adapters.authorization import AuthorizationGateway
from kvguard.adapters.resources import ArmResourceGateway, RoutedResourceGateway
from kvguard.adapters.stacks import DeploymentStackReader
from kvguard.ports import PermanentError
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake

DENY = deny_assignment(["*/write"])
REQUEST = eligibility_request("secrets-user")
STACK = stack("denyWriteAndDelete")
SUBSCRIPTION_STACK = {**stack("denyDelete"),
                      "id": f"{SUBSCRIPTION_ID}/providers/Microsoft.Resources/deploymentStacks/platform",
                      "name": "platform"}


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        for doc in (DENY, REQUEST, STACK, SUBSCRIPTION_STACK):
            running.add_resource(doc)
        yield running


@pytest.fixture
def routed(fake: ArmFake, tmp_path: Path) -> Iterator[RoutedResourceGateway]:
    options: dict[str, Any] = {"connection_verify": str(fake.write_ca_bundle(tmp_path / "ca.pem")),
                               "retry_total": 0}
    authorization = AuthorizationGateway(FakeCredential(), endpoint=fake.base_url, **options)
    others = ArmResourceGateway(FakeCredential(), endpoint=fake.base_url, **options)
    stacks = DeploymentStackReader(FakeCredential(), endpoint=fake.base_url, **options)
    yield RoutedResourceGateway(authorization, others, stacks=stacks)
    for reader in (authorization, others, stacks):
        reader.close()


def test_each_is_read_by_id_as_arm_sent_it_through_its_sdk(routed: RoutedResourceGateway, fake: ArmFake) -> None:
    assert routed.get(DENY_ID) == DENY
    assert routed.get(REQUEST["id"]) == REQUEST
    assert routed.get(STACK_ID) == STACK
    assert routed.get(SUBSCRIPTION_STACK["id"]) == SUBSCRIPTION_STACK
    assert routed.get(DENY_ID.replace("d3a11ed0", "00000000")) is None
    (deny_read,) = fake.requests_to("GET", r"/denyAssignments/d3a11ed0")
    assert deny_read.param("api-version") == "2022-04-01"
    (request_read,) = fake.requests_to("GET", r"/roleEligibilityScheduleRequests/[^/]+$")
    assert request_read.param("api-version") == "2020-10-01"
    stack_reads = fake.requests_to("GET", r"/deploymentStacks/[^/]+$")
    assert {r.param("api-version") for r in stack_reads} == {"2025-07-01"}


def test_listing_at_a_vault_finds_what_covers_it(routed: RoutedResourceGateway, fake: ArmFake) -> None:
    denies = routed.list_at_scope(VAULT_ID, "Microsoft.Authorization/denyAssignments")
    assert [d["id"] for d in denies] == [DENY_ID]  # at the resource group: above the vault
    (listing,) = fake.requests_to("GET", r"/kv-payments/providers/Microsoft\.Authorization/denyAssignments$")
    assert listing.param("$filter") == "atScope()"
    requests = routed.list_at_scope(VAULT_ID, "Microsoft.Authorization/roleEligibilityScheduleRequests")
    assert [r["id"] for r in requests] == [REQUEST["id"]]
    assert requests[0]["properties"]["requestType"] == "AdminAssign"
    stacks = routed.list_at_scope(VAULT_ID, "Microsoft.Resources/deploymentStacks")
    assert sorted(s["id"] for s in stacks) == sorted([STACK_ID, SUBSCRIPTION_STACK["id"]])
    (listed,) = [s for s in stacks if s["id"] == STACK_ID]
    assert listed["properties"]["denySettings"] == STACK["properties"]["denySettings"]
    assert listed["properties"]["resources"] == STACK["properties"]["resources"]


def test_kvguard_never_writes_a_stack(routed: RoutedResourceGateway) -> None:
    with pytest.raises(PermanentError, match="never writes a deployment stack"):
        routed.put(STACK_ID, STACK)
    with pytest.raises(PermanentError, match="never deletes a deployment stack"):
        routed.delete(STACK_ID)
    assert RESOURCE_GROUP_ID in STACK_ID
