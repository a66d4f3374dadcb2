"""The alert sinks against the local HTTPS fake: Defender assessments through azure-mgmt-security,
CloudEvents through azure-eventgrid, and the webhook through requests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError

from kvguard.adapters.defender import EVIDENCE_LIMIT, DefenderAlertSink
from kvguard.adapters.eventgrid import DETECTION_TYPE, RESOLVED_TYPE, EventGridAlertSink, detection_event_id
from kvguard.adapters.webhook import WebhookAlertSink, WebhookError
from kvguard.detection import assessment_name
from kvguard.ports import Alert, PermanentError, TransientError
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake

SUB = "2c9d8e7f-6a5b-4c3d-9e2f-1a0b9c8d7e6f"
VAULT_ID = f"/subscriptions/{SUB}/resourceGroups/rg-identity/providers/Microsoft.KeyVault/vaults/kv-signing"
TOPIC_KEY = "topic-key-for-tests"
ASSESSMENTS = r"/providers/Microsoft\.Security/assessments/"


def make_alert(**changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "vault_id": VAULT_ID,
        "rule": "KV-AP-01",
        "title": "Access policy added for an unknown principal",
        "severity": "critical",
        "score": 95,
        "risk": 100,
        "evidence": {"principal": "5e4d3c2b-0000-4aaa-8bbb-123456789abc", "secrets": ["get", "list"]},
        "mitre": ("T1098", "T1555.006"),
        "event_id": "9d1f6a2e-3b4c-4d5e-8f70-a1b2c3d4e5f6",
        "caller": "intruder@contoso.example",
        "time": datetime(2026, 11, 27, 10, 15, 0, tzinfo=UTC),
        "explanation": ("finding KV-AP-01: 95", "vault tagged criticality=high: +10"),
    }
    fields.update(changes)
    return Alert(**fields)


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake(eventgrid_key=TOPIC_KEY) as running:
        yield running


@pytest.fixture
def ca_bundle(fake: ArmFake, tmp_path: Path) -> Path:
    return fake.write_ca_bundle(tmp_path / "ca.pem")


@pytest.fixture
def trust_fake(ca_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The Event Grid publisher takes no transport options: trust the fake's CA the way requests
    does for every client, through REQUESTS_CA_BUNDLE."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_bundle))
    return ca_bundle


# ---- Defender for Cloud ----------------------------------------------------------------------


@pytest.fixture
def defender(fake: ArmFake, ca_bundle: Path) -> DefenderAlertSink:
    return DefenderAlertSink(
        FakeCredential(), endpoint=fake.base_url, connection_verify=str(ca_bundle),
        retry_total=2, retry_backoff_factor=0.01, retry_backoff_max=0.05,
    )


def test_defender_assessment_body(defender: DefenderAlertSink, fake: ArmFake) -> None:
    alert = make_alert()

    detail = defender.raise_alert(alert)

    name = assessment_name("KV-AP-01")
    assert name in detail and "Unhealthy" in detail
    (request,) = fake.requests_to("PUT", ASSESSMENTS)
    assert request.path == f"{VAULT_ID}/providers/Microsoft.Security/assessments/{name}"
    assert request.param("api-version") == "2021-06-01"
    assert request.headers["authorization"] == "Bearer fake-token"
    body = request.json
    assert set(body) == {"properties"}
    props = body["properties"]
    assert props["resourceDetails"] == {"source": "Azure"}
    assert props["status"] == {
        "code": "Unhealthy",
        "cause": "KV-AP-01",
        "description": "Access policy added for an unknown principal (risk 100, critical)",
    }
    data = props["additionalData"]
    assert all(isinstance(value, str) for value in data.values())
    assert data["rule"] == "KV-AP-01"
    assert data["severity"] == "critical"
    assert data["risk"] == "100"
    assert data["mitre"] == "T1098, T1555.006"
    assert data["eventId"] == alert.event_id
    assert data["caller"] == "intruder@contoso.example"
    assert json.loads(data["evidence"]) == alert.evidence
    assert "criticality=high" in data["explanation"]


def test_defender_is_one_assessment_per_vault_and_rule(defender: DefenderAlertSink, fake: ArmFake) -> None:
    defender.raise_alert(make_alert())
    defender.raise_alert(make_alert(event_id="another-delivery", risk=90))
    defender.raise_alert(make_alert(rule="KV-NET-01", title="Public network access enabled"))

    puts = fake.requests_to("PUT", ASSESSMENTS)
    assert len(puts) == 3
    assert puts[0].path == puts[1].path != puts[2].path
    assert len(fake.assessments) == 2
    stored = fake.assessment(VAULT_ID, assessment_name("KV-AP-01"))
    assert stored is not None and stored["properties"]["additionalData"]["eventId"] == "another-delivery"


def test_defender_resolve_sets_healthy(defender: DefenderAlertSink, fake: ArmFake) -> None:
    defender.raise_alert(make_alert())

    detail = defender.resolve(VAULT_ID.lower(), "KV-AP-01")

    assert "Healthy" in detail
    stored = fake.assessment(VAULT_ID, assessment_name("KV-AP-01"))
    assert stored is not None
    assert stored["properties"]["status"]["code"] == "Healthy"
    assert len(fake.assessments) == 1


def test_defender_cuts_huge_evidence(defender: DefenderAlertSink, fake: ArmFake) -> None:
    evidence = {"added": [f"principal-{n:04d}" for n in range(1024)]}

    defender.raise_alert(make_alert(evidence=evidence))

    (request,) = fake.requests_to("PUT", ASSESSMENTS)
    text = request.json["properties"]["additionalData"]["evidence"]
    assert len(text) < EVIDENCE_LIMIT + 100
    assert "truncated" in text


def test_defender_throttling_is_retried(defender: DefenderAlertSink, fake: ArmFake) -> None:
    fake.inject("PUT", ASSESSMENTS, status=429, headers={"Retry-After": "1"},
                body={"error": {"code": "TooManyRequests", "message": "later"}})

    defender.raise_alert(make_alert())

    assert len(fake.requests_to("PUT", ASSESSMENTS)) == 2
    assert len(fake.assessments) == 1


def test_defender_outage_is_transient(defender: DefenderAlertSink, fake: ArmFake) -> None:
    fake.inject("PUT", ASSESSMENTS, status=503, body={"error": {"code": "ServiceUnavailable", "message": "x"}},
                times=10)

    with pytest.raises(TransientError, match="HTTP 503"):
        defender.raise_alert(make_alert())
    assert len(fake.requests_to("PUT", ASSESSMENTS)) == 3
    assert fake.assessments == {}


def test_defender_missing_metadata_is_not_transient(defender: DefenderAlertSink, fake: ArmFake) -> None:
    fake.inject("PUT", ASSESSMENTS, status=400,
                body={"error": {"code": "AssessmentMetadataNotFound", "message": "no metadata"}})

    with pytest.raises(Exception) as caught:
        defender.raise_alert(make_alert())
    assert not isinstance(caught.value, TransientError)
    assert "AssessmentMetadataNotFound" in str(caught.value)


# ---- Event Grid ------------------------------------------------------------------------------


@pytest.mark.usefixtures("trust_fake")
def test_cloud_event_published_with_key(fake: ArmFake) -> None:
    sink = EventGridAlertSink(f"{fake.base_url}/api/events", TOPIC_KEY)
    alert = make_alert()

    detail = sink.raise_alert(alert)

    (request,) = fake.requests_to("POST", r"^/api/events$")
    assert request.headers["aeg-sas-key"] == TOPIC_KEY
    assert "authorization" not in request.headers
    assert request.headers["content-type"].startswith("application/cloudevents-batch+json")
    (event,) = fake.events
    expected_id = detection_event_id(alert.event_id, VAULT_ID, "KV-AP-01")
    assert expected_id in detail
    assert event["id"] == expected_id
    assert event["specversion"] == "1.0"
    assert event["type"] == DETECTION_TYPE
    assert event["source"] == VAULT_ID
    assert event["subject"] == "KV-AP-01"
    assert event["time"].startswith("2026-11-27T10:15:00")
    assert event["data"]["rule"] == "KV-AP-01"
    assert event["data"]["vaultId"] == VAULT_ID
    assert event["data"]["risk"] == 100
    assert event["data"]["evidence"] == alert.evidence
    assert event["data"]["mitre"] == ["T1098", "T1555.006"]


@pytest.mark.usefixtures("trust_fake")
def test_cloud_event_ids_are_deterministic(fake: ArmFake) -> None:
    sink = EventGridAlertSink(f"{fake.base_url}/api/events", TOPIC_KEY)

    sink.raise_alert(make_alert())
    sink.raise_alert(make_alert(vault_id=VAULT_ID.lower(), risk=80))  # a redelivery, id spelt differently
    sink.raise_alert(make_alert(event_id="a-later-event"))
    sink.raise_alert(make_alert(rule="KV-AP-03"))

    ids = [event["id"] for event in fake.events]
    assert ids[0] == ids[1]
    assert len({ids[0], ids[2], ids[3]}) == 3


@pytest.mark.usefixtures("trust_fake")
def test_cloud_event_published_with_a_token(fake: ArmFake) -> None:
    fake.eventgrid_key = None
    credential = FakeCredential()
    sink = EventGridAlertSink(f"{fake.base_url}/api/events", credential)

    sink.raise_alert(make_alert())

    (request,) = fake.requests_to("POST", r"^/api/events$")
    assert request.headers["authorization"] == "Bearer fake-token"
    assert "aeg-sas-key" not in request.headers
    assert ("https://eventgrid.azure.net/.default",) in credential.scopes
    assert len(fake.events) == 1


@pytest.mark.usefixtures("trust_fake")
def test_resolution_event(fake: ArmFake) -> None:
    sink = EventGridAlertSink(f"{fake.base_url}/api/events", TOPIC_KEY)

    sink.resolve(VAULT_ID, "KV-NET-01")

    (event,) = fake.events
    assert event["type"] == RESOLVED_TYPE
    assert event["subject"] == "KV-NET-01"
    assert event["data"] == {"vaultId": VAULT_ID, "rule": "KV-NET-01"}


@pytest.mark.usefixtures("trust_fake")
def test_wrong_topic_key_is_permanent(fake: ArmFake) -> None:
    sink = EventGridAlertSink(f"{fake.base_url}/api/events", "not-the-key")

    with pytest.raises(PermanentError, match="HTTP 401") as caught:
        sink.raise_alert(make_alert())
    assert isinstance(caught.value.__cause__, ClientAuthenticationError)
    assert fake.events == []


@pytest.mark.usefixtures("trust_fake")
def test_event_grid_throttling_is_retried(fake: ArmFake) -> None:
    fake.inject("POST", r"^/api/events$", status=429, headers={"Retry-After": "1"})
    sink = EventGridAlertSink(f"{fake.base_url}/api/events", TOPIC_KEY)

    sink.raise_alert(make_alert())

    assert len(fake.requests_to("POST", r"^/api/events$")) == 2
    assert len(fake.events) == 1


@pytest.mark.usefixtures("trust_fake")
def test_event_grid_outage_is_transient(fake: ArmFake) -> None:
    # 502 to a POST is not retried by the SDK (500/503/504 would be, with its default backoff).
    fake.inject("POST", r"^/api/events$", status=502, times=10)
    sink = EventGridAlertSink(f"{fake.base_url}/api/events", TOPIC_KEY)

    with pytest.raises(TransientError, match="HTTP 502"):
        sink.raise_alert(make_alert())
    assert len(fake.requests_to("POST", r"^/api/events$")) == 1
    assert fake.events == []


# ---- webhook ---------------------------------------------------------------------------------

SECRET = "sig=s3cr3t-webhook-signature"


@pytest.fixture
def session(ca_bundle: Path) -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.verify = str(ca_bundle)
        yield s


def test_webhook_posts_text_and_the_alert(fake: ArmFake, session: requests.Session) -> None:
    sink = WebhookAlertSink(f"{fake.base_url}/webhook?{SECRET}", session=session)

    detail = sink.raise_alert(make_alert())

    (request,) = fake.requests_to("POST", r"^/webhook$")
    assert request.param("sig") == "s3cr3t-webhook-signature"
    assert request.headers["content-type"] == "application/json"
    (message,) = fake.webhooks
    assert message["text"] == (
        "kvguard [CRITICAL] KV-AP-01 Access policy added for an unknown principal on kv-signing"
        " by intruder@contoso.example (risk 100)"
    )
    assert message["alert"]["rule"] == "KV-AP-01"
    assert message["alert"]["evidence"] == make_alert().evidence
    assert "s3cr3t" not in detail


def test_webhook_resolution(fake: ArmFake, session: requests.Session) -> None:
    sink = WebhookAlertSink(f"{fake.base_url}/webhook", session=session)

    sink.resolve(VAULT_ID, "KV-PROT-03")

    (message,) = fake.webhooks
    assert message["text"] == "kvguard resolved: KV-PROT-03 on kv-signing"
    assert message["resolved"] == {"vaultId": VAULT_ID, "rule": "KV-PROT-03"}


def test_webhook_without_a_session_trusts_the_environment(fake: ArmFake, trust_fake: Path) -> None:
    sink = WebhookAlertSink(f"{fake.base_url}/webhook")

    sink.raise_alert(make_alert())

    assert len(fake.webhooks) == 1


@pytest.mark.parametrize(("status", "error"), [(429, TransientError), (502, TransientError), (400, WebhookError)])
def test_webhook_failures(fake: ArmFake, session: requests.Session, status: int, error: type[Exception]) -> None:
    fake.inject("POST", r"^/webhook$", status=status, body={"error": "nope"})
    sink = WebhookAlertSink(f"{fake.base_url}/webhook?{SECRET}", session=session)

    with pytest.raises(error) as caught:
        sink.raise_alert(make_alert())
    assert f"HTTP {status}" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)
    assert fake.webhooks == []


def test_unreachable_webhook_is_transient_and_keeps_the_url_secret(ca_bundle: Path) -> None:
    with arm_fake() as stopped:
        url = f"{stopped.base_url}/webhook?{SECRET}"
    sink = WebhookAlertSink(url, timeout=2.0)

    with pytest.raises(TransientError) as caught:
        sink.raise_alert(make_alert())
    assert "ConnectionError" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "s3cr3t" not in str(caught.value)
    assert "s3cr3t" not in repr(sink)


def test_webhook_tls_is_verified(fake: ArmFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    sink = WebhookAlertSink(f"{fake.base_url}/webhook")

    with pytest.raises(TransientError, match="SSLError"):
        sink.raise_alert(make_alert())
    assert fake.webhooks == []
