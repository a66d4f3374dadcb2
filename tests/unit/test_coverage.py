"""KV-DEF-01 and KV-LOG-02's judgements (detectors/coverage.py) and the doctor's checks built on
them (kvguard/doctor.py)."""

from __future__ import annotations

from typing import Any

import pytest

from detectors.coverage import audit_log_gap, defender_plan_gap
from kvguard import doctor

WORKSPACE = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/law"
STORAGE = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/starchive"


def setting(name: str = "audit", enabled: bool = True, **properties: Any) -> dict[str, Any]:
    logs = properties.pop("logs", [{"categoryGroup": "audit", "enabled": enabled}])
    return {"name": name, "properties": {"logs": logs, **properties}}


@pytest.mark.parametrize(("pricing", "gap"), [
    ({"properties": {"pricingTier": "Standard", "subPlan": "PerKeyVault"}}, False),
    ({"properties": {"pricingTier": "standard"}}, False),
    ({"properties": {"pricingTier": "Free"}}, True),
    ({"properties": {}}, True),
    (None, True),
])
def test_defender_plan_gap(pricing: dict[str, Any] | None, gap: bool) -> None:
    found = defender_plan_gap(pricing)
    assert (found is not None) is gap
    if found is not None:
        assert found["expected"] == "Standard"


@pytest.mark.parametrize(("settings", "gap"), [
    ([setting(workspaceId=WORKSPACE)], False),
    ([setting(logs=[{"category": "AuditEvent", "enabled": True}], storageAccountId=STORAGE)], False),
    ([setting(logs=[{"categoryGroup": "allLogs", "enabled": True}], eventHubAuthorizationRuleId="/x/rule")], False),
    ([setting(enabled=False, workspaceId=WORKSPACE)], True),  # disabled
    ([setting(logs=[{"category": "AzurePolicyEvaluationDetails", "enabled": True}], workspaceId=WORKSPACE)], True),
    ([setting()], True),  # audit on, but no destination
    ([], True),
])
def test_audit_log_gap(settings: list[dict[str, Any]], gap: bool) -> None:
    assert (audit_log_gap(settings) is not None) is gap


def test_audit_logs_to_a_destination_outside_the_allowed_list_are_a_gap() -> None:
    settings = [setting(workspaceId=WORKSPACE)]
    assert audit_log_gap(settings, [WORKSPACE.upper()]) is None
    found = audit_log_gap(settings, [STORAGE])
    assert found is not None and "allowed destination" in found["found"]


def test_granted_reads_wildcards_and_not_actions() -> None:
    reader = {"properties": {"permissions": [{"actions": ["*/read"], "notActions": []}]}}
    narrowed = {"properties": {"permissions": [{"actions": ["Microsoft.KeyVault/*"],
                                                 "notActions": ["Microsoft.KeyVault/vaults/accessPolicies/*"]}]}}
    assert doctor.granted(reader, "Microsoft.KeyVault/vaults/read")
    assert not doctor.granted(reader, "Microsoft.KeyVault/vaults/write")
    assert doctor.granted(narrowed, "Microsoft.KeyVault/vaults/write")
    assert not doctor.granted(narrowed, "Microsoft.KeyVault/vaults/accessPolicies/write")


def test_needed_actions_hold_the_reads_the_handlers_and_the_defender_sink_only_when_on() -> None:
    handlers = ["Microsoft.KeyVault/vaults/write", "none (outbound HTTPS to the configured webhook)"]
    assert doctor.needed_actions(handlers, defender=False) == [
        "Microsoft.EventGrid/systemTopics/eventSubscriptions/read", "Microsoft.KeyVault/vaults/read",
        "Microsoft.KeyVault/vaults/write"]
    assert doctor.ASSESSMENT_WRITE in doctor.needed_actions(handlers, defender=True)


def test_own_event_subscriptions_are_the_ones_in_the_subscription() -> None:
    mine = "/subscriptions/AA/resourceGroups/rg/providers/Microsoft.EventGrid/systemTopics/t/eventSubscriptions/e"
    other = mine.replace("/AA/", "/bb/")
    app = "/subscriptions/aa/resourceGroups/rg/providers/Microsoft.Web/sites/func"
    assert doctor.own_event_subscriptions("aa", [mine, other, app]) == [mine]


def test_no_identity_configured_fails_the_role_check() -> None:
    check = doctor.role_check("s", [], [], ["Microsoft.KeyVault/vaults/read"])
    assert not check.ok and "KVGUARD_OWN_PRINCIPAL_IDS" in check.detail
