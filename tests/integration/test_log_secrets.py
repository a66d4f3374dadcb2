"""Secrets never reach a log line at any level: the webhook URL (its path and its signature) while
the sink posts over HTTPS with every logger at DEBUG, the Event Grid topic key, and the SDK's HTTP
loggers quiet by default once the app is built."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from kvguard import runtime
from kvguard.adapters.eventgrid import EventGridAlertSink
from kvguard.adapters.log_redaction import HTTP_LOGGERS, QUIET_LOGGERS
from kvguard.adapters.webhook import WebhookAlertSink
from kvguard.ports import Alert, TransientError
from kvguard.settings import Settings
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake

TOPIC_KEY = "log-test-topic-key-7Hq2pX"
PATH_SECRET = "T0A1B2C3D/B4E5F6A7B/q9Zx8Yw7Vu6Ts5Rq4Po3Nm2L"  # Slack-style: the path is the secret
SIGNATURE = "sig=Vb3Qz9mK1pXrT7nW5yL2cF8hJ4dG6sA0eR"  # Logic App-style: the query string is


def an_alert() -> Alert:
    return Alert(
        vault_id="/subscriptions/0f1e2d3c-4b5a-4697-8877-a6b5c4d3e2f1/resourceGroups/rg/providers/"
                 "Microsoft.KeyVault/vaults/kv-logs",
        rule="KV-NET-01", title="Public network access enabled", severity="high", score=75, risk=75,
        evidence={"publicNetworkAccess": {"before": "Disabled", "after": "Enabled"}}, mitre=("T1562.007",),
        event_id="3f2e1d0c-b9a8-4776-8655-4433221100ff", caller="someone@contoso.example",
        time=datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
    )


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake(eventgrid_key=TOPIC_KEY) as running:
        yield running


@pytest.fixture
def session(fake: ArmFake, tmp_path: Path) -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.verify = str(fake.write_ca_bundle(tmp_path / "ca.pem"))
        yield s


@pytest.fixture
def everything_at_debug(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """DEBUG on the root and, explicitly, on every HTTP client logger: the worst an operator can set."""
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "azure", "requests", *QUIET_LOGGERS, *HTTP_LOGGERS):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def test_the_webhook_url_is_in_no_log_line_at_debug(
    fake: ArmFake, session: requests.Session, everything_at_debug: pytest.LogCaptureFixture
) -> None:
    sink = WebhookAlertSink(f"{fake.base_url}/webhook/services/{PATH_SECRET}?{SIGNATURE}", session=session)

    sink.raise_alert(an_alert())
    fake.inject("POST", r"^/webhook/", status=503)
    with pytest.raises(TransientError):
        sink.resolve(an_alert().vault_id, "KV-NET-01")

    assert len(fake.webhooks) == 1
    text = everything_at_debug.text
    # The client did log its request lines (so this test can see a leak), with the secret part redacted.
    request_lines = [r.getMessage() for r in everything_at_debug.records if r.name == "urllib3.connectionpool"
                     and "POST" in r.getMessage()]
    assert len(request_lines) == 2 and all("[redacted]" in line for line in request_lines)
    assert "127.0.0.1" in text  # the host stays readable
    for secret in (PATH_SECRET, SIGNATURE, SIGNATURE.split("=")[1], "q9Zx8Yw7Vu6Ts5Rq4Po3Nm2L"):
        assert secret not in text


@pytest.mark.usefixtures("trust_fake")
def test_the_topic_key_is_in_no_log_line_at_debug(fake: ArmFake, everything_at_debug: pytest.LogCaptureFixture) -> None:
    sink = EventGridAlertSink(f"{fake.base_url}/api/events", TOPIC_KEY)

    sink.raise_alert(an_alert())

    assert [e["type"] for e in fake.events] == ["kvguard.detection"]
    assert any(r.name.startswith("azure.core") for r in everything_at_debug.records)  # the SDK did log
    assert TOPIC_KEY not in everything_at_debug.text


@pytest.fixture
def trust_fake(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.write_ca_bundle(tmp_path / "topic-ca.pem")))


@pytest.fixture
def unset_levels() -> Iterator[None]:
    """The HTTP loggers as a fresh worker process has them (no level set), restored afterwards."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.NOTSET)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.mark.usefixtures("unset_levels")
def test_the_app_quiets_the_sdk_http_loggers(
    fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the host's level: the root only
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.write_ca_bundle(tmp_path / "ca.pem")))
    settings = Settings(state_backend="sqlite", sqlite_path=str(tmp_path / "state.db"), arm_endpoint=fake.base_url,
                        webhook_url=f"{fake.base_url}/webhook/services/{PATH_SECRET}")

    pipeline = runtime.build(settings, credential=FakeCredential())
    pipeline.sinks["notify_webhook"].raise_alert(an_alert())
    pipeline.gateway.get(an_alert().vault_id)

    assert len(fake.webhooks) == 1
    assert all(logging.getLogger(name).level == logging.WARNING for name in QUIET_LOGGERS)
    noisy = [r for r in caplog.records if r.name.startswith(("urllib3", "azure.core.pipeline.policies"))]
    assert noisy == []
    assert PATH_SECRET not in caplog.text
