"""A delivery's alerts as the runner hands them to the real sinks, against the local HTTPS fake:
Defender's assessment PUTs go side by side (each is held for its latency at the fake, so
overlapping arrivals are calls in flight together), and a failure among them still reads as it
would one after another."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvguard.actions import ActionResult, ActionRunner
from kvguard.adapters.defender import DefenderAlertSink
from kvguard.detection import assessment_name
from kvguard.ports import Alert
from kvguard.sim import SimVaultGateway, World
from remediation.alerts import raise_defender_alert
from remediation.base import PlanInput
from tests.integration.armfake import ArmFake, FakeCredential, Latency, arm_fake
from tests.integration.test_alert_sinks import make_alert

ASSESSMENTS = r"/providers/Microsoft\.Security/assessments/"
RULES = ("KV-AP-01", "KV-AP-03", "KV-ID-05")
PUT_SECONDS = 0.3


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        yield running


@pytest.fixture
def runner(fake: ArmFake, tmp_path: Path) -> ActionRunner:
    defender = DefenderAlertSink(FakeCredential(), endpoint=fake.base_url,
                                 connection_verify=str(fake.write_ca_bundle(tmp_path / "ca.pem")),
                                 retry_total=0)
    return ActionRunner(SimVaultGateway(World()), {"raise_defender_alert": defender})


def alerts() -> list[Alert]:
    return [make_alert(rule=rule) for rule in RULES]


def deliver(runner: ActionRunner, sent: list[Alert]) -> ActionResult:
    operations = raise_defender_alert(PlanInput([], None, None, sent))
    return runner.run("raise_defender_alert", operations, dry_run=False, current=None)


def test_a_deliverys_defender_assessments_are_put_side_by_side(runner: ActionRunner, fake: ArmFake) -> None:
    fake.latency = Latency(assessment_put=PUT_SECONDS)

    result = deliver(runner, alerts())

    assert result.status == "applied", result.detail
    assert [after.split(" (")[1].split(")")[0] for after in result.after] == list(RULES)  # in order
    puts = fake.requests_to("PUT", ASSESSMENTS)
    assert len(puts) == len(RULES) and len(fake.assessments) == len(RULES)
    starts = sorted(r.received for r in puts)
    # One after another, each would arrive once the one before had been held its PUT_SECONDS.
    assert all(later - earlier < PUT_SECONDS / 2 for earlier, later in itertools.pairwise(starts)), starts


def test_a_failed_assessment_among_them_reads_as_one_after_another(runner: ActionRunner, fake: ArmFake) -> None:
    fake.inject("PUT", ASSESSMENTS + assessment_name("KV-AP-03"), status=503,
                body={"error": {"code": "ServiceUnavailable", "message": "try later"}})

    result = deliver(runner, alerts())

    assert result.status == "failed" and result.transient
    assert result.detail.startswith("KV-AP-01 (critical); failed at 'KV-AP-03 (critical)': TransientError")
    assert len(result.after) == 1  # what was done before the failure, as the outbox counts it
    assert len(fake.assessments) == 2  # the one after it was made too


def test_a_refused_assessment_is_a_permanent_failure(runner: ActionRunner, fake: ArmFake) -> None:
    fake.inject("PUT", ASSESSMENTS + assessment_name("KV-AP-01"), status=400,
                body={"error": {"code": "AssessmentMetadataNotFound", "message": "no metadata"}})

    result = deliver(runner, alerts())

    assert result.status == "failed" and not result.transient
    assert "AssessmentMetadataNotFound" in result.detail
    assert result.after == []
