"""kvguard's own resources are narrowly reachable and leave a trail: the dead-letter role names the
container (the deployment package beside it stays out of reach), its storage, app and system topic
log to its workspace, and the remediation role writes the diagnostic settings of vaults only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.infra.bicep_tree import Tree, accessor, body, only_resource, resources, variable
from tests.infra.test_roles import remediator_actions


def test_dead_letter_writers_and_readers_get_the_container_not_the_account(trees: dict[str, Tree]) -> None:
    tree = trees["modules/deadletter-access.bicep"]
    (assignment,) = resources(tree, "Microsoft.Authorization/roleAssignments").values()
    assert body(assignment)["scope"] == "deadLetterContainer"
    container = tree["resources"]["deadLetterContainer"]
    assert container["type"] == "Microsoft.Storage/storageAccounts/blobServices/containers"
    assert container["existing"] is True and body(container)["name"] == "containerName"
    # The operator's assignment and every system topic's name the dead-letter container.
    operator = body(trees["main.bicep"]["modules"]["operatorAccess"])["params"]
    assert accessor(operator["containerName"]) == "storage.outputs.deadLetterContainerName"
    topic = body(trees["modules/protect.bicep"]["modules"]["deadLetterAccess"])["params"]
    assert topic["containerName"] == "deadLetterContainerName"


def _settings(tree: Tree) -> dict[str, Mapping[str, Any]]:
    return {body(entry)["scope"]: body(entry)["properties"]
            for entry in resources(tree, "Microsoft.Insights/diagnosticSettings").values()}


def test_kvguards_storage_app_and_topic_log_to_its_workspace(trees: dict[str, Tree]) -> None:
    tree = trees["modules/own-diagnostics.bicep"]
    settings = _settings(tree)
    assert set(settings) == {"storage", "blobService", "tableService", "queueService", "site", "systemTopic"}
    assert all(s["workspaceId"] == "workspaceId" for s in settings.values())
    all_logs = [{"categoryGroup": "allLogs", "enabled": True}]
    for service in ("blobService", "tableService", "queueService", "systemTopic"):
        assert variable(tree, settings[service]["logs"]) == all_logs, service
    assert settings["site"]["logs"] == [{"category": "FunctionAppLogs", "enabled": True}]
    assert settings["storage"]["metrics"] == [{"category": "Transaction", "enabled": True}]

    central = body(trees["main.bicep"]["modules"]["ownDiagnostics"])["params"]
    assert accessor(central["workspaceId"]) == "monitoring.outputs.logAnalyticsId"
    assert accessor(central["storageAccountName"]) == "storage.outputs.name"
    assert accessor(central["functionAppName"]) == "app.outputs.name"
    per_subscription = trees["modules/protect.bicep"]["modules"]["topicDiagnostics"]
    assert per_subscription["detail"]["path"] == "own-diagnostics.bicep"
    assert accessor(body(per_subscription)["params"]["systemTopicName"]) == "systemTopic.outputs.name"
    assert accessor(body(trees["main.bicep"]["modules"]["protect"])["params"]["workspaceId"]) == (
        "monitoring.outputs.logAnalyticsId")


def test_the_remediation_role_writes_the_diagnostic_settings_of_vaults_only(trees: dict[str, Tree]) -> None:
    actions = remediator_actions(trees)
    assert "Microsoft.KeyVault/vaults/providers/Microsoft.Insights/diagnosticSettings/write" in actions
    assert not [a for a in actions if a.lower().startswith("microsoft.insights/")]
    role = body(only_resource(trees["modules/role-definition.bicep"], "Microsoft.Authorization/roleDefinitions"))
    assert role["properties"]["type"] == "CustomRole"
