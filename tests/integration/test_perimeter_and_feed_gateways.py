"""The readers of perimeters and event feeds through the real SDK pipelines against the HTTPS ARM
fake: a perimeter's access rules and associations and a vault's perimeter configurations by the
thin ARM call (azure-mgmt-keyvault's pipeline), system topics and event subscriptions through
azure-mgmt-eventgrid, all as the ARM JSON they were stored as."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from detectors.cases import (
    VAULT_ID,
    access_rule,
    event_subscription,
    perimeter_association,
    perimeter_configuration,
    vault_topic,
)
from kvguard.adapters.authorization import AuthorizationGateway
from kvguard.adapters.event_subscriptions import EventGridResources
from kvguard.adapters.resources import ArmResourceGateway, RoutedResourceGateway
from kvguard.perimeters import Sources, inbound_sources, without_sources
from kvguard.ports import PermanentError
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        yield running


@pytest.fixture
def routed(fake: ArmFake, tmp_path: Path) -> Iterator[RoutedResourceGateway]:
    options = {"connection_verify": str(fake.write_ca_bundle(tmp_path / "ca.pem")), "retry_total": 1,
               "retry_backoff_factor": 0.01, "retry_backoff_max": 0.05}
    arm = ArmResourceGateway(FakeCredential(), endpoint=fake.base_url, **options)
    event_grid = EventGridResources(FakeCredential(), endpoint=fake.base_url, **options)
    roles = AuthorizationGateway(FakeCredential(), endpoint=fake.base_url, **options)
    yield RoutedResourceGateway(roles, arm, event_grid=event_grid)
    for gateway in (arm, event_grid, roles):
        gateway.close()


def test_an_access_rule_is_read_and_put_back_without_the_added_sources(
        fake: ArmFake, routed: RoutedResourceGateway) -> None:
    opened = fake.add_resource(access_rule(("10.20.0.0/16", "0.0.0.0/0")))
    read = routed.get(opened["id"])
    assert read == opened
    [get] = fake.requests_to("GET", r"/accessRules/allow-corp$")
    assert get.param("api-version") == "2024-07-01"
    routed.put(opened["id"], without_sources(read, Sources(frozenset({"0.0.0.0/0"}))))
    assert inbound_sources(fake.resource(opened["id"])).prefixes == {"10.20.0.0/16"}
    [put] = fake.requests_to("PUT", r"/accessRules/allow-corp$")
    assert set(put.json) == {"properties"} and "provisioningState" not in put.json["properties"]


def test_an_association_is_read_and_a_vaults_configurations_are_listed(
        fake: ArmFake, routed: RoutedResourceGateway) -> None:
    association = fake.add_resource(perimeter_association("Learning"))
    assert routed.get(association["id"])["properties"]["accessMode"] == "Learning"
    configuration = fake.add_resource(perimeter_configuration())
    assert routed.list_at_scope(VAULT_ID, "Microsoft.KeyVault/vaults/networkSecurityPerimeterConfigurations") == [
        configuration]
    [listed] = fake.requests_to("GET", r"/networkSecurityPerimeterConfigurations$")
    assert listed.param("api-version") == "2024-04-01-preview"
    assert routed.get(configuration["id"]) == configuration


def test_event_subscriptions_and_topics_through_the_event_grid_sdk(
        fake: ArmFake, routed: RoutedResourceGateway) -> None:
    topic = fake.add_resource(vault_topic())
    feed = fake.add_resource(event_subscription())
    assert routed.get(topic["id"]) == topic
    assert routed.get(feed["id"]) == feed  # the raw JSON: endpointBaseUrl as stored, no SDK model fields
    [get] = fake.requests_to("GET", r"/systemTopics/kv-payments-events/eventSubscriptions/feed$")
    assert get.param("api-version") == "2025-02-15"
    assert routed.delete(feed["id"]) is True
    assert fake.resource(feed["id"]) is None
    assert routed.delete(feed["id"]) is False
    with pytest.raises(PermanentError, match="never writes event subscriptions"):
        routed.put(feed["id"], feed)


def test_a_vaults_own_event_subscriptions_are_listed_and_deleted(fake: ArmFake, routed: RoutedResourceGateway) -> None:
    on_vault = fake.add_resource(event_subscription(on_vault=True, name="inventory"))
    assert routed.list_at_scope(VAULT_ID, "Microsoft.EventGrid/eventSubscriptions") == [on_vault]
    assert routed.delete(on_vault["id"]) is True
    assert routed.list_at_scope(VAULT_ID, "Microsoft.EventGrid/eventSubscriptions") == []
