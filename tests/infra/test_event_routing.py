"""The event path: the system topic of each protected subscription, the two event subscriptions to
on_vault_event with their filters (kvguard's own writes pass: the ledger needs them; Event Grid's
25 filter values per subscription split the operations), retries and dead letters."""

from __future__ import annotations

from kvguard import deployment
from tests.infra.bicep_tree import INFRA, Tree, accessor, body, condition, function, loop, only_resource, variable

# What the app's reconcile check demands of the subscription is what the Bicep deploys.
OPERATIONS = set(deployment.OPERATIONS)
# Failed attempts are signal too (a purge blocked by purge protection is a ResourceActionFailure).
EVENT_TYPES = set(deployment.EVENT_TYPES)


def event_subscription(trees: dict[str, Tree]) -> dict:
    tree = trees["modules/event-subscription.bicep"]
    return body(only_resource(tree, "Microsoft.EventGrid/systemTopics/eventSubscriptions"))["properties"]


def advanced_filters(trees: dict[str, Tree]) -> dict[str, dict]:
    filters = event_subscription(trees)["filter"]["advancedFilters"]
    by_operator = {f["operatorType"]: f for f in filters}
    assert len(by_operator) == len(filters) == 1, filters
    return by_operator


# protect.bicep's two event subscriptions: module name, the suffix of the subscription's name, and
# the operations kvguard's reconcile check demands of it.
SUBSCRIPTIONS = (("eventSubscription", "", deployment.VAULT_EVENTS),
                 ("surfaceEventSubscription", deployment.SURFACES_SUFFIX, deployment.SURFACE_OPERATIONS))


def passed_operations(trees: dict[str, Tree], module: str) -> list[str]:
    """The operations one of protect.bicep's event subscriptions is deployed to pass."""
    protect = trees["modules/protect.bicep"]
    values = variable(protect, body(protect["modules"][module])["params"]["operations"])
    assert isinstance(values, list), values
    return values


def test_included_event_types(trees: dict[str, Tree]) -> None:
    types = event_subscription(trees)["filter"]["includedEventTypes"]
    assert len(types) == len(EVENT_TYPES)
    assert set(types) == EVENT_TYPES
    # A cancelled action is not a failure of the caller.
    assert "Microsoft.Resources.ResourceActionCancel" not in types


def test_only_the_operations_it_is_given_pass(trees: dict[str, Tree]) -> None:
    string_in = advanced_filters(trees)["StringIn"]
    assert string_in["key"] == "data.operationName"
    assert string_in["values"] == "operations"
    # Event Grid refuses more than 25 advanced-filter values per event subscription: the module
    # says so, and deploying more fails.
    parameter = trees["modules/event-subscription.bicep"]["parameters"]["operations"]
    assert parameter["type"] == "array"
    assert {d["type"]: d["argument"] for d in parameter["decorators"] if d["type"] in ("max_length", "min_length")} == {
        "max_length": deployment.MAX_FILTER_VALUES, "min_length": 1}
    assert deployment.MAX_FILTER_VALUES == 25


def test_each_subscription_passes_exactly_what_the_app_checks_within_event_grids_limit(
        trees: dict[str, Tree]) -> None:
    """Each event subscription passes its share, no more than 25 values; together every operation
    kvguard handles, each once."""
    passed = []
    for module, _, expected in SUBSCRIPTIONS:
        values = passed_operations(trees, module)
        assert values == list(expected), module
        assert len(values) <= deployment.MAX_FILTER_VALUES, (module, len(values))
        passed.extend(values)
    assert len(passed) == len(set(passed)) == len(OPERATIONS)
    assert set(passed) == OPERATIONS
    # One subscription could not carry them all: the split is needed, not decoration.
    assert len(OPERATIONS) > deployment.MAX_FILTER_VALUES


def test_both_subscriptions_are_the_same_delivery_under_two_names(trees: dict[str, Tree]) -> None:
    protect = trees["modules/protect.bicep"]
    first, second = (body(protect["modules"][m]) for m, _, _ in SUBSCRIPTIONS)
    assert first["params"]["name"] == "eventSubscriptionName"
    assert second["params"]["name"] == "${eventSubscriptionName}" + deployment.SURFACES_SUFFIX
    shared = ("systemTopicName", "functionAppId", "deadLetterStorageAccountId", "deadLetterContainerName")
    assert [first["params"][k] for k in shared] == [second["params"][k] for k in shared]
    for module, _, _ in SUBSCRIPTIONS:
        entry = protect["modules"][module]
        assert entry["detail"]["path"] == "event-subscription.bicep"
        assert condition(entry) == "deployEventSubscription"
        assert "deadLetterAccess" in body(entry)["dependsOn"]


