"""Blast radius against the local HTTPS fake with the real LogsQueryClient: a rogue grant's finding
carries what the granted principal did in the vault since the grant, and so do the Defender
assessment, the detection CloudEvent and the readable report; a failing query holds no alert back."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from kvguard import runtime
from kvguard.detection import assessment_name
from kvguard.outcome import Outcome
from kvguard.pipeline import Pipeline
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
from tests.integration.armfake import ArmFake, AuditEvent, FakeCredential, arm_fake

WORKSPACE = "7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
OTHER_VAULT = VAULT_ID.replace("kv-billing-eu", "kv-billing-us")
GRANTED_AT = datetime(2026, 11, 27, 10, 4, 5, tzinfo=UTC)  # the event's eventTime


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, 27, 10, minute, second, tzinfo=UTC)


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake(eventgrid_key=TOPIC_KEY) as running:
        running.add_vault(vault_doc())
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
    [query] = fake.requests_to("POST", rf"/v1/workspaces/{WORKSPACE}/query$")
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
