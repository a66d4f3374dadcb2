"""Blast radius against the local HTTPS fake with the real LogsQueryClient: a rogue grant's finding
carries what the granted principal did in the vault since the grant, read from AZKVAuditLogs in a
workspace that writes it and from AzureDiagnostics otherwise (probed once per workspace, a column
the workspace lacks no failure), and so do the Defender assessment, the detection CloudEvent and
the readable report; a data-access role assignment gets its radius too; a failing query holds no
alert back."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from kvguard import runtime
from kvguard.adapters.loganalytics import LogAnalyticsActivityLog
from kvguard.detection import assessment_name
from kvguard.outcome import Outcome
from kvguard.pipeline import Pipeline
from kvguard.ports import PermanentError
from kvguard.report import finding_cell
from kvguard.settings import Settings
from tests.e2e.test_function_app import (
    INTRUDER,
    OWNER,
    ROGUE,
    ROGUE_GRANT,
    TOPIC_KEY,
    VAULT_ID,
    event_json,
    vault_doc,
)
from tests.e2e.test_function_app_rbac import ASSIGNMENT_ID, GRANTEE, SECRETS_USER, rbac_vault, role_event
from tests.e2e.test_function_app_rbac import INTRUDER as RBAC_INTRUDER
from tests.integration.armfake import ArmFake, AuditEvent, FakeCredential, arm_fake

WORKSPACE = "7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
OTHER_VAULT = VAULT_ID.replace("kv-billing-eu", "kv-billing-us")
GRANTED_AT = datetime(2026, 11, 27, 10, 4, 5, tzinfo=UTC)  # the event's eventTime


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, 27, 10, minute, second, tzinfo=UTC)


@pytest.fixture(params=["AZKVAuditLogs", "AzureDiagnostics"])
def fake(request: pytest.FixtureRequest) -> Iterator[ArmFake]:
    with arm_fake(eventgrid_key=TOPIC_KEY) as running:
        running.add_vault(vault_doc())
        running.audit_tables[WORKSPACE] = request.param
        running.audit_events[WORKSPACE] = [
            AuditEvent(at(2), VAULT_ID, ROGUE, "SecretGet", "secrets/db-password"),  # before the grant
            AuditEvent(at(5), VAULT_ID, ROGUE, "SecretList"),
            AuditEvent(at(5, 30), VAULT_ID, ROGUE, "SecretGet", "secrets/db-password"),
            AuditEvent(at(6), VAULT_ID, ROGUE, "SecretGet", "secrets/db-password"),
            AuditEvent(at(6), VAULT_ID, OWNER, "KeyUnwrap", "keys/cmk"),  # someone else
            AuditEvent(at(7), OTHER_VAULT, ROGUE, "SecretGet", "secrets/other"),  # another vault
        ]
        yield running


def pipeline(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.write_ca_bundle(tmp_path / "ca.pem")))
    settings = Settings(
        mode="remediate", state_backend="sqlite", sqlite_path=str(tmp_path / "state.db"),
        arm_endpoint=fake.base_url, defender=True, eventgrid_topic_endpoint=f"{fake.base_url}/api/events",
        eventgrid_topic_key=TOPIC_KEY, audit_workspace_id=WORKSPACE, loganalytics_endpoint=fake.base_url,
    )
    built = runtime.build(settings, credential=FakeCredential())
    built.store.put_baseline(VAULT_ID, vault_doc(), None)
    fake.add_vault(vault_doc(copy.deepcopy(ROGUE_GRANT)))
    return built


def rogue_grant(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    sent = GRANTED_AT.replace(microsecond=678901)
    [outcome] = pipeline(fake, tmp_path, monkeypatch).handle(event_json("evt-radius-1", INTRUDER, time=sent))
    return outcome


def test_the_grant_finding_says_what_the_principal_did_since_the_grant(
    fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcome = rogue_grant(fake, tmp_path, monkeypatch)
    grant = next(f for f in outcome.findings if f.rule == "KV-AP-01")
    radius = grant.evidence["blast_radius"]
    assert radius["operations"] == [
        {"operation": "SecretGet", "object": "secrets/db-password", "count": 2},
        {"operation": "SecretList", "object": "", "count": 1},
    ]
    assert radius["total"] == 3
    assert datetime.fromisoformat(radius["from"]) == GRANTED_AT.replace(microsecond=678901)
    assert {a.handler: a.status for a in outcome.actions}["revert_access_policy"] == "applied"
    # Only grant findings are enriched, and the query asked for this vault and principal only.
    assert all("blast_radius" not in f.evidence for f in outcome.findings if f.rule != "KV-AP-01")
    # The probe, then the query of the table the workspace writes, for this vault and principal only.
    table = fake.audit_tables[WORKSPACE]
    probe, query = fake.requests_to("POST", rf"/v1/workspaces/{WORKSPACE}/query$")
    assert probe.json["query"].startswith("union isfuzzy=true (AZKVAuditLogs")
    assert query.json["query"].startswith(f"{table}\n") and radius["table"] == table
    assert ROGUE in query.json["query"] and VAULT_ID.lower() in query.json["query"].lower()
    assert query.headers["authorization"] == "Bearer fake-token"

    assessments = fake.requests_to("PUT", rf"/assessments/{assessment_name('KV-AP-01')}$")
    data = assessments[0].json["properties"]["additionalData"]
    assert "3 operation(s)" in data["blastRadius"] and "SecretGet secrets/db-password (2)" in data["blastRadius"]
    [detection] = [e for e in fake.events if e["type"] == "kvguard.detection" and e["subject"] == "KV-AP-01"]
    assert detection["data"]["evidence"]["blast_radius"]["total"] == 3

    report = io.StringIO()
    Console(file=report, width=200).print(finding_cell(grant))
    assert "blast radius: 3 operation(s)" in report.getvalue()


def test_a_failing_query_is_noted_and_the_alert_still_goes_out(
    fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.inject("POST", r"/v1/workspaces/", status=403,
                body={"error": {"code": "InsufficientAccessError", "message": "no access to the workspace"}}, times=9)
    outcome = rogue_grant(fake, tmp_path, monkeypatch)
    grant = next(f for f in outcome.findings if f.rule == "KV-AP-01")
    assert grant.evidence["blast_radius"]["error"].startswith("audit log query failed")
    statuses = {a.handler: a.status for a in outcome.actions}
    assert statuses["raise_defender_alert"] == "applied" and statuses["revert_access_policy"] == "applied"


def audit_log(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LogAnalyticsActivityLog:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.write_ca_bundle(tmp_path / "ca.pem")))
    return LogAnalyticsActivityLog(WORKSPACE, FakeCredential(), endpoint=fake.base_url)


def queries(fake: ArmFake) -> list[str]:
    return [r.json["query"].split("\n", 1)[0] for r in fake.requests_to("POST", rf"/v1/workspaces/{WORKSPACE}/query$")]


def test_the_table_is_probed_once_per_workspace(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = audit_log(fake, tmp_path, monkeypatch)
    first = log.activity([VAULT_ID], ROGUE, GRANTED_AT, at(8))
    second = log.activity([VAULT_ID, OTHER_VAULT], ROGUE, GRANTED_AT, at(8))
    table = fake.audit_tables[WORKSPACE]
    assert queries(fake)[1:] == [table, table] and queries(fake)[0].startswith("union isfuzzy=true")
    assert first.table == second.table == table
    assert sum(o.count for o in first.operations) == 3
    assert {(o.vault, o.object) for o in second.operations} >= {(OTHER_VAULT.lower(), "secrets/other")}


def test_a_failed_probe_decides_nothing_and_the_next_grant_probes_again(
    fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = audit_log(fake, tmp_path, monkeypatch)
    fake.inject("POST", r"/v1/workspaces/", status=403,
                body={"error": {"code": "InsufficientAccessError", "message": "no access to the workspace"}})
    with pytest.raises(PermanentError):
        log.activity([VAULT_ID], ROGUE, GRANTED_AT, at(8))
    answered = log.activity([VAULT_ID], ROGUE, GRANTED_AT, at(8))
    assert answered.table == fake.audit_tables[WORKSPACE] and sum(o.count for o in answered.operations) == 3
    assert [q.startswith("union") for q in queries(fake)] == [True, True, False]


def test_an_azure_diagnostics_workspace_missing_optional_columns_still_answers(
    fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A column of AzureDiagnostics exists only once some record had it: a workspace whose tokens
    never carried the long object-id claim has no such column, and naming it fails the query."""
    fake.audit_tables[WORKSPACE] = "AzureDiagnostics"
    fake.diagnostics_columns[WORKSPACE] = frozenset({"identity_claim_oid_g"})
    answered = audit_log(fake, tmp_path, monkeypatch).activity([VAULT_ID], ROGUE, GRANTED_AT, at(8))
    assert answered.table == "AzureDiagnostics" and sum(o.count for o in answered.operations) == 3


