"""`kvguard baseline` and `kvguard replay --live` against the local HTTPS ARM fake, with the
settings taken from the environment as in production and the state in SQLite."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.cli import main
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake, cli_environment

SUB = "4a3b2c1d-0e9f-4876-a5b4-c3d2e1f0a9b8"
OTHER_SUB = "9f8e7d6c-5b4a-4392-8170-f6e5d4c3b2a1"
TENANT = "1a2b3c4d-5e6f-4a7b-8c9d-e0f1a2b3c4d5"
OWNER = "5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f"
ROGUE = "e9d8c7b6-a5f4-4e3d-9c2b-1a0f9e8d7c6b"
INTRUDER = "2f3e4d5c-6b7a-4897-a6b5-c4d3e2f1a0b9"
NAMES = ("kv-web-01", "kv-web-02", "kv-batch-01")


def vault_id(name: str, subscription: str = SUB) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/rg-apps/providers/Microsoft.KeyVault/vaults/{name}"


def vault_doc(vid: str, *extra_policies: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": vid,
        "name": vid.rsplit("/", 1)[-1],
        "type": "Microsoft.KeyVault/vaults",
        "location": "uksouth",
        "properties": {
            "tenantId": TENANT,
            "sku": {"family": "A", "name": "standard"},
            "accessPolicies": [
                {"tenantId": TENANT, "objectId": OWNER, "permissions": {"secrets": ["Get"]}}, *extra_policies
            ],
            "enableRbacAuthorization": False,
            "enableSoftDelete": True,
            "softDeleteRetentionInDays": 90,
            "enablePurgeProtection": True,
            "publicNetworkAccess": "Disabled",
            "networkAcls": {"defaultAction": "Deny", "bypass": "None", "ipRules": []},
        },
    }


ROGUE_GRANT = {"tenantId": TENANT, "objectId": ROGUE, "permissions": {"secrets": ["Get", "List"]}}
TARGET = vault_id("kv-web-01")
WRITES = ("PUT", "PATCH", "POST", "DELETE")


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake(page_size=2) as running:
        for name in NAMES:
            running.add_vault(vault_doc(vault_id(name)))
        running.add_vault(vault_doc(vault_id("kv-elsewhere", OTHER_SUB)))
        yield running


@pytest.fixture
def state_db(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return cli_environment(fake, tmp_path, monkeypatch)


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out, credential=FakeCredential())
    return status, out.getvalue()


def policies(baseline_config: Any) -> list[str]:
    return [p["objectId"] for p in baseline_config["properties"]["accessPolicies"]]


# ---- baseline ------------------------------------------------------------------------------------


def test_baseline_seeds_every_vault_of_the_subscriptions(fake: ArmFake, state_db: Path) -> None:
    status, output = run("baseline", "--subscription", SUB, "--subscription", OTHER_SUB)

    assert status == 0
    assert "4 vaults in 2 subscription(s): 4 baseline(s) seeded, 0 already present" in output
    store = SQLiteStateStore(str(state_db))
    assert sorted(b.vault_id for b in store.list_baselines()) == sorted(
        [vault_id(n) for n in NAMES] + [vault_id("kv-elsewhere", OTHER_SUB)]
    )
    assert len(fake.requests_to("GET", rf"/subscriptions/{SUB}/providers/Microsoft\.KeyVault/vaults$")) == 2  # paged
    assert [r.method for r in fake.requests if r.method in WRITES] == []


def test_baseline_seeds_each_vaults_perimeter_configuration_and_own_event_subscriptions(
        fake: ArmFake, state_db: Path) -> None:
    """What maps a perimeter's access rules to the vault later (no perimeter is listed), and what a
    later delete of the vault's own event subscription is judged against."""
    configuration = fake.add_resource({
        "id": f"{TARGET}/networkSecurityPerimeterConfigurations/0f1e2d3c-4b5a-4697-8877-a6b5c4d3e2f1.assoc",
        "name": "0f1e2d3c-4b5a-4697-8877-a6b5c4d3e2f1.assoc",
        "type": "Microsoft.KeyVault/vaults/networkSecurityPerimeterConfigurations",
        "properties": {"networkSecurityPerimeter": {"id": f"/subscriptions/{SUB}/resourceGroups/rg-net/providers/"
                                                          "Microsoft.Network/networkSecurityPerimeters/nsp"},
                       "resourceAssociation": {"name": "assoc", "accessMode": "Enforced"},
                       "profile": {"name": "default", "accessRules": []}}})
    feed = fake.add_resource({
        "id": f"{TARGET}/providers/Microsoft.EventGrid/eventSubscriptions/inventory", "name": "inventory",
        "type": "Microsoft.EventGrid/eventSubscriptions",
        "properties": {"destination": {"endpointType": "WebHook",
                                       "properties": {"endpointBaseUrl": "https://hooks.example.org/kv"}}}})

    assert run("baseline", "--subscription", SUB)[0] == 0

    store = SQLiteStateStore(str(state_db))
    seeded = store.get_baseline(configuration["id"])
    assert seeded is not None and seeded.config == configuration
    own_feed = store.get_baseline(feed["id"])
    assert own_feed is not None and own_feed.config == feed
    assert [r.method for r in fake.requests if r.method in WRITES] == []


