"""The shared readings behind KV-NSP-01 and KV-EG-01: which vaults a perimeter's rule or
association reaches through the vaults' configurations, what an inbound rule admits, where an
event subscription delivers, and the policy keys that allow sources and destinations."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from detectors.cases import (
    FOREIGN_SUBSCRIPTION,
    PERIMETER_ID,
    SUBSCRIPTION,
    VAULT_ID,
    VAULT_TOPIC_ID,
    access_rule,
    event_subscription,
    perimeter_association,
    perimeter_configuration,
)
from kvguard.event_feeds import Destination, allowed_destination, destination, system_topic_of
from kvguard.perimeters import (
    Sources,
    configuration_vault,
    copy_in,
    inbound_sources,
    outside,
    perimeter_ref,
    reaches,
    without_sources,
)
from kvguard.policy import Policy


def test_a_rule_and_an_association_are_placed_in_their_perimeter_case_insensitively() -> None:
    rule = perimeter_ref(access_rule()["id"].replace("resourceGroups", "resourcegroups").upper())
    assert rule is not None and rule.perimeter == PERIMETER_ID.lower() and rule.profile == "default"
    association = perimeter_ref(perimeter_association()["id"])
    assert association is not None and association.profile is None and association.name == "kv-payments-assoc"
    assert perimeter_ref(f"{PERIMETER_ID}/profiles/default") is None


def test_a_vaults_configuration_reaches_its_profile_and_association_only() -> None:
    configuration = perimeter_configuration()
    assert configuration_vault(configuration) == VAULT_ID
    assert reaches(configuration, perimeter_ref(access_rule()["id"]))  # type: ignore[arg-type]
    assert not reaches(configuration, perimeter_ref(access_rule(profile="other")["id"]))  # type: ignore[arg-type]
    assert reaches(configuration, perimeter_ref(perimeter_association()["id"]))  # type: ignore[arg-type]
    assert not reaches(configuration, perimeter_ref(perimeter_association(name="x")["id"]))  # type: ignore[arg-type]


def test_the_configurations_copy_of_a_rule_and_an_association() -> None:
    rule = copy_in([perimeter_configuration()], access_rule()["id"])
    assert rule is not None and inbound_sources(rule).prefixes == {"10.20.0.0/16"}
    assert copy_in([perimeter_configuration()], access_rule(name="unknown")["id"]) is None
    association = copy_in([perimeter_configuration("Learning")], perimeter_association()["id"])
    assert association is not None and association["properties"]["accessMode"] == "Learning"
    assert association["properties"]["privateLinkResource"]["id"] == VAULT_ID


def test_inbound_sources_and_what_the_policy_leaves_outside() -> None:
    sources = inbound_sources(access_rule(("10.20.1.9/16", "0.0.0.0/0"), (FOREIGN_SUBSCRIPTION.upper(),)))
    assert sources == Sources(frozenset({"10.20.0.0/16", "0.0.0.0/0"}), frozenset({FOREIGN_SUBSCRIPTION}))
    assert inbound_sources(access_rule(direction="Outbound")) == Sources()
    left = outside(sources, Policy(allowed_perimeter_sources=["10.0.0.0/8"]).allowed_perimeter_sources)
    assert left == Sources(frozenset({"0.0.0.0/0"}), frozenset({FOREIGN_SUBSCRIPTION}))
    assert outside(sources, []) == sources


def test_a_rule_without_sources_keeps_the_rest_and_drops_read_only_state() -> None:
    rule = access_rule(("10.20.0.0/16", "0.0.0.0/0"), (SUBSCRIPTION, FOREIGN_SUBSCRIPTION))
    body = without_sources(rule, Sources(frozenset({"0.0.0.0/0"}), frozenset({FOREIGN_SUBSCRIPTION})))
    assert body["properties"]["addressPrefixes"] == ["10.20.0.0/16"]
    assert body["properties"]["subscriptions"] == [{"id": f"/subscriptions/{SUBSCRIPTION}"}]
    assert "provisioningState" not in body["properties"] and body["properties"]["direction"] == "Inbound"


def test_where_an_event_subscription_delivers() -> None:
    assert destination(event_subscription()) == Destination("webhook", "collector.attacker.example", "WebHook")
    identity = {"properties": {"deliveryWithResourceIdentity": {"destination": {
        "endpointType": "StorageQueue", "properties": {"resourceId": f"{VAULT_ID.upper()}"}}}}}
    assert destination(identity) == Destination("resource", VAULT_ID.lower(), "StorageQueue")
    assert destination({"properties": {}}) is None
    assert system_topic_of(event_subscription()["id"]) == VAULT_TOPIC_ID
    assert system_topic_of(event_subscription(on_vault=True)["id"]) is None


def test_allowed_destinations_by_host_url_or_own_subscription() -> None:
    hook = Destination("webhook", "hooks.soc.contoso.example", "WebHook")
    assert allowed_destination(hook, ["https://hooks.soc.contoso.example/api"], SUBSCRIPTION)
    assert allowed_destination(hook, ["hooks.soc.contoso.example"], SUBSCRIPTION)
    assert not allowed_destination(hook, ["soc.contoso.example"], SUBSCRIPTION)
    hub = Destination("resource", f"/subscriptions/{FOREIGN_SUBSCRIPTION}/resourcegroups/x/providers/h", "EventHub")
    assert not allowed_destination(hub, [], SUBSCRIPTION)
    assert allowed_destination(hub, [hub.value.upper()], SUBSCRIPTION)
    assert allowed_destination(hub, [], FOREIGN_SUBSCRIPTION)


def test_policy_keys_normalise_and_refuse_what_they_cannot_read() -> None:
    policy = Policy(allowed_perimeter_sources=["10.1.2.3/16", f"/subscriptions/{FOREIGN_SUBSCRIPTION.upper()}"],
                    allowed_event_destinations=[" Hooks.SOC.contoso.example/ "])
    assert policy.allowed_perimeter_sources == ["10.1.0.0/16", FOREIGN_SUBSCRIPTION]
    assert policy.allowed_event_destinations == ["hooks.soc.contoso.example"]
    with pytest.raises(ValidationError, match=r"(?s)allowed_perimeter_sources.*'corp-net' is neither a CIDR range nor"):
        Policy(allowed_perimeter_sources=["corp-net"])
