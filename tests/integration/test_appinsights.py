"""Application Insights through the real Azure Monitor OpenTelemetry distro against the local HTTPS
fake: with a connection string the worker's observer exports the delivery's span (as a request),
its counters and its log line, authenticated with the app's credential (no instrumentation key
auth). Run in a fresh process: the distro configures process-wide providers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.armfake import ArmFake, arm_fake

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import sys
from opentelemetry import metrics, trace
from opentelemetry._logs import get_logger_provider
from kvguard import runtime
from tests.integration.armfake import FakeCredential
from tests.unit.test_pipeline import OPERATOR_GRANT, ROGUE_CALLER, ROGUE_GRANT, TEAM, Env, event, vault

observer = runtime.build_observer(credential=FakeCredential("app-identity-token"))
env = Env(start=vault(accessPolicies=[TEAM, OPERATOR_GRANT]))
env.world.put(vault(accessPolicies=[TEAM, OPERATOR_GRANT, ROGUE_GRANT]))
with observer.delivery("delivery") as delivery:
    delivery.record_all(env.pipeline.handle(event(ROGUE_CALLER, suffix="/accessPolicies/add", event_id="evt-ai-1")))
for provider in (trace.get_tracer_provider(), metrics.get_meter_provider(), get_logger_provider()):
    provider.force_flush()
print("flushed")
"""


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        yield running


def test_spans_counters_and_the_log_line_reach_application_insights_with_the_app_identity(
    fake: ArmFake, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KVGUARD_", "APPLICATIONINSIGHTS_", "OTEL_"))}
    env.update({
        "APPLICATIONINSIGHTS_CONNECTION_STRING":
            f"InstrumentationKey=00000000-0000-4000-8000-000000000001;IngestionEndpoint={fake.base_url}/",
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        "REQUESTS_CA_BUNDLE": str(fake.write_ca_bundle(tmp_path / "ca.pem")),
        "TMPDIR": str(tmp_path),
    })
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0 and "flushed" in done.stdout, done.stderr[-3000:]

    tracks = fake.requests_to("POST", r"^/v2\.1/track$")
    assert tracks and all(r.headers.get("authorization") == "Bearer app-identity-token" for r in tracks)
    by_kind: dict[str, list[dict]] = {}
    for item in fake.telemetry:
        by_kind.setdefault(item["data"]["baseType"], []).append(item["data"]["baseData"])
    [request] = [r for r in by_kind["RequestData"] if r["name"] == "kvguard.delivery"]
    assert request["properties"]["kvguard.event_id"] == "evt-ai-1"
    # list attributes arrive as JSON text that parse_json reads
    assert "revert_access_policy:applied" in json.loads(request["properties"]["kvguard.actions"])
    assert "KV-AP-01" in json.loads(request["properties"]["kvguard.rules"])
    metric_names = {m["name"] for data in by_kind["MetricData"] for m in data["metrics"]}
    assert {"kvguard.outcomes", "kvguard.findings", "kvguard.remediations"} <= metric_names
    messages = [m["message"] for m in by_kind.get("MessageData", [])]
    [line] = [m for m in messages if m.startswith("kvguard outcome ")]
    assert json.loads(line.removeprefix("kvguard outcome "))["event_id"] == "evt-ai-1"


WEBHOOK_CHILD = """
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from kvguard import runtime
from kvguard.settings import Settings
from kvguard.sinks import build_sinks
from tests.integration.armfake import FakeCredential
from tests.integration.test_alert_sinks import make_alert

observer = runtime.build_observer(credential=FakeCredential("app-identity-token"))
beside = InMemorySpanExporter()  # beside the distro's own exporter, seeing the same spans
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(beside))
sinks = build_sinks(Settings(), FakeCredential())
with observer.delivery("delivery"):
    sinks["notify_webhook"].raise_alert(make_alert())
trace.get_tracer_provider().force_flush()
print(json.dumps([{"name": s.name, "attributes": dict(s.attributes or {})} for s in beside.get_finished_spans()]))
"""
SECRET_PATH = "/webhook/workflows/5f0c2a9e41d84b7a/triggers/manual/paths/invoke"
SECRET_QUERY = "api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sig=Qm9ndXNTaWduYXR1cmU&code=c2VjcmV0LWNvZGU"


def test_the_webhook_url_never_reaches_telemetry(fake: ArmFake, tmp_path: Path) -> None:
    """The requests instrumentation records the webhook call as a dependency; its URL is the
    webhook's secret: the span processor leaves scheme and host, nothing of the path or query."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KVGUARD_", "APPLICATIONINSIGHTS_", "OTEL_"))}
    env.update({
        "APPLICATIONINSIGHTS_CONNECTION_STRING":
            f"InstrumentationKey=00000000-0000-4000-8000-000000000001;IngestionEndpoint={fake.base_url}/",
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        "KVGUARD_WEBHOOK_URL": f"{fake.base_url}{SECRET_PATH}?{SECRET_QUERY}",
        "REQUESTS_CA_BUNDLE": str(fake.write_ca_bundle(tmp_path / "ca.pem")),
        "TMPDIR": str(tmp_path),
    })
    done = subprocess.run([sys.executable, "-c", WEBHOOK_CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(fake.webhooks) == 1, "the alert was posted"

    spans = json.loads(done.stdout.strip().splitlines()[-1])
    urls = {s["attributes"].get("http.url") or s["attributes"].get("url.full") for s in spans} - {None}
    assert urls == {f"{fake.base_url}/[redacted]"}, "the webhook's dependency span, its URL redacted"
    exported = json.dumps(spans) + json.dumps(fake.telemetry)
    for secret in ("workflows/5f0c2a9e41d84b7a", "code=", "sig=", "c2VjcmV0LWNvZGU", "Qm9ndXNTaWduYXR1cmU"):
        assert secret not in exported, secret
