"""Settings a security reviewer looks for first: no shared keys, TLS 1.2, HTTPS only, no FTP or
basic publishing credentials, Entra ID only for App Insights and the topic, 'alert' by default."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.infra.bicep_tree import Tree, accessor, body, only_resource, resources, variable


def test_storage_account_is_identity_only_and_tls12(trees: dict[str, Tree]) -> None:
    properties = body(only_resource(trees["modules/storage.bicep"], "Microsoft.Storage/storageAccounts"))["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["allowBlobPublicAccess"] is False
    assert properties["supportsHttpsTrafficOnly"] is True
    assert properties["defaultToOAuthAuthentication"] is True


def test_storage_has_package_and_dead_letter_containers_and_tables(trees: dict[str, Tree]) -> None:
    tree = trees["modules/storage.bicep"]
    containers = resources(tree, "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert {body(c)["name"] for c in containers.values()} == {"deploymentContainerName", "deadLetterContainerName"}
    assert all(body(c)["properties"]["publicAccess"] == "None" for c in containers.values())
    assert len(resources(tree, "Microsoft.Storage/storageAccounts/tableServices")) == 1
    main = trees["main.bicep"]
    params = body(main["modules"]["storage"])["params"]
    assert variable(main, params["deploymentContainerName"]) == "app-package"
    assert variable(main, params["deadLetterContainerName"]) == "deadletters"


def function_app(trees: dict[str, Tree]) -> Mapping[str, Any]:
    return body(only_resource(trees["modules/functionapp.bicep"], "Microsoft.Web/sites"))


def settings(trees: dict[str, Tree]) -> dict[str, Any]:
    tree = trees["modules/functionapp.bicep"]
    combined = function_app(trees)["properties"]["siteConfig"]["appSettings"]["function"]
    assert combined["type"] == "concat"
    base, *optionals = (variable(tree, v) for v in combined["parameters"].values())
    # KVGUARD_POLICY_FILE only when a policy file is given, the findings table's settings only when
    # it is deployed, the audit workspace only when one is named.
    extra: list[Any] = []
    for optional, switch in zip(optionals, ("policyFile", "findingsLogEndpoint", "auditWorkspaceId"), strict=True):
        assert optional["operator"]["type"] == "conditional"
        operands = optional["operator"]["operands"]
        assert operands["condition"] == {"function": {"type": "empty", "parameters": {"item_to_test": switch}}}
        assert operands["true_value"] == []
        extra += operands["false_value"]
    named = {s["name"]: s["value"] for s in base + extra}
    assert len(named) == len(base) + len(extra), "an app setting is declared twice"
    return named


def test_function_app_is_https_only_without_ftp_or_basic_auth(trees: dict[str, Tree]) -> None:
    site = function_app(trees)
    assert site["kind"] == "functionapp,linux"
    assert site["properties"]["httpsOnly"] is True
    config = site["properties"]["siteConfig"]
    assert config["ftpsState"] == "Disabled"
    assert config["minTlsVersion"] == "1.2"
    policies = resources(trees["modules/functionapp.bicep"], "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {body(p)["name"]: body(p)["properties"]["allow"] for p in policies.values()} == {"ftp": False, "scm": False}


def test_flex_consumption_python_311_with_identity_deployment_storage(trees: dict[str, Tree]) -> None:
    plan = body(only_resource(trees["modules/functionapp.bicep"], "Microsoft.Web/serverfarms"))
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = function_app(trees)
    assert site["identity"]["type"] == "UserAssigned"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    assert set(config["scaleAndConcurrency"]) == {"maximumInstanceCount", "instanceMemoryMB"}


def test_app_settings(trees: dict[str, Tree]) -> None:
    named = settings(trees)
    assert named["AzureWebJobsStorage__accountName"] == "storageAccountName"
    assert named["AzureWebJobsStorage__credential"] == "managedidentity"
    assert named["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert named["AzureWebJobsStorage__tableServiceUri"] == "storageTableEndpoint"
    assert named["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD;ClientId=${identityClientId}"
    assert named["AZURE_CLIENT_ID"] == "identityClientId"
    assert named["KVGUARD_MODE"] == "mode"
    assert named["KVGUARD_OWN_PRINCIPAL_IDS"] == "identityPrincipalId"
    assert named["KVGUARD_STATE_BACKEND"] == "tables"
    assert named["KVGUARD_EVENTGRID_TOPIC_ENDPOINT"] == "topicEndpoint"
    assert named["KVGUARD_DEFENDER"] == "true"
    assert named["KVGUARD_POLICY_FILE"] == "policyFile"
    subscriptions = named["KVGUARD_SUBSCRIPTION_IDS"]["function"]
    assert subscriptions["type"] == "join"
    assert list(subscriptions["parameters"].values()) == ["subscriptionIds", ","]
    # Flex Consumption sets the runtime in functionAppConfig and rejects these settings.
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "AzureWebJobsStorage"} & set(named)


def test_app_settings_are_wired_to_the_right_outputs(trees: dict[str, Tree]) -> None:
    params = body(trees["main.bicep"]["modules"]["app"])["params"]
    assert accessor(params["identityPrincipalId"]) == "identity.outputs.principalId"
    assert accessor(params["identityClientId"]) == "identity.outputs.clientId"
    assert accessor(params["topicEndpoint"]) == "topic.outputs.endpoint"
    assert accessor(params["storageTableEndpoint"]) == "storage.outputs.tableEndpoint"
    assert params["mode"] == "mode"
    topic_outputs = trees["modules/topic.bicep"]["outputs"]
    assert accessor(topic_outputs["endpoint"]["value"]) == "topic.properties.endpoint"


def test_default_mode_is_alert(trees: dict[str, Tree]) -> None:
    for name in ("main.bicep", "modules/functionapp.bicep"):
        mode = trees[name]["parameters"]["mode"]
        assert mode["default"] == "alert", name
        allowed = [d["argument"] for d in mode["decorators"] if d["type"] == "allowed"]
        assert allowed == [["observe", "alert", "remediate"]], name


def test_application_insights_and_workspace_refuse_local_auth(trees: dict[str, Tree]) -> None:
    tree = trees["modules/monitoring.bicep"]
    insights = body(only_resource(tree, "Microsoft.Insights/components"))["properties"]
    assert insights["DisableLocalAuth"] is True
    assert insights["WorkspaceResourceId"] == {
        "operator": {"type": "property_accessor", "operands": {"operand_1": "workspace", "operand_2": "id"}}
    }
    workspace = body(only_resource(tree, "Microsoft.OperationalInsights/workspaces"))["properties"]
    assert workspace["features"]["disableLocalAuth"] is True


def test_detection_topic_is_cloudevents_with_local_auth_disabled(trees: dict[str, Tree]) -> None:
    topic = body(only_resource(trees["modules/topic.bicep"], "Microsoft.EventGrid/topics"))["properties"]
    assert topic["disableLocalAuth"] is True
    assert topic["inputSchema"] == "CloudEventSchemaV1_0"


def test_resources_carry_the_azd_tags(trees: dict[str, Tree]) -> None:
    main = trees["main.bicep"]
    assert main["variables"]["tags"]["value"]["'azd-env-name'"] == "environmentName"
    app_tags = body(main["modules"]["app"])["params"]["tags"]["function"]
    assert app_tags["type"] == "union"
    assert app_tags["parameters"]["arg_2"] == {"'azd-service-name'": "api"}
