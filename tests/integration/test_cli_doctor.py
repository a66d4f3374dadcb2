"""`kvguard doctor` against the HTTPS ARM fake: the real azure-mgmt-security, -authorization,
-monitor and -eventgrid clients read the subscription, and each failed check names its fix."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.cli import main
from kvguard.deployment import EVENT_TYPES, VAULT_EVENTS
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake, cli_environment

SUB = "8e7d6c5b-4a39-4281-9706-f5e4d3c2b1a0"
TENANT = "1a2b3c4d-5e6f-4a7b-8c9d-e0f1a2b3c4d5"
IDENTITY = "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f"
EVENT_SUBSCRIPTION = (f"/subscriptions/{SUB}/resourceGroups/rg-kvguard/providers/Microsoft.EventGrid"
                      "/systemTopics/evgst-kvguard/eventSubscriptions/kvguard-prod")
APP = f"/subscriptions/{SUB}/resourceGroups/rg-kvguard/providers/Microsoft.Web/sites/func-kvguard-prod"
VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-apps/providers/Microsoft.KeyVault/vaults/kv-web-01"
WORKSPACE = f"/subscriptions/{SUB}/resourceGroups/rg-logs/providers/Microsoft.OperationalInsights/workspaces/law-sec"
ROLE_DEFINITIONS = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions"
RBAC_ADMINISTRATOR = "f58310d9-a9f6-439a-9e8d-f62e7b41a168"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
REMEDIATOR = "9b8a7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"


def role(guid: str, name: str, actions: list[str]) -> dict[str, Any]:
    return {"id": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{guid}", "name": guid,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {"roleName": name, "type": "BuiltInRole" if guid == READER else "CustomRole",
                           "permissions": [{"actions": actions, "notActions": [], "dataActions": [],
                                            "notDataActions": []}]}}


def assignment(guid: str, role_guid: str) -> dict[str, Any]:
    return {"id": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/{guid}", "name": guid,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {"roleDefinitionId": f"{ROLE_DEFINITIONS}/{role_guid}", "principalId": IDENTITY,
                           "principalType": "ServicePrincipal", "scope": f"/subscriptions/{SUB}"}}


def event_subscription() -> dict[str, Any]:
    return {
        "id": EVENT_SUBSCRIPTION, "name": "kvguard-prod", "type": "Microsoft.EventGrid/systemTopics/eventSubscriptions",
        "properties": {
            "destination": {"endpointType": "AzureFunction",
                            "properties": {"resourceId": f"{APP}/functions/on_vault_event"}},
            "filter": {"includedEventTypes": list(EVENT_TYPES), "advancedFilters": [
                {"operatorType": "StringIn", "key": "data.operationName", "values": list(VAULT_EVENTS)}]},
            "retryPolicy": {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440},
            "deadLetterWithResourceIdentity": {"identity": {"type": "SystemAssigned"}, "deadLetterDestination": {
                "endpointType": "StorageBlob", "properties": {"resourceId": f"/subscriptions/{SUB}/resourceGroups/"
                                                              "rg-kvguard/providers/Microsoft.Storage/storageAccounts/"
                                                              "stkvguard", "blobContainerName": "deadletters"}}},
        },
    }


def vault_doc() -> dict[str, Any]:
    return {"id": VAULT, "name": "kv-web-01", "type": "Microsoft.KeyVault/vaults", "location": "uksouth",
            "properties": {"tenantId": TENANT, "sku": {"family": "A", "name": "standard"}, "accessPolicies": [],
                           "enableRbacAuthorization": True, "enablePurgeProtection": True}}


AUDIT_SETTING = {"id": f"{VAULT}/providers/Microsoft.Insights/diagnosticSettings/audit", "name": "audit",
                 "type": "Microsoft.Insights/diagnosticSettings",
                 "properties": {"workspaceId": WORKSPACE, "logs": [{"categoryGroup": "audit", "enabled": True}],
                                "metrics": []}}


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    """A subscription kvguard protects as deployed: every check passes."""
    with arm_fake() as running:
        running.add_vault(vault_doc())
        running.event_subscriptions[EVENT_SUBSCRIPTION.lower()] = event_subscription()
        state = running.onboarding
        state.pricings[f"{SUB}/keyvaults"] = {
            "id": f"/subscriptions/{SUB}/providers/Microsoft.Security/pricings/KeyVaults", "name": "KeyVaults",
            "type": "Microsoft.Security/pricings", "properties": {"pricingTier": "Standard", "subPlan": "PerKeyVault"}}
        state.role_definitions[READER] = role(READER, "Reader", ["*/read"])
        state.role_definitions[REMEDIATOR] = role(REMEDIATOR, "kvguard remediator (prod)", [
            "Microsoft.KeyVault/vaults/read", "Microsoft.KeyVault/vaults/write",
            "Microsoft.KeyVault/vaults/accessPolicies/write",
            "Microsoft.KeyVault/vaults/privateEndpointConnections/write",
            "Microsoft.KeyVault/vaults/providers/Microsoft.Insights/diagnosticSettings/write"])
        # remove_role_assignment's right (the deployment narrows it with an ABAC condition)
        state.role_definitions[RBAC_ADMINISTRATOR] = role(
            RBAC_ADMINISTRATOR, "Role Based Access Control Administrator",
            ["Microsoft.Authorization/roleAssignments/write", "Microsoft.Authorization/roleAssignments/delete",
             "*/read"])
        state.role_assignments += [assignment("a1b2c3d4-0000-4000-8000-000000000001", READER),
                                   assignment("a1b2c3d4-0000-4000-8000-000000000002", REMEDIATOR),
                                   assignment("a1b2c3d4-0000-4000-8000-000000000003", RBAC_ADMINISTRATOR)]
        state.diagnostic_settings[VAULT.lower()] = [copy.deepcopy(AUDIT_SETTING)]
        yield running


@pytest.fixture(autouse=True)
def environment(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The operator's shell, with the state kvguard recorded there (`kvguard baseline` made it)."""
    path = cli_environment(fake, tmp_path, monkeypatch, own_principal_ids=IDENTITY,
                           own_resource_ids=EVENT_SUBSCRIPTION)
    path.parent.mkdir(parents=True)
    SQLiteStateStore(path).close()
    return path


