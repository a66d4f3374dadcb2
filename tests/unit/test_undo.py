"""Planning `kvguard undo`: what a remediation took away, minus what the vault has again."""

from __future__ import annotations

from typing import Any

import pytest

from kvguard.ports import AuditRecord
from kvguard.undo import UndoError, plan_undo, recorded_action
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