def test_further_surface_operations_pass() -> None:
    assert set(deployment.SURFACE_OPERATIONS) == {
        "Microsoft.Authorization/policyExemptions/write",
        "Microsoft.Authorization/policyExemptions/delete",
        "Microsoft.Authorization/policyAssignments/write",
        "Microsoft.Authorization/policyAssignments/delete",
        "Microsoft.Authorization/denyAssignments/write",
        "Microsoft.Authorization/denyAssignments/delete",
        "Microsoft.Resources/deploymentStacks/write",
        "Microsoft.Authorization/roleEligibilityScheduleRequests/write",
        "Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/write",
        "Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/delete",
        "Microsoft.Network/networkSecurityPerimeters/resourceAssociations/write",
        "Microsoft.Network/networkSecurityPerimeters/resourceAssociations/delete",
        "Microsoft.EventGrid/eventSubscriptions/write",
        "Microsoft.EventGrid/eventSubscriptions/delete",
        "Microsoft.KeyVault/managedHSMs/write",
        "Microsoft.KeyVault/managedHSMs/delete",
        "Microsoft.KeyVault/managedHSMs/privateEndpointConnections/write",
        "Microsoft.KeyVault/managedHSMs/privateEndpointConnections/delete",
        "Microsoft.KeyVault/locations/deletedManagedHSMs/purge/action",
        "Microsoft.KeyVault/vaults/keys/write",
    }


def test_key_vault_adjacent_and_own_deployment_operations_pass() -> None:
    vault_events = set(deployment.VAULT_EVENTS)
    assert {o for o in vault_events if o.startswith("Microsoft.KeyVault/")} == {
        "Microsoft.KeyVault/vaults/write",
        "Microsoft.KeyVault/vaults/accessPolicies/write",
        "Microsoft.KeyVault/vaults/delete",
        "Microsoft.KeyVault/locations/deletedVaults/purge/action",
        "Microsoft.KeyVault/vaults/privateEndpointConnections/write",
        "Microsoft.KeyVault/vaults/privateEndpointConnections/delete",
    }
    assert vault_events - {o for o in vault_events if o.startswith("Microsoft.KeyVault/")} == {
        "Microsoft.Insights/diagnosticSettings/write",
        "Microsoft.Insights/diagnosticSettings/delete",
        "Microsoft.Authorization/locks/write",
        "Microsoft.Authorization/locks/delete",
        "Microsoft.Security/pricings/write",
        "Microsoft.EventGrid/systemTopics/eventSubscriptions/write",
        "Microsoft.EventGrid/systemTopics/eventSubscriptions/delete",
        "Microsoft.EventGrid/systemTopics/delete",
        "Microsoft.Web/sites/config/write",
        "Microsoft.Web/sites/write",
        "Microsoft.Web/sites/stop/action",
        "Microsoft.Web/sites/delete",
        "Microsoft.Authorization/roleAssignments/write",
        "Microsoft.Authorization/roleAssignments/delete",
        "Microsoft.Authorization/roleDefinitions/write",
    }


def test_own_writes_are_not_filtered_out(trees: dict[str, Tree]) -> None:
    """No filter on the caller: a write made with kvguard's identity must reach the app, whose
    ledger tells a planned one (self) from an unplanned one (KV-SELF-01)."""
    filters = event_subscription(trees)["filter"]["advancedFilters"]
    assert all(f["key"] == "data.operationName" for f in filters), filters
    source = "\n".join(t for t in (INFRA / "modules/event-subscription.bicep").read_text().splitlines()
                       if not t.strip().startswith("//"))
    assert "principalId" not in source
    assert "ownPrincipalId" not in trees["modules/event-subscription.bicep"]["parameters"]
    for module, _, _ in SUBSCRIPTIONS:
        assert "ownPrincipalId" not in body(trees["modules/protect.bicep"]["modules"][module])["params"]


