"""Planning `kvguard undo`: what a remediation took away, minus what the vault has again."""

from __future__ import annotations

from typing import Any

import pytest

from kvguard.ports import AuditRecord
from kvguard.undo import (
    UndoError,
    plan_role_assignment_undo,
    plan_undo,
    recorded_action,
    undoes_role_assignment,
)
from kvguard.vault import VaultConfig
from tests.unit.test_pipeline import VAULT_ID, acls, vault

OPEN = {"publicNetworkAccess": "Enabled", "networkAcls": acls(default_action="Allow")}
CLOSED = {"publicNetworkAccess": "Disabled", "networkAcls": acls(default_action="Deny")}


def restore_network(before: dict[str, Any]) -> dict[str, Any]:
    return {"handler": "restore_network", "status": "applied", "detail": "", "rules": ["KV-NET-01"],
            "before": [before], "after": [CLOSED]}


def test_a_restore_is_undone_by_patching_the_values_it_replaced() -> None:
    [step] = plan_undo(VAULT_ID, restore_network(OPEN), VaultConfig.from_arm(vault(**CLOSED)))
    assert step.kind == "patch" and step.target == OPEN


def test_nothing_to_put_back_when_the_vault_is_already_as_before() -> None:
    assert plan_undo(VAULT_ID, restore_network(OPEN), VaultConfig.from_arm(vault(**OPEN))) == []


def test_purge_protection_and_a_vanished_vault_cannot_be_undone() -> None:
    action = {"handler": "enable_purge_protection", "status": "applied", "before": [{"enablePurgeProtection": None}]}
    with pytest.raises(UndoError, match="cannot be undone"):
        plan_undo(VAULT_ID, action, VaultConfig.from_arm(vault()))
    with pytest.raises(UndoError, match="does not exist any more"):
        plan_undo(VAULT_ID, restore_network(OPEN), None)


def test_a_record_with_several_remediations_needs_a_handler() -> None:
    actions = [restore_network(OPEN), {**restore_network(OPEN), "handler": "restore_settings"},
               {"handler": "raise_defender_alert", "status": "applied"}]
    records = [AuditRecord("evt-1", VAULT_ID, None, {"actions": actions})]  # type: ignore[arg-type]
    with pytest.raises(UndoError, match=r"several applied remediations \(restore_network, restore_settings\)"):
        recorded_action(records, "evt-1", None)
    _, action = recorded_action(records, "evt-1", "restore_settings")
    assert action["handler"] == "restore_settings"
    with pytest.raises(UndoError, match="no applied remediation by raise_defender_alert"):
        recorded_action(records, "evt-1", "raise_defender_alert")


ASSIGNMENT = f"{VAULT_ID}/providers/Microsoft.Authorization/roleAssignments/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
SECRETS_USER = "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/4633458b-17de-408a-b874-0445c86b69e6"


def removed(**properties: Any) -> dict[str, Any]:
    recorded = {"roleDefinitionId": SECRETS_USER, "principalId": "p-1", "principalType": "User", "scope": VAULT_ID,
                **properties}
    return {"handler": "remove_role_assignment", "status": "applied", "rules": ["KV-RBAC-01"],
            "before": [{"id": ASSIGNMENT, "type": "Microsoft.Authorization/roleAssignments",
                        "properties": {k: v for k, v in recorded.items() if v is not None}}], "after": [None]}


def test_a_removed_role_assignment_is_put_back_by_id_never_by_writing_the_vault() -> None:
    action = removed(condition="@Resource[x] StringEquals 'y'", conditionVersion="2.0")
    [step] = plan_role_assignment_undo(action, None)
    assert (step.kind, step.vault_id) == ("create_role_assignment", ASSIGNMENT)
    assert step.target == {"roleDefinitionId": SECRETS_USER, "principalId": "p-1", "principalType": "User",
                           "condition": "@Resource[x] StringEquals 'y'", "conditionVersion": "2.0"}
    with pytest.raises(UndoError, match="never by writing the vault"):
        plan_undo(VAULT_ID, action, VaultConfig.from_arm(vault()))


def test_a_role_assignment_back_as_it_was_needs_nothing_and_one_reused_is_left_alone() -> None:
    current = {"id": ASSIGNMENT, "properties": {"roleDefinitionId": SECRETS_USER.upper(), "principalId": "p-1",
                                                "scope": VAULT_ID.lower()}}
    assert plan_role_assignment_undo(removed(), current) == []
    other = {**current, "properties": {**current["properties"], "principalId": "p-2"}}
    with pytest.raises(UndoError, match="exists with another principal"):
        plan_role_assignment_undo(removed(), other)


@pytest.mark.parametrize(("action", "field"), [
    (removed(scope=None), r"before\[0\]\.properties\.scope"),
    (removed(principalId=None), r"before\[0\]\.properties\.principalId"),
    (removed(scope="/subscriptions/other"), r"does not lie at its scope"),
    ({"handler": "remove_role_assignment", "before": []}, r"before\[0\]\.id"),
])
def test_a_record_missing_what_a_faithful_put_back_needs_is_refused_naming_the_field(
    action: dict[str, Any], field: str
) -> None:
    with pytest.raises(UndoError, match=field):
        plan_role_assignment_undo(action, None)


@pytest.mark.parametrize("handler", ["restore_diagnostic_setting", "reject_private_endpoint", "restore_lock",
                                     "restore_defender_plan"])
def test_the_remediations_of_other_resources_are_refused(handler: str) -> None:
    with pytest.raises(UndoError, match="cannot put it back faithfully"):
        undoes_role_assignment({"handler": handler})
