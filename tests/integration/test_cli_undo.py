"""`kvguard undo` against the local HTTPS ARM fake: a revert that kvguard recorded is put back
exactly (dry run first), becomes the baseline, is audited, and a second undo finds nothing to do."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvguard import runtime
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.cli import main
from kvguard.outcome import Outcome
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
