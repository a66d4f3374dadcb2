"""The findings table through the real LogsIngestionClient against the local HTTPS fake: every
finding and action of a remediated event arrives as a row of KvguardFindings_CL's schema, a role
assignment over a resource group with the resource, scope and vaults it reaches."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvguard.adapters.ingestion import LogsIngestionFindingsLog
from kvguard.findings_table import COLUMNS, STREAM
from kvguard.outcome import Outcome
from kvguard.replay import build_run, replay
from kvguard.scenario import load_scenario
from kvguard.telemetry import Observer
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake
from tests.unit.test_findings_table import SAMPLES
from tests.unit.test_pipeline import OPERATOR_GRANT, ROGUE_CALLER, ROGUE_GRANT, TEAM, Env, event, vault

RULE_ID = "dcr-5f0c2a9e8b7d4c3a9e1f0a2b3c4d5e6f"
INGEST = r"/dataCollectionRules/"


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        yield running


@pytest.fixture
def findings_log(fake: ArmFake, tmp_path: Path) -> LogsIngestionFindingsLog:
    ca = fake.write_ca_bundle(tmp_path / "ca.pem")
    return LogsIngestionFindingsLog(fake.base_url, RULE_ID, FakeCredential(), connection_verify=str(ca),
                                    retry_total=1, retry_backoff_factor=0.01, retry_backoff_max=0.05)


def remediated() -> Outcome:
    env = Env(start=vault(accessPolicies=[TEAM, OPERATOR_GRANT]))
    return env.change(vault(accessPolicies=[TEAM, OPERATOR_GRANT, ROGUE_GRANT]))


def test_every_finding_and_action_arrives_as_a_row(fake: ArmFake, findings_log: LogsIngestionFindingsLog) -> None:
    outcome = remediated()
    with Observer(findings_log=findings_log).delivery("delivery") as delivery:
        delivery.record(outcome)

    rows = fake.ingested[(RULE_ID, STREAM)]
    assert all(set(row) == set(COLUMNS) for row in rows)
    findings = [r for r in rows if r["RecordType"] == "finding"]
    actions = [r for r in rows if r["RecordType"] == "action"]
    assert sorted(r["Rule"] for r in findings) == sorted(f.rule for f in outcome.findings)
    assert {(r["Handler"], r["Status"]) for r in actions} == {(a.handler, a.status) for a in outcome.actions}
    revert = next(r for r in actions if r["Handler"] == "revert_access_policy")
    assert revert["Status"] == "applied" and "KV-AP-01" in revert["Rule"].split(",")
    assert {r["EventId"] for r in rows} == {outcome.event_id}
    assert {r["VaultId"] for r in rows} == {outcome.vault}
    assert {r["CallerId"] for r in rows} == {ROGUE_CALLER}  # the security record keeps the caller
    assert all(r["TimeGenerated"] for r in rows)
    [request] = fake.requests_to("POST", INGEST)
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["authorization"] == "Bearer fake-token"


def test_an_outcome_without_findings_or_actions_sends_nothing(
    fake: ArmFake, findings_log: LogsIngestionFindingsLog
) -> None:
    env = Env()
    env.deliver(event(ROGUE_CALLER, event_id="evt-twice"))
    outcome = env.deliver(event(ROGUE_CALLER, event_id="evt-twice"))
    assert outcome.outcome == "duplicate" and not outcome.findings
    findings_log.send(outcome)
    assert fake.requests_to("POST", INGEST) == []


def test_a_failing_ingestion_is_logged_and_does_not_fail_the_delivery(
    fake: ArmFake, findings_log: LogsIngestionFindingsLog, caplog: pytest.LogCaptureFixture
) -> None:
    fake.inject("POST", INGEST, status=500, body={"error": {"code": "InternalError", "message": "down"}}, times=5)
    outcome = remediated()
    with Observer(findings_log=findings_log).delivery("delivery") as delivery:
        delivery.record(outcome)
    assert fake.ingested == {}
    failures = [r for r in caplog.records if r.levelno == logging.ERROR and "findings log" in r.getMessage()]
    assert len(failures) == 1 and outcome.event_id in failures[0].getMessage()


def test_a_resource_group_role_assignment_arrives_with_its_resource_scope_and_vaults(
    fake: ArmFake, findings_log: LogsIngestionFindingsLog
) -> None:
    [path] = SAMPLES.glob("21-*.yaml")
    outcomes = replay(build_run(load_scenario(path))).outcomes
    for outcome in outcomes:
        findings_log.send(outcome)

    rows = fake.ingested[(RULE_ID, STREAM)]
    assert all(set(row) == set(COLUMNS) for row in rows)
    [grant] = [r for r in rows if r["RecordType"] == "finding" and r["Rule"] == "KV-RBAC-01"]
    assert grant["VaultId"] is None and grant["Scope"].endswith("/resourceGroups/rg-billing")
    assert "/providers/Microsoft.Authorization/roleAssignments/" in grant["ResourceId"]
    assert len(grant["Vaults"]) == 2 and all("/vaults/kv-billing-" in v for v in grant["Vaults"])
    assert {r["ResourceId"] for r in rows} == {o.resource for o in outcomes if o.findings or o.actions}
