"""`kvguard backfill` against the HTTPS ARM fake: the real azure-mgmt-monitor client pages through
the Activity Log, and the records go through the live pipeline oldest first."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kvguard.activity import WATCHED_PROVIDERS
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.cli import main
from tests.activity_records import (
    FOREIGN_TENANT,
    INTRUDER,
    SECRETS_USER,
    SUB,
    TENANT,
    VAULT,
    record,
    role_assignment_records,
)
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake, cli_environment

OWNER = "5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f"
OTHER = VAULT.replace("kv-web-01", "kv-web-02")
ROGUE = {"tenantId": TENANT, "objectId": INTRUDER, "permissions": {"secrets": ["get", "list"]}}
WRITES = ("PUT", "PATCH", "POST", "DELETE")


def arm_writes(fake: ArmFake) -> list[str]:
    """Every write to ARM (the webhook's POSTs are alerts, not writes to Azure)."""
    return [f"{r.method} {r.path}" for r in fake.requests if r.method in WRITES and not r.path.startswith("/webhook")]


def vault_doc(vault_id: str, *extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": vault_id, "name": vault_id.rsplit("/", 1)[-1], "type": "Microsoft.KeyVault/vaults",
        "location": "uksouth",
        "properties": {
            "tenantId": TENANT, "sku": {"family": "A", "name": "standard"},
            "accessPolicies": [{"tenantId": TENANT, "objectId": OWNER, "permissions": {"secrets": ["get"]}}, *extra],
            "enableRbacAuthorization": False, "enableSoftDelete": True, "softDeleteRetentionInDays": 90,
            "enablePurgeProtection": True, "publicNetworkAccess": "Disabled",
            "networkAcls": {"defaultAction": "Deny", "bypass": "None", "ipRules": []},
        },
    }


def ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def history() -> list[dict[str, Any]]:
    """Five records of routine writes to another vault (pages 1 and 2 at two per page), then the
    intruder's access-policy grant, Started and Succeeded (page 3)."""
    routine = [record(f"routine-{n}", "Microsoft.KeyVault/vaults/write", "Succeeded", ago(20 - n), resource=OTHER,
                      caller=OWNER) for n in range(4)]
    grant = f"{VAULT}/accessPolicies/add"
    op = "Microsoft.KeyVault/vaults/accessPolicies/write"
    return [*routine,
            record("grant-started", op, "Started", ago(3), resource=grant, correlation="corr-grant",
                   tenant=FOREIGN_TENANT),
            record("grant-succeeded", op, "Succeeded", ago(2.99), resource=grant, correlation="corr-grant",
                   tenant=FOREIGN_TENANT)]


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        running.add_vault(vault_doc(VAULT, copy.deepcopy(ROGUE)))  # the grant is there now
        running.add_vault(vault_doc(OTHER))
        running.onboarding.activity_page_size = 2
        running.onboarding.activity[SUB] = history()
        yield running


@pytest.fixture
def state_db(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = cli_environment(fake, tmp_path, monkeypatch, mode="remediate", webhook_url=f"{fake.base_url}/webhook")
    path.parent.mkdir(parents=True, exist_ok=True)
    store = SQLiteStateStore(str(path))  # `kvguard baseline` ran before the grant: the grant is not in it
    for vault_id in (VAULT, OTHER):
        store.put_baseline(vault_id, vault_doc(vault_id), None, now=datetime.now(UTC) - timedelta(days=40))
    return path


def run(*argv: str) -> tuple[int, list[dict[str, Any]]]:
    out = io.StringIO()
    status = main(list(argv), out, credential=FakeCredential())
    return status, [json.loads(line) for line in out.getvalue().splitlines()]


def test_backfill_pages_through_the_activity_log_and_finds_the_grant_on_page_3(fake: ArmFake, state_db: Path) -> None:
    status, lines = run("backfill", "--subscription", SUB, "--since", "P30D", "--json")

    assert status == 0
    pages = fake.requests_to("GET", rf"/subscriptions/{SUB}/providers/Microsoft\.Insights/eventtypes/management/values")
    keyvault_pages = [r for r in pages if "Microsoft.KeyVault'" in (r.param("$filter") or "")]
    assert [r.param("$skiptoken") for r in keyvault_pages] == [None, "2", "4"]
    assert all(r.param("api-version") == "2015-04-01" for r in pages)
    assert len({r.param("$filter") for r in pages}) == len(WATCHED_PROVIDERS) == 8  # one query per watched provider
    *events, summary = lines
    assert [e["event_id"] for e in events] == [*(f"routine-{n}" for n in range(4)), "grant-succeeded"]
    grant = events[-1]
    rules = {f["rule"] for f in grant["findings"]}
    assert {"KV-AP-01", "KV-ID-02"} <= rules
    assert grant["vault"].lower() == VAULT.lower()
    assert summary["vaults"][grant["vault"]]["findings"]["KV-AP-01"] == 1
    assert summary["records"] == {"read": 6, "delivered": 5, "unfinished": 0, "unwatched": 0, "repeated": 0}
    assert summary["mode"] == "dry run"


def test_a_dry_run_writes_nothing(fake: ArmFake, state_db: Path) -> None:
    run("backfill", "--subscription", SUB, "--json")

    store = SQLiteStateStore(str(state_db))
    assert store.list_audit() == []
    assert store.open_findings(VAULT) == []
    assert arm_writes(fake) == []
    assert fake.webhooks == []  # no alert raised


def test_apply_records_and_alerts_but_never_remediates_a_past_event(fake: ArmFake, state_db: Path) -> None:
    status, lines = run("backfill", "--subscription", SUB, "--apply", "--json")

    assert status == 0
    grant = lines[-2]
    revert = [a for a in grant["actions"] if a["handler"] == "revert_access_policy"]
    assert revert and revert[0]["status"] == "planned"
    assert arm_writes(fake) == []  # no PUT accessPolicies/remove
    assert any("KV-AP-01" in json.dumps(alert) for alert in fake.webhooks)  # the alert went out
    store = SQLiteStateStore(str(state_db))
    assert "KV-AP-01" in {f.rule for f in store.open_findings(VAULT)}
    assert "grant-succeeded" in {a.event_id for a in store.list_audit()}


def test_a_role_assignment_request_body_is_the_evidence(fake: ArmFake, state_db: Path) -> None:
    fake.onboarding.activity[SUB] = role_assignment_records(ago(5).replace(ago(5)[-3:], "00Z"))

    status, lines = run("backfill", "--subscription", SUB, "--json")

    assert status == 0
    *events, summary = lines
    assert [e["event_id"] for e in events] == ["ra-succeeded"]  # Started and Succeeded: one operation
    request = events[0]["request"]
    assert request["principalId"] == INTRUDER
    assert request["roleDefinitionId"].endswith(SECRETS_USER)
    assert request["scope"] == VAULT
    assert summary["records"]["read"] == 2 and summary["records"]["delivered"] == 1


def test_a_range_that_is_no_range_is_refused(fake: ArmFake, state_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _ = run("backfill", "--subscription", SUB, "--since", "yesterday")

    assert status == 2
    assert "--since: 'yesterday'" in capsys.readouterr().err
    assert fake.requests_to("GET", "eventtypes") == []


def test_the_help_documents_every_flag() -> None:
    out = io.StringIO()
    with pytest.raises(SystemExit):
        import contextlib

        with contextlib.redirect_stdout(out):
            main(["backfill", "--help"])
    text = out.getvalue()
    for flag in ("--subscription", "--since", "--until", "--apply", "--json"):
        assert flag in text
    assert "P30D" in text and "90 days" in text


def test_the_report_lists_findings_per_vault_and_rule(fake: ArmFake, state_db: Path) -> None:
    out = io.StringIO()

    status = main(["backfill", "--subscription", SUB], out, credential=FakeCredential())

    assert status == 0
    text = out.getvalue()
    row = next(line for line in text.splitlines() if "KV-AP-01" in line)
    assert "kv-web-01" in row
    assert "6 records read, 5 operations judged" in text
    assert "dry run: nothing recorded" in text


def test_apply_of_an_old_approved_event_accepts_nothing_present_today(
        fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The approved pipeline wrote the vault ten days ago; the intruder's grant is in it today (its
    own record is past the range read). `--apply` of the pipeline's event must not take the grant
    into the baseline in the pipeline's name, and writes nothing to ARM."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"mode: remediate\napproved_callers: [{OWNER}]\n", encoding="utf-8")
    path = cli_environment(fake, tmp_path, monkeypatch, policy_file=str(policy))
    path.parent.mkdir(parents=True, exist_ok=True)
    SQLiteStateStore(str(path)).put_baseline(VAULT, vault_doc(VAULT), None, now=datetime.now(UTC) - timedelta(days=40))
    fake.onboarding.activity[SUB] = [record("pipeline", "Microsoft.KeyVault/vaults/write", "Succeeded", ago(10),
                                            caller=OWNER)]

    status, lines = run("backfill", "--subscription", SUB, "--apply", "--json")

    assert status == 0
    [past] = [line for line in lines if line.get("event_id") == "pipeline"]
    assert "not accepted" in past["reason"]
    baseline = SQLiteStateStore(str(path)).get_baseline(VAULT)
    assert baseline is not None
    assert INTRUDER not in {p["objectId"] for p in baseline.config["properties"]["accessPolicies"]}
    assert arm_writes(fake) == []