def test_the_app_knows_its_own_event_subscriptions_and_itself(trees: dict[str, Tree]) -> None:
    app = body(trees["main.bicep"]["modules"]["app"])["params"]["ownEventSubscriptionIds"]["operator"]
    assert app["type"] == "conditional"
    assert app["operands"]["condition"] == "deployEventSubscription"
    assert app["operands"]["true_value"] == "ownEventSubscriptionIds"
    text = (INFRA / "main.bicep").read_text()
    joined = function(trees["main.bicep"]["variables"]["ownEventSubscriptionIds"]["value"])
    assert joined is not None and joined["type"] == "concat"
    assert list(joined["parameters"].values())[:2] == ["vaultEventSubscriptionIds", "surfaceEventSubscriptionIds"]
    for name, (_, suffix, _) in zip(("vault", "surface"), SUBSCRIPTIONS, strict=True):
        (line,) = [t for t in text.splitlines() if t.startswith(f"var {name}EventSubscriptionIds = ")]
        assert "/providers/Microsoft.EventGrid/systemTopics/" in line
        assert line.endswith(f"/eventSubscriptions/kvguard-${{environmentName}}{suffix}']")
    protect = body(trees["main.bicep"]["modules"]["protect"])["params"]
    assert protect["eventSubscriptionName"] == "kvguard-${environmentName}"
    assert protect["systemTopicName"] == "evgst-kvguard-${token}"


def test_destination_is_on_vault_event_one_event_at_a_time(trees: dict[str, Tree]) -> None:
    properties = event_subscription(trees)
    assert properties["eventDeliverySchema"] == "EventGridSchema"
    destination = properties["destination"]
    assert destination["endpointType"] == "AzureFunction"
    assert destination["properties"]["resourceId"] == "${functionAppId}/functions/on_vault_event"
    assert destination["properties"]["maxEventsPerBatch"] == 1
    main = trees["main.bicep"]
    assert accessor(body(main["modules"]["protect"])["params"]["functionAppId"]) == "app.outputs.id"
    assert body(trees["modules/protect.bicep"]["modules"]["eventSubscription"])["params"]["functionAppId"] == (
        "functionAppId"
    )


def test_retries_and_dead_letters_with_the_topic_identity(trees: dict[str, Tree]) -> None:
    properties = event_subscription(trees)
    assert properties["retryPolicy"] == {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440}
    dead_letter = properties["deadLetterWithResourceIdentity"]
    assert dead_letter["identity"] == {"type": "SystemAssigned"}
    assert dead_letter["deadLetterDestination"]["endpointType"] == "StorageBlob"
    assert dead_letter["deadLetterDestination"]["properties"] == {
        "resourceId": "deadLetterStorageAccountId",
        "blobContainerName": "deadLetterContainerName",
    }
    assert "deadLetterDestination" not in properties, "dead-lettering must use the topic's identity (no keys)"
    main = trees["main.bicep"]
    assert accessor(body(main["modules"]["protect"])["params"]["deadLetterContainerName"]) == (
        "storage.outputs.deadLetterContainerName"
    )


def test_system_topic_watches_the_subscription_with_an_identity(trees: dict[str, Tree]) -> None:
    tree = trees["modules/system-topic.bicep"]
    created = tree["resources"]["created"]
    assert condition(created) == "create"
    topic = body(created)
    assert topic["location"] == "global"
    assert topic["identity"] == {"type": "SystemAssigned"}
    assert topic["properties"]["topicType"] == "Microsoft.Resources.Subscriptions"
    assert accessor(topic["properties"]["source"]) == "subscription().id"
    reused = tree["resources"]["reused"]
    assert reused["existing"] is True


def test_topic_identity_may_write_dead_letters_before_the_subscription_exists(trees: dict[str, Tree]) -> None:
    protect = trees["modules/protect.bicep"]
    access = protect["modules"]["deadLetterAccess"]
    assert access["detail"]["path"] == "deadletter-access.bicep"
    assert accessor(body(access)["params"]["principalId"]) == "systemTopic.outputs.principalId"
    assert "deadLetterAccess" in body(protect["modules"]["eventSubscription"])["dependsOn"]


def test_event_subscription_is_the_second_phase(trees: dict[str, Tree]) -> None:
    protect = trees["modules/protect.bicep"]
    assert condition(protect["modules"]["eventSubscription"]) == "deployEventSubscription"
    main = trees["main.bicep"]
    assert main["parameters"]["deployEventSubscription"]["default"] is False
    assert body(main["modules"]["protect"])["params"]["deployEventSubscription"] == "deployEventSubscription"