def test_a_data_access_role_assignment_gets_the_blast_radius_of_its_principal(
    fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.add_vault(rbac_vault())
    fake.add_authorization({
        "id": ASSIGNMENT_ID, "name": ASSIGNMENT_ID.rsplit("/", 1)[-1],
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {"roleDefinitionId": SECRETS_USER, "principalId": GRANTEE, "principalType": "User",
                       "scope": VAULT_ID},
    })
    now = datetime.now(UTC)
    fake.audit_events[WORKSPACE] = [AuditEvent(now, VAULT_ID, GRANTEE, "SecretGet", "secrets/db-password")] * 2
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.write_ca_bundle(tmp_path / "ca.pem")))
    settings = Settings(
        mode="remediate", state_backend="sqlite", sqlite_path=str(tmp_path / "state.db"),
        arm_endpoint=fake.base_url, defender=True, audit_workspace_id=WORKSPACE, loganalytics_endpoint=fake.base_url,
    )
    built = runtime.build(settings, credential=FakeCredential())
    built.store.put_baseline(VAULT_ID, rbac_vault(), None, now=built.clock.now())
    event = json.loads(role_event("4e5f6a7b-8c9d-4e0f-9a1b-2c3d4e5f6a7b", RBAC_INTRUDER,
                                  "Microsoft.Authorization/roleAssignments/write",
                                  "Microsoft.Resources.ResourceWriteSuccess"))
    event["eventTime"] = (now - timedelta(seconds=30)).isoformat()
    [outcome] = built.handle(json.dumps(event))
    [grant] = [f for f in outcome.findings if f.rule == "KV-RBAC-01"]
    radius = grant.evidence["blast_radius"]
    assert radius["operations"] == [{"operation": "SecretGet", "object": "secrets/db-password", "count": 2}]
    assert radius["table"] == fake.audit_tables[WORKSPACE]
    [query] = [r for r in fake.requests_to("POST", r"/query$") if not r.json["query"].startswith("union")]
    assert GRANTEE in query.json["query"]
    [assessment, _healthy] = fake.requests_to("PUT", rf"/assessments/{assessment_name('KV-RBAC-01')}$")
    assert "2 operation(s)" in assessment.json["properties"]["additionalData"]["blastRadius"]