def test_baseline_leaves_existing_baselines_alone(fake: ArmFake, state_db: Path) -> None:
    assert run("baseline", "--subscription", SUB)[0] == 0
    fake.add_vault(vault_doc(TARGET, copy.deepcopy(ROGUE_GRANT)))  # a change since
    fake.add_vault(vault_doc(vault_id("kv-new-01")))

    status, output = run("baseline", "--subscription", SUB)

    assert status == 0
    assert "1 baseline(s) seeded, 3 already present" in output
    store = SQLiteStateStore(str(state_db))
    target = store.get_baseline(TARGET)
    assert target is not None and policies(target.config) == [OWNER]  # the accepted state, not the change
    assert store.get_baseline(vault_id("kv-new-01")) is not None


def test_baseline_reports_an_unreachable_arm(fake: ArmFake, state_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake.inject("GET", r"/providers/Microsoft\.KeyVault/vaults$", status=503, times=20,
                body={"error": {"code": "ServiceUnavailable", "message": "later"}})

    status, _ = run("baseline", "--subscription", SUB)

    assert status == 1
    assert "HTTP 503" in capsys.readouterr().err
    assert SQLiteStateStore(str(state_db)).list_baselines() == []


# ---- replay --live -------------------------------------------------------------------------------


def scenario(tmp_path: Path) -> Path:
    uri = f"{TARGET}/accessPolicies/add"
    event = {
        "id": "c1b2a3f4-e5d6-4c7b-8a9f-0e1d2c3b4a59",
        "topic": f"/subscriptions/{SUB}",
        "subject": uri,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-27T12:00:00Z",
        "dataVersion": "2",
        "data": {
            "authorization": {"scope": uri, "action": "Microsoft.KeyVault/vaults/accessPolicies/write",
                              "evidence": {"principalId": INTRUDER}},
            "claims": {"oid": INTRUDER},
            "resourceUri": uri,
            "operationName": "Microsoft.KeyVault/vaults/accessPolicies/write",
            "status": "Succeeded",
            "subscriptionId": SUB,
            "tenantId": TENANT,
        },
    }
    doc = {
        "name": "rogue grant on kv-web-01",
        "policy": {"mode": "remediate"},
        "steps": [{"write": vault_doc(TARGET, ROGUE_GRANT)}, {"advance": "PT1M"}, {"event": event}],
    }
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.fixture
def tampered(fake: ArmFake, state_db: Path, monkeypatch: pytest.MonkeyPatch) -> ArmFake:
    """Baselines seeded by the CLI, then a rogue grant on one vault behind kvguard's back.
    Defender findings are on, as in production."""
    monkeypatch.setenv("KVGUARD_DEFENDER", "true")
    for name in NAMES:  # audit logs flowing and the Defender plan on: the baseline's sweep is quiet
        fake.add_resource(audit_setting(vault_id(name)))
    fake.add_resource(PLAN_ON)
    assert run("baseline", "--subscription", SUB)[0] == 0
    fake.add_vault(vault_doc(TARGET, copy.deepcopy(ROGUE_GRANT)))
    fake.requests.clear()
    return fake


PLAN_ON = {"id": f"/subscriptions/{SUB}/providers/Microsoft.Security/pricings/KeyVaults", "name": "KeyVaults",
           "type": "Microsoft.Security/pricings", "properties": {"pricingTier": "Standard", "subPlan": "PerKeyVault"}}


def audit_setting(vid: str) -> dict[str, Any]:
    return {"id": f"{vid}/providers/Microsoft.Insights/diagnosticSettings/audit", "name": "audit",
            "type": "Microsoft.Insights/diagnosticSettings",
            "properties": {"workspaceId": f"/subscriptions/{SUB}/resourceGroups/rg-soc/providers/"
                                          "Microsoft.OperationalInsights/workspaces/law",
                           "logs": [{"categoryGroup": "audit", "enabled": True}]}}


def lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_replay_live_without_apply_plans_and_writes_nothing(
    tampered: ArmFake, state_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, output = run("replay", "--live", str(scenario(tmp_path)), "--json")

    assert status == 0
    (outcome, summary) = lines(output)
    assert outcome["outcome"] == "processed"
    assert "KV-AP-01" in {f["rule"] for f in outcome["findings"]}
    (revert,) = [a for a in outcome["actions"] if a["handler"] == "revert_access_policy"]
    assert revert["status"] == "planned"
    assert summary["mode"] == "dry run"
    assert summary["summary"]["events"] == 1
    # Nothing written: not to ARM, not to an alert sink, not to the state store.
    assert [r.method for r in tampered.requests if r.method in WRITES] == []
    assert tampered.requests_to("GET", r"/vaults/kv-web-01$")
    assert ROGUE in [p["objectId"] for p in tampered.vault(TARGET)["properties"]["accessPolicies"]]
    store = SQLiteStateStore(str(state_db))
    target = store.get_baseline(TARGET)
    assert target is not None and policies(target.config) == [OWNER]
    assert store.list_audit() == []
    err = capsys.readouterr().err
    assert "step 1 (write) ignored" in err and "step 2 (advance) ignored" in err


def test_replay_live_with_apply_removes_the_grant(tampered: ArmFake, state_db: Path, tmp_path: Path) -> None:
    status, output = run("replay", "--live", str(scenario(tmp_path)), "--apply", "--json")

    assert status == 0
    (outcome, summary) = lines(output)
    (revert,) = [a for a in outcome["actions"] if a["handler"] == "revert_access_policy"]
    assert revert["status"] == "applied"
    assert summary["mode"] == "apply"
    assert tampered.requests_to("PUT", r"/vaults/kv-web-01/providers/Microsoft\.Security/assessments/")
    (remove,) = tampered.requests_to("PUT", r"/vaults/kv-web-01/accessPolicies/remove$")
    assert [e["objectId"] for e in remove.json["properties"]["accessPolicies"]] == [ROGUE]
    assert [p["objectId"] for p in tampered.vault(TARGET)["properties"]["accessPolicies"]] == [OWNER]
    assert [r.event_id for r in SQLiteStateStore(str(state_db)).list_audit(TARGET)] == [outcome["event_id"]]


def test_replay_live_readable_report(tampered: ArmFake, state_db: Path, tmp_path: Path) -> None:
    status, output = run("replay", "--live", str(scenario(tmp_path)))

    assert status == 0
    assert "live replay (dry run)" in output
    assert "revert_access_policy: planned" in output
    assert [r.method for r in tampered.requests if r.method in WRITES] == []


def test_baseline_seeds_the_resources_beside_the_vaults_and_sweeps(fake: ArmFake, state_db: Path) -> None:
    setting = {
        "id": f"{TARGET}/providers/Microsoft.Insights/diagnosticSettings/audit", "name": "audit",
        "type": "Microsoft.Insights/diagnosticSettings",
        "properties": {"storageAccountId": f"/subscriptions/{SUB}/resourceGroups/rg-logs/providers/"
                                           "Microsoft.Storage/storageAccounts/stlogs",
                       "logs": [{"categoryGroup": "allLogs", "enabled": True}]},
    }
    plan = {"id": f"/subscriptions/{SUB}/providers/Microsoft.Security/pricings/KeyVaults", "name": "KeyVaults",
            "type": "Microsoft.Security/pricings", "properties": {"pricingTier": "Free"}}
    group_lock = {"id": f"/subscriptions/{SUB}/resourceGroups/rg-apps/providers/Microsoft.Authorization/locks/keep",
                  "name": "keep", "type": "Microsoft.Authorization/locks", "properties": {"level": "CanNotDelete"}}
    for doc in (setting, plan, group_lock):
        fake.add_resource(doc)

    status, output = run("baseline", "--subscription", SUB)

    assert status == 0
    assert "3 resource baseline(s) seeded beside the vaults" in output
    store = SQLiteStateStore(str(state_db))
    for doc in (setting, plan, group_lock):
        assert store.get_baseline(doc["id"]) is not None
    # every vault's plan is off; only kv-web-01 sends its audit logs somewhere
    assert output.count("KV-DEF-01") == 3 and output.count("KV-LOG-02") == 2
    assert [r.method for r in fake.requests if r.method in WRITES] == []  # no alert sink configured


def test_baseline_seeds_the_role_assignments_covering_the_vaults_once(fake: ArmFake, state_db: Path) -> None:
    role = (f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"
            "4633458b-17de-408a-b874-0445c86b69e6")
    on_vault = (f"{vault_id(NAMES[0])}/providers/Microsoft.Authorization/roleAssignments/"
                "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")
    on_subscription = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/" \
                      "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e"
    for assignment_id in (on_vault, on_subscription):
        fake.add_authorization({"id": assignment_id, "name": assignment_id.rsplit("/", 1)[-1],
                                "type": "Microsoft.Authorization/roleAssignments",
                                "properties": {"roleDefinitionId": role, "principalId": "p",
                                               "scope": assignment_id.split("/providers/Microsoft.Authorization")[0]}})

    status, output = run("baseline", "--subscription", SUB)

    assert status == 0
    assert "2 resource baseline(s) seeded beside the vaults" in output  # the subscription's one once, for all vaults
    store = SQLiteStateStore(str(state_db))
    seeded = store.get_baseline(on_subscription)
    assert seeded is not None and seeded.config["properties"]["principalId"] == "p"
    assert store.get_baseline(on_vault) is not None
    assert [r.method for r in fake.requests if r.method in WRITES] == []


def test_baseline_seeds_the_deny_settings_and_eligibility_requests_over_the_vaults(
        fake: ArmFake, state_db: Path) -> None:
    """The deny assignment on the vaults' resource group, the stack managing one vault and the
    eligibility request on one vault are seeded (each once), so a later change to any of them is a
    diff against what was there, and the first sight is no finding."""
    group = f"/subscriptions/{SUB}/resourceGroups/rg-apps"
    deny = {"id": f"{group}/providers/Microsoft.Authorization/denyAssignments/5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b",
            "name": "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b", "type": "Microsoft.Authorization/denyAssignments",
            "properties": {"scope": group, "permissions": [{"actions": ["*/delete"], "notActions": []}],
                           "principals": [{"id": "00000000-0000-0000-0000-000000000000", "type": "SystemDefined"}],
                           "excludePrincipals": [], "doNotApplyToChildScopes": False}}
    stack = {"id": f"{group}/providers/Microsoft.Resources/deploymentStacks/apps", "name": "apps",
             "type": "Microsoft.Resources/deploymentStacks",
             "properties": {"denySettings": {"mode": "denyDelete", "excludedPrincipals": [], "excludedActions": []},
                            "resources": [{"id": TARGET, "status": "managed", "denyStatus": "denyDelete"}]}}
    request = {"id": f"{TARGET}/providers/Microsoft.Authorization/roleEligibilityScheduleRequests/"
                     "6f7a8b9c-0d1e-4f2a-9b3c-4d5e6f7a8b9c",
               "name": "6f7a8b9c-0d1e-4f2a-9b3c-4d5e6f7a8b9c",
               "type": "Microsoft.Authorization/roleEligibilityScheduleRequests",
               "properties": {"scope": TARGET, "principalId": ROGUE, "requestType": "AdminAssign",
                              "status": "Provisioned",
                              "roleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/"
                                                  "roleDefinitions/4633458b-17de-408a-b874-0445c86b69e6"}}
    for doc in (deny, stack, request):
        fake.add_resource(doc)

    status, output = run("baseline", "--subscription", SUB)

    assert status == 0
    assert "3 resource baseline(s) seeded beside the vaults" in output
    store = SQLiteStateStore(str(state_db))
    for doc in (deny, stack, request):
        seeded = store.get_baseline(doc["id"])
        assert seeded is not None and seeded.config["properties"] == doc["properties"], doc["id"]
    assert "KV-DENY-01" not in output and "KV-PIM-01" not in output


def test_baseline_seeds_the_policy_exemptions_and_assignments_over_the_vaults_once(
        fake: ArmFake, state_db: Path) -> None:
    assignment_id = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/policyAssignments/kv-purge-protection"
    exemption_id = f"/subscriptions/{SUB}/resourceGroups/rg-apps/providers/Microsoft.Authorization/" \
                   "policyExemptions/migration"
    fake.add_policy({"id": assignment_id, "name": "kv-purge-protection",
                     "type": "Microsoft.Authorization/policyAssignments",
                     "properties": {"policyDefinitionId": "/providers/Microsoft.Authorization/policyDefinitions/"
                                                          "0b60c0b2-2dc2-4e1c-b5c9-abbed971de53",
                                    "scope": f"/subscriptions/{SUB}", "notScopes": [],
                                    "enforcementMode": "Default"}})
    fake.add_policy({"id": exemption_id, "name": "migration", "type": "Microsoft.Authorization/policyExemptions",
                     "properties": {"policyAssignmentId": assignment_id, "exemptionCategory": "Mitigated",
                                    "expiresOn": "2026-12-31T00:00:00Z"}})

    status, output = run("baseline", "--subscription", SUB)

    assert status == 0
    assert "2 resource baseline(s) seeded beside the vaults" in output  # each once, for every vault it covers
    store = SQLiteStateStore(str(state_db))
    assignment = store.get_baseline(assignment_id)
    assert assignment is not None and assignment.config["properties"]["enforcementMode"] == "Default"
    exemption = store.get_baseline(exemption_id)
    assert exemption is not None and exemption.config["properties"]["policyAssignmentId"] == assignment_id
    assert [r.method for r in fake.requests if r.method in WRITES] == []