def doctor(*extra: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    status = main(["doctor", "--subscription", SUB, "--json", *extra], out, credential=FakeCredential())
    lines = out.getvalue().splitlines()
    return status, json.loads(lines[-1])


def failed(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in report["checks"] if not c["ok"]}


def test_a_protected_subscription_passes_every_check(fake: ArmFake) -> None:
    status, report = doctor()

    assert status == 0, failed(report)
    assert report["ok"] is True
    assert {c["check"] for c in report["checks"]} == {"state store", "defender", "event subscription",
                                                      "role assignments", "audit logs", "deny settings",
                                                      "policy assignments"}
    pricing = fake.requests_to("GET", r"/providers/Microsoft\.Security/pricings/KeyVaults$")
    assert pricing and pricing[0].path == f"/subscriptions/{SUB}/providers/Microsoft.Security/pricings/KeyVaults"
    assert fake.requests_to("GET", r"/roleAssignments$")[0].param("$filter") == f"assignedTo('{IDENTITY}')"


def test_defender_free_and_a_missing_event_subscription_fail_with_their_fixes(fake: ArmFake) -> None:
    fake.onboarding.pricings[f"{SUB}/keyvaults"]["properties"] = {"pricingTier": "Free"}
    del fake.event_subscriptions[EVENT_SUBSCRIPTION.lower()]

    status, report = doctor()

    assert status == 1 and report["ok"] is False
    problems = failed(report)
    assert set(problems) == {"defender", "event subscription"}
    assert problems["defender"]["rule"] == "KV-DEF-01"
    assert "is Free, not Standard" in problems["defender"]["detail"]
    assert (f"az security pricing create --name KeyVaults --tier Standard --subplan PerKeyVault --subscription {SUB}"
            in problems["defender"]["fix"])
    assert "Security Admin" in problems["defender"]["fix"]
    assert problems["event subscription"]["detail"] == "the event subscription does not exist"
    assert problems["event subscription"]["fix"].startswith("azd provision")
    assert [r.method for r in fake.requests if r.method in ("PUT", "PATCH", "DELETE")] == []


def test_an_event_subscription_whose_filter_drops_operations_fails(fake: ArmFake) -> None:
    narrowed = event_subscription()
    narrowed["properties"]["filter"]["advancedFilters"][0]["values"] = ["Microsoft.KeyVault/vaults/write"]
    fake.event_subscriptions[EVENT_SUBSCRIPTION.lower()] = narrowed

    status, report = doctor()

    assert status == 1
    detail = failed(report)["event subscription"]["detail"]
    assert detail.startswith("operations not passed: Microsoft.KeyVault/vaults/accessPolicies/write")
    assert failed(report)["event subscription"]["rule"] == "KV-SELF-02"


def test_enable_defender_sets_standard_and_checks_again(fake: ArmFake) -> None:
    fake.onboarding.pricings[f"{SUB}/keyvaults"]["properties"] = {"pricingTier": "Free"}

    status, report = doctor("--enable-defender", "--yes")

    assert status == 0, failed(report)
    [put] = fake.requests_to("PUT", r"/providers/Microsoft\.Security/pricings/KeyVaults$")
    assert put.json["properties"] == {"pricingTier": "Standard", "subPlan": "PerKeyVault"}
    assert fake.onboarding.pricings[f"{SUB}/keyvaults"]["properties"]["pricingTier"] == "Standard"


def test_enable_defender_without_a_terminal_or_yes_changes_nothing(fake: ArmFake) -> None:
    fake.onboarding.pricings[f"{SUB}/keyvaults"]["properties"] = {"pricingTier": "Free"}

    status, _ = doctor("--enable-defender")

    assert status == 1
    assert fake.requests_to("PUT", r"/pricings/") == []


def test_a_vault_whose_audit_logs_go_nowhere_is_kv_log_02(fake: ArmFake) -> None:
    metrics_only = copy.deepcopy(AUDIT_SETTING)
    metrics_only["properties"]["logs"] = [{"categoryGroup": "audit", "enabled": False}]
    fake.onboarding.diagnostic_settings[VAULT.lower()] = [metrics_only]

    status, report = doctor()

    assert status == 1
    problem = failed(report)["audit logs"]
    assert problem["rule"] == "KV-LOG-02" and problem["resource"] == VAULT
    assert f"az monitor diagnostic-settings create --name kvguard-audit --resource {VAULT}" in problem["fix"]


def test_a_missing_remediator_role_names_what_kvguard_may_not_do(fake: ArmFake) -> None:
    fake.onboarding.role_assignments = fake.onboarding.role_assignments[:1]  # Reader only

    status, report = doctor()

    assert status == 1
    problem = failed(report)["role assignments"]
    assert "Microsoft.KeyVault/vaults/accessPolicies/write" in problem["detail"]
    assert "Microsoft.KeyVault/vaults/read" not in problem["detail"]  # Reader's */read covers it
    assert f"az role assignment create --assignee-object-id {IDENTITY}" in problem["fix"]


def test_the_table_names_each_failure_and_its_fix(fake: ArmFake) -> None:
    fake.onboarding.pricings[f"{SUB}/keyvaults"]["properties"] = {"pricingTier": "Free"}
    out = io.StringIO()

    status = main(["doctor", "--subscription", SUB], out, credential=FakeCredential())

    assert status == 1
    text = out.getvalue()
    assert "FAIL" in text and "KV-DEF-01" in text and "az security pricing create" in text
    assert "1 check(s) failed" in text


def test_the_help_documents_every_flag() -> None:
    out = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(out):
        main(["doctor", "--help"])
    for flag in ("--subscription", "--json", "--enable-defender", "--yes"):
        assert flag in out.getvalue()
    assert "Security Admin" in out.getvalue()


def test_a_refused_read_fails_its_check_and_the_others_still_run(fake: ArmFake) -> None:
    fake.inject("GET", r"/pricings/KeyVaults$", status=403, times=5,
                body={"error": {"code": "AuthorizationFailed", "message": "no Microsoft.Security/pricings/read"}})

    status, report = doctor()

    assert status == 1
    problem = failed(report)["defender"]
    assert "HTTP 403 AuthorizationFailed" in problem["detail"]
    assert '--role "Security Reader"' in problem["fix"]
    assert set(failed(report)) == {"defender"}  # the other checks ran and passed


def test_enable_defender_refused_for_lack_of_security_admin_is_a_failed_check(fake: ArmFake) -> None:
    fake.onboarding.pricings[f"{SUB}/keyvaults"]["properties"] = {"pricingTier": "Free"}
    fake.inject("PUT", r"/pricings/KeyVaults$", status=403,
                body={"error": {"code": "AuthorizationFailed", "message": "no Microsoft.Security/pricings/write"}})

    status, report = doctor("--enable-defender", "--yes")

    assert status == 1
    problem = failed(report)["defender"]
    assert "HTTP 403" in problem["detail"] and "Security Admin" in problem["fix"]


def stack_over_the_vault(mode: str, excluded: list[str] | None = None) -> dict[str, Any]:
    group = VAULT.split("/providers/")[0]
    return {"id": f"{group}/providers/Microsoft.Resources/deploymentStacks/billing", "name": "billing",
            "type": "Microsoft.Resources/deploymentStacks",
            "properties": {"denySettings": {"mode": mode, "excludedPrincipals": excluded or [], "excludedActions": [],
                                            "applyToChildScopes": False},
                           "resources": [{"id": VAULT, "status": "managed", "denyStatus": mode}]}}


def add_stack(fake: ArmFake, doc: dict[str, Any]) -> None:
    """Beside the vault, leaving the onboarding state's diagnostic settings as they are."""
    fake.resources[doc["id"].lower()] = doc


def test_a_deny_setting_that_blocks_a_handler_is_reported_with_what_it_blocks(fake: ArmFake) -> None:
    add_stack(fake, stack_over_the_vault("denyWriteAndDelete"))

    status, report = doctor()

    assert status == 1
    problem = failed(report)["deny settings"]
    assert problem["rule"] == "KV-DENY-01" and problem["resource"] == VAULT
    assert "/deploymentStacks/billing denies" in problem["detail"]
    assert "restore_network (Microsoft.KeyVault/vaults/write)" in problem["detail"]
    assert IDENTITY in problem["fix"] and "excludedPrincipals" in problem["fix"]
    assert fake.requests_to("GET", r"/resourceGroups/rg-[^/]+/providers/Microsoft\.Resources/deploymentStacks$")


def test_deny_settings_that_spare_kvguard_are_reported_as_covering(fake: ArmFake) -> None:
    add_stack(fake, stack_over_the_vault("denyWriteAndDelete", excluded=[IDENTITY]))

    status, report = doctor()

    assert status == 0, failed(report)
    (check,) = [c for c in report["checks"] if c["check"] == "deny settings"]
    assert check["ok"] and check["detail"].startswith("1 deny setting(s) cover the 1 vault(s)")


KEY_VAULT_DEFINITION = "/providers/Microsoft.Authorization/policyDefinitions/0b60c0b2-2dc2-4e1c-b5c9-abbed971de53"
STORAGE_DEFINITION = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/policyDefinitions/storage-https"


def policy_assignment(name: str, definition: str, enforcement: str = "Default",
                      not_scopes: tuple[str, ...] = ()) -> dict[str, Any]:
    scope = f"/subscriptions/{SUB}"
    return {"id": f"{scope}/providers/Microsoft.Authorization/policyAssignments/{name}", "name": name,
            "type": "Microsoft.Authorization/policyAssignments",
            "properties": {"policyDefinitionId": definition, "scope": scope, "notScopes": list(not_scopes),
                           "enforcementMode": enforcement}}


def policy_definition(definition_id: str, resource_type: str) -> dict[str, Any]:
    return {"id": definition_id, "name": definition_id.rsplit("/", 1)[-1],
            "type": "Microsoft.Authorization/policyDefinitions",
            "properties": {"mode": "Indexed", "policyRule": {"if": {"field": "type", "equals": resource_type},
                                                             "then": {"effect": "deny"}}}}


def test_the_policy_assignments_covering_each_vault_are_reported(fake: ArmFake) -> None:
    fake.add_policy(policy_definition(KEY_VAULT_DEFINITION, "Microsoft.KeyVault/vaults"))
    fake.add_policy(policy_definition(STORAGE_DEFINITION, "Microsoft.Storage/storageAccounts"))
    fake.add_policy(policy_assignment("kv-purge-protection", KEY_VAULT_DEFINITION))
    fake.add_policy(policy_assignment("storage-https", STORAGE_DEFINITION))

    status, report = doctor()

    assert status == 0, failed(report)
    (check,) = [c for c in report["checks"] if c["check"] == "policy assignments"]
    assert check["detail"] == "kv-web-01: Key Vault policy: kv-purge-protection (enforced); other: storage-https"
    assert check["resource"] == VAULT
    (listing,) = fake.requests_to("GET", r"/vaults/kv-web-01/providers/Microsoft\.Authorization/policyAssignments$")
    assert listing.param("$filter") == "atScope()"


def test_a_key_vault_policy_not_enforced_over_a_vault_fails_with_its_fix(fake: ArmFake) -> None:
    fake.add_policy(policy_definition(KEY_VAULT_DEFINITION, "Microsoft.KeyVault/vaults"))
    fake.add_policy(policy_assignment("kv-purge-protection", KEY_VAULT_DEFINITION, "DoNotEnforce"))

    status, report = doctor()

    assert status == 1
    check = failed(report)["policy assignments"]
    assert check["rule"] == "KV-POL-02"
    assert check["detail"] == "kv-web-01: Key Vault policy: kv-purge-protection not enforced (DoNotEnforce)"
    assert check["fix"] == (f"az policy assignment update --name kv-purge-protection --scope /subscriptions/{SUB} "
                            "--enforcement-mode Default")
