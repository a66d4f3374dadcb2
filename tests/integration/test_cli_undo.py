"""`kvguard undo` against the local HTTPS ARM fake: a revert that kvguard recorded is put back
exactly (dry run first), becomes the baseline, is audited, and a second undo finds nothing to do."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kvguard import runtime
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.cli import main
from kvguard.outcome import Outcome
from kvguard.ports import AuditRecord
from kvguard.settings import Settings
from kvguard.vault import VaultConfig
from tests.e2e.test_function_app import INTRUDER, OWNER, ROGUE, ROGUE_GRANT, VAULT_ID, event_json, vault_doc
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake, cli_environment

WRITES = r"/accessPolicies/|/vaults/[^/]+$"


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        running.add_vault(vault_doc())
        yield running


@pytest.fixture
def state_db(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return cli_environment(fake, tmp_path, monkeypatch, mode="remediate")


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out, credential=FakeCredential())
    return status, out.getvalue()


def reverted(fake: ArmFake, state_db: Path) -> Outcome:
    """kvguard (remediate mode) sees the rogue grant and removes it; its audit is in the SQLite file."""
    pipeline = runtime.build(Settings(), credential=FakeCredential())
    pipeline.store.put_baseline(VAULT_ID, vault_doc(), None)
    fake.add_vault(vault_doc(ROGUE_GRANT))
    [outcome] = pipeline.handle(event_json("evt-undo-1", INTRUDER))
    assert {a.handler: a.status for a in outcome.actions}["revert_access_policy"] == "applied"
    return outcome


def principals(fake: ArmFake) -> dict[str, dict[str, list[str]]]:
    return {p["objectId"]: p["permissions"] for p in fake.vault(VAULT_ID)["properties"]["accessPolicies"]}


def test_a_dry_run_says_what_it_would_put_back_and_writes_nothing(fake: ArmFake, state_db: Path) -> None:
    reverted(fake, state_db)
    writes_before = len(fake.requests_to("PUT", WRITES)) + len(fake.requests_to("PATCH", WRITES))
    code, out = run("undo", "evt-undo-1")
    assert code == 0
    assert f"would put back: add back secrets:get,list for {ROGUE}" in out and "dry run" in out
    assert ROGUE not in principals(fake)
    assert len(fake.requests_to("PUT", WRITES)) + len(fake.requests_to("PATCH", WRITES)) == writes_before


def test_apply_puts_back_exactly_what_was_removed_and_accepts_it(fake: ArmFake, state_db: Path) -> None:
    reverted(fake, state_db)
    code, out = run("undo", "evt-undo-1", "--apply")
    assert code == 0, out
    assert principals(fake)[ROGUE] == {"secrets": ["get", "list"]}
    assert set(principals(fake)) == {OWNER, ROGUE}
    [add] = fake.requests_to("PUT", r"/accessPolicies/add$")
    assert add.json["properties"]["accessPolicies"][0]["permissions"] == {"secrets": ["get", "list"]}
    store = SQLiteStateStore(state_db)
    baseline = store.get_baseline(VAULT_ID)
    assert baseline is not None
    assert VaultConfig.from_arm(baseline.config).policy_for(f"{ROGUE}|") is not None
    [undo] = [r for r in store.list_audit() if r.event_id == "undo:evt-undo-1:revert_access_policy"]
    assert undo.outcome["actions"][0]["status"] == "applied"

    code, out = run("undo", "evt-undo-1", "--apply")
    assert code == 0 and "nothing to put back" in out
    assert len(fake.requests_to("PUT", r"/accessPolicies/add$")) == 1


def test_an_unknown_record_or_one_without_remediation_is_refused(fake: ArmFake, state_db: Path) -> None:
    reverted(fake, state_db)
    code, out = run("undo", "evt-nope", "--apply")
    assert code == 2 and "no audit record with id 'evt-nope'" in out
    code, out = run("undo", "evt-undo-1", "--handler", "restore_network")
    assert code == 2 and "no applied remediation by restore_network" in out


# ---- a role assignment remove_role_assignment deleted -------------------------------------------

CONDITION = "@Resource[Microsoft.KeyVault/vaults/secrets:name] StringEquals 'orders-db'"


def removed_grant(fake: ArmFake) -> Outcome:
    """An RBAC vault; a conditioned Secrets User grant arrives and kvguard (remediate) deletes it."""
    from tests.e2e.test_function_app_rbac import (
        ASSIGNMENT_ID,
        GRANTEE,
        SECRETS_USER,
        rbac_vault,
        role_event,
    )

    fake.add_vault(rbac_vault())
    pipeline = runtime.build(Settings(), credential=FakeCredential())
    pipeline.store.put_baseline(VAULT_ID, rbac_vault(), None)
    fake.add_authorization({
        "id": ASSIGNMENT_ID, "name": ASSIGNMENT_ID.rsplit("/", 1)[-1],
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {"roleDefinitionId": SECRETS_USER, "principalId": GRANTEE, "principalType": "User",
                       "scope": VAULT_ID, "condition": CONDITION, "conditionVersion": "2.0"},
    })
    [outcome] = pipeline.handle(role_event("evt-undo-role", INTRUDER, "Microsoft.Authorization/roleAssignments/write",
                                           "Microsoft.Resources.ResourceWriteSuccess"))
    assert {a.handler: a.status for a in outcome.actions}["remove_role_assignment"] == "applied"
    assert fake.authorization_resource(ASSIGNMENT_ID) is None
    return outcome


def test_undo_of_a_removed_role_assignment_puts_it_back_and_never_writes_the_vault(
    fake: ArmFake, state_db: Path
) -> None:
    from tests.e2e.test_function_app_rbac import ASSIGNMENT_ID, GRANTEE, SECRETS_USER

    removed_grant(fake)
    code, out = run("undo", "evt-undo-role")
    assert code == 0 and "would put back: re-create role assignment 2c3d4e5f-" in out and "with its condition" in out
    assert fake.authorization_resource(ASSIGNMENT_ID) is None

    code, out = run("undo", "evt-undo-role", "--apply")

    assert code == 0, out
    (put,) = fake.requests_to("PUT", r"/roleAssignments/2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f$")
    assert put.json == {"properties": {"roleDefinitionId": SECRETS_USER, "principalId": GRANTEE,
                                       "principalType": "User", "condition": CONDITION, "conditionVersion": "2.0"}}
    assert fake.requests_to("PATCH", r"/vaults/[^/]+$") == [] and fake.requests_to("PUT", WRITES) == []
    back = fake.authorization_resource(ASSIGNMENT_ID)
    assert back is not None and back["properties"]["scope"].lower() == VAULT_ID.lower()
    store = SQLiteStateStore(state_db)
    baseline = store.get_baseline(ASSIGNMENT_ID)
    assert baseline is not None and baseline.config["properties"]["principalId"] == GRANTEE
    assert [r.event_id for r in store.list_audit() if r.event_id.startswith("undo:")] == [
        "undo:evt-undo-role:remove_role_assignment"]
    code, out = run("undo", "evt-undo-role", "--apply")
    assert code == 0 and "nothing to put back" in out
    assert len(fake.requests_to("PUT", r"/roleAssignments/")) == 1


def test_undo_refuses_a_remediation_of_another_resource_it_cannot_put_back(fake: ArmFake, state_db: Path) -> None:
    state_db.parent.mkdir(parents=True, exist_ok=True)
    store = SQLiteStateStore(state_db)
    setting = f"{VAULT_ID}/providers/Microsoft.Insights/diagnosticSettings/audit"
    store.append_audit(AuditRecord("evt-undo-log", VAULT_ID, datetime.now(UTC), {"actions": [
        {"handler": "restore_diagnostic_setting", "status": "applied", "detail": "", "rules": ["KV-LOG-01"],
         "before": [{"id": setting, "properties": {"logs": []}}], "after": [{"id": setting}]}]}))

    code, out = run("undo", "evt-undo-log", "--apply")

    assert code == 2
    assert out == ("kvguard undo: restore_diagnostic_setting changed a resource beside the vault; kvguard undo "
                   "cannot put it back faithfully from the record: restore it by hand from the audit record's "
                   "before\n")
    assert fake.requests_to("PATCH", r"/vaults/") == [] and fake.requests_to("PUT", r"/diagnosticSettings/") == []