def test_every_protected_subscription_gets_its_own_deployment(trees: dict[str, Tree]) -> None:
    main = trees["main.bicep"]
    protect = main["modules"]["protect"]
    assert loop(protect) == {
        "type": "array",
        "detail": {"item_name": "subscriptionId", "array_name": "subscriptionIds"},
    }
    assert function(body(protect)["scope"]) == {
        "type": "subscription",
        "parameters": {"subscription_id": "subscriptionId"},
    }
    assert main["parameters"]["protectedSubscriptionIds"]["default"] == []
    # An empty list protects the deployment's own subscription.
    chosen = main["variables"]["subscriptionIds"]["value"]["operator"]
    assert chosen["type"] == "conditional"
    assert function(chosen["operands"]["condition"]) == {
        "type": "empty",
        "parameters": {"item_to_test": "protectedSubscriptionIds"},
    }
    assert [accessor(v) for v in chosen["operands"]["true_value"]] == ["subscription().subscriptionId"]
    assert chosen["operands"]["false_value"] == "protectedSubscriptionIds"
    assert body(main["modules"]["app"])["params"]["subscriptionIds"] == "subscriptionIds"


def test_an_existing_system_topic_can_be_reused(trees: dict[str, Tree]) -> None:
    main = trees["main.bicep"]
    assert main["parameters"]["existingSystemTopics"]["default"] == {}
    chosen = body(main["modules"]["protect"])["params"]["existingSystemTopic"]["operator"]
    assert function(chosen["operands"]["condition"]) == {
        "type": "contains",
        "parameters": {"container": "existingSystemTopics", "item_to_find": "subscriptionId"},
    }
    assert chosen["operands"]["false_value"] == {}
    protect = trees["modules/protect.bicep"]
    reuse = protect["variables"]["reuseTopic"]["value"]["operator"]
    assert reuse["type"] == "not"
    assert function(reuse["operands"]["bool_value"]) == {
        "type": "empty",
        "parameters": {"item_to_test": "existingSystemTopic"},
    }
    params = body(protect["modules"]["systemTopic"])["params"]
    assert params["create"] == {"operator": {"type": "not", "operands": {"bool_value": "reuseTopic"}}}
    assert params["name"] == "topicName"


def test_the_app_setting_names_its_event_subscriptions_and_the_app_itself(trees: dict[str, Tree]) -> None:
    from tests.infra.test_hardening import settings

    joined = function(settings(trees)["KVGUARD_OWN_RESOURCE_IDS"])
    assert joined is not None and joined["type"] == "join" and joined["parameters"]["delimiter"] == ","
    parts = function(joined["parameters"]["input_array"])
    assert parts is not None and parts["type"] == "concat"
    assert parts["parameters"]["arg_1"] == "ownEventSubscriptionIds"
    (app, container) = parts["parameters"]["arg_2"]
    assert function(app) == {"type": "resource_id", "parameters": {
        "resource_type": "Microsoft.Web/sites", "resource_name_1": "name", "resource_name_2": None,
        "resource_group_name": None, "subscription_id": None}}
    # The dead-letter container, so that KV-SELF-02 judges where the subscriptions dead-letter.
    # (pycep reads a four-argument resourceId's first argument as the resource group: the values
    # are what count.)
    dead_letters = function(container)
    assert dead_letters is not None and dead_letters["type"] == "resource_id"
    assert {v for v in dead_letters["parameters"].values() if v} == {
        "Microsoft.Storage/storageAccounts/blobServices/containers", "storageAccountName", "default",
        "deadLetterContainerName"}


def test_every_watched_resource_operation_of_these_families_passes(trees: dict[str, Tree]) -> None:
    """The filter passes each operation kvguard judges beside the vault (kvguard.resources)."""
    from kvguard.resources import RESOURCE_OPERATIONS

    passed = {v.lower() for module, _, _ in SUBSCRIPTIONS for v in passed_operations(trees, module)}
    assert set(RESOURCE_OPERATIONS) <= passed, sorted(set(RESOURCE_OPERATIONS) - passed)


def test_the_readme_counts_the_operations_and_names_both_subscriptions() -> None:
    readme = (INFRA.parent / "README.md").read_text(encoding="utf-8")
    assert f"kvguard watches {len(OPERATIONS)} operations" in readme
    assert f"passes the {len(deployment.VAULT_EVENTS)} operations on vaults" in readme
    assert f"passes the {len(deployment.SURFACE_OPERATIONS)} of the" in readme
    assert f"`kvguard-<environment>{deployment.SURFACES_SUFFIX}`" in readme
