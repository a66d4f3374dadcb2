"""What a delivery tells the operators: the log line, the span and the counters, for a remediated
event in the simulated world; and that none of the telemetry packages load when unconfigured."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.monitor.opentelemetry.exporter.export.trace._exporter import _convert_span_to_envelope
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kvguard.otel import OtelInstruments
from kvguard.outcome import Outcome
from kvguard.ports import TransientError
from kvguard.telemetry import Observer, outcome_fields
from tests.unit.test_pipeline import DEPLOYER, OPERATOR_GRANT, ROGUE_CALLER, ROGUE_GRANT, START, TEAM, Env, event, vault

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("opentelemetry", "azure.monitor")


class TickingClock:
    """Every reading is 250 ms after the previous one, so each step of the pipeline takes time."""

    def __init__(self, start: datetime) -> None:
        self.at = start

    def now(self) -> datetime:
        self.at += timedelta(milliseconds=250)
        return self.at


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        self.instruments = OtelInstruments(tracer_provider, MeterProvider(metric_readers=[self.metrics]))

    def counts(self) -> dict[str, dict[tuple[tuple[str, Any], ...], float]]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        found: dict[str, dict[tuple[tuple[str, Any], ...], float]] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = point.count  # a histogram: how many were recorded
                        found.setdefault(metric.name, {})[tuple(sorted((point.attributes or {}).items()))] = value
        return found


def remediated_delivery(observer: Observer) -> Outcome:
    """A rogue grant delivered 2 s after its eventTime, in remediate mode; the clock ticks."""
    env = Env(start=vault(accessPolicies=[TEAM, OPERATOR_GRANT]))
    env.world.put(vault(accessPolicies=[TEAM, OPERATOR_GRANT, ROGUE_GRANT]))
    env.pipeline.clock = TickingClock(START + timedelta(seconds=2))
    with observer.delivery("delivery") as delivery:
        [outcome] = env.pipeline.handle(event(ROGUE_CALLER, suffix="/accessPolicies/add", event_id="evt-otel-1"))
        delivery.record(outcome)
    return outcome


def test_a_remediated_event_gives_one_span_with_the_outcome_and_counters() -> None:
    telemetry = Telemetry()
    outcome = remediated_delivery(Observer(instruments=telemetry.instruments))
    assert {a.handler: a.status for a in outcome.actions}["revert_access_policy"] == "applied"

    [span] = telemetry.spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert span.name == "kvguard.delivery"
    assert span.kind == SpanKind.CONSUMER  # Application Insights files it under AppRequests
    assert attributes["kvguard.event_id"] == "evt-otel-1"
    assert attributes["kvguard.vault"] == outcome.vault
    assert attributes["kvguard.operation"] == "Microsoft.KeyVault/vaults/accessPolicies/write"
    assert attributes["kvguard.outcome"] == "processed"
    assert "KV-AP-01" in attributes["kvguard.rules"]
    assert attributes["kvguard.risk"] == outcome.risk > 0
    assert "revert_access_policy:applied" in attributes["kvguard.actions"]
    # eventTime 09:00:00, delivered at 09:00:02 and every clock reading 250 ms later: the decision
    # comes before the first action, the revert after it.
    decision, revert = attributes["kvguard.latency_to_decision_ms"], attributes["kvguard.latency_to_revert_ms"]
    assert isinstance(decision, int) and isinstance(revert, int)
    assert 2000 < decision < revert
    assert "kvguard.caller_upn" not in attributes and "kvguard.caller_ip" not in attributes


def test_list_attributes_reach_application_insights_properties_as_json_that_parse_json_reads() -> None:
    telemetry = Telemetry()
    outcome = remediated_delivery(Observer(instruments=telemetry.instruments))
    [span] = telemetry.spans.get_finished_spans()

    # The Azure Monitor exporter's own conversion of a span to its AppRequests record
    properties = _convert_span_to_envelope(span).data.base_data.properties
    assert json.loads(properties["kvguard.rules"]) == sorted({f.rule for f in outcome.findings})
    assert "revert_access_policy:applied" in json.loads(properties["kvguard.actions"])
    assert properties["kvguard.rules"].startswith('["KV-')

    counts = telemetry.counts()
    assert counts["kvguard.outcomes"] == {(("outcome", "processed"),): 1}
    assert counts["kvguard.findings"][(("rule", "KV-AP-01"), ("severity", "critical"))] == 1
    assert counts["kvguard.remediations"] == {(("handler", "revert_access_policy"), ("status", "applied")): 1}
    assert counts["kvguard.alerts"][(("handler", "raise_defender_alert"), ("status", "applied"))] == 1
    assert counts["kvguard.latency.revert"] == {(): 1}
    assert "kvguard.transient_failures" not in counts and "kvguard.rejects" not in counts


def test_a_transient_failure_is_counted_marks_the_span_and_is_raised() -> None:
    telemetry = Telemetry()
    observer = Observer(instruments=telemetry.instruments)
    with pytest.raises(TransientError), observer.delivery("delivery"):
        raise TransientError("ARM answered 503")
    [span] = telemetry.spans.get_finished_spans()
    assert not span.status.is_ok
    assert telemetry.counts()["kvguard.transient_failures"] == {(("error", "TransientError"),): 1}


def test_a_rejected_payload_is_counted_as_a_reject() -> None:
    telemetry = Telemetry()
    env = Env()
    with Observer(instruments=telemetry.instruments).delivery("delivery") as delivery:
        delivery.record_all(env.pipeline.handle("{not json"))
    counts = telemetry.counts()
    assert counts["kvguard.rejects"] == {(): 1}
    assert counts["kvguard.outcomes"] == {(("outcome", "rejected"),): 1}


def log_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage().removeprefix("kvguard outcome ")) for r in caplog.records
            if r.name == "kvguard" and r.getMessage().startswith("kvguard outcome ")]


def test_one_json_log_line_per_outcome_without_caller_fields_by_default(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kvguard")
    outcome = remediated_delivery(Observer())
    [line] = log_lines(caplog)
    assert line == json.loads(json.dumps(outcome_fields(outcome, with_caller=False), default=str))
    assert line["event_id"] == "evt-otel-1" and "KV-AP-01" in line["rules"]
    assert {"handler": "revert_access_policy", "status": "applied"} in line["actions"]
    assert not {"caller_id", "caller_upn", "caller_ip"} & set(line)
    assert "10.1.2.3" not in caplog.text and ROGUE_CALLER not in caplog.text
    assert "evidence" not in line  # the values that fired a rule stay in the audit


def test_caller_fields_only_when_allowed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kvguard")
    telemetry = Telemetry()
    remediated_delivery(Observer(with_caller=True, instruments=telemetry.instruments))
    [line] = log_lines(caplog)
    assert (line["caller_id"], line["caller_ip"]) == (ROGUE_CALLER, "10.1.2.3")
    [span] = telemetry.spans.get_finished_spans()
    assert (span.attributes or {})["kvguard.caller_ip"] == "10.1.2.3"


def test_without_a_connection_string_no_telemetry_package_is_loaded() -> None:
    """Cold start and memory stay as they were: neither OpenTelemetry nor the Azure Monitor
    packages are imported by `import function_app`, nor by building the worker's observer."""
    probe = ("import sys, function_app; from kvguard import runtime; observer = runtime.build_observer(); "
             f"print(observer.instruments is None, sorted(m for m in sys.modules if m.startswith({HEAVY!r})))")
    env = {k: v for k, v in os.environ.items()
           if k != "APPLICATIONINSIGHTS_CONNECTION_STRING" and not k.startswith("KVGUARD_")}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "True []"


def test_a_reason_that_names_the_caller_is_redacted_unless_allowed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kvguard")
    env = Env(start=vault(accessPolicies=[TEAM, OPERATOR_GRANT]), approved_callers=[DEPLOYER])
    outcome = env.change(vault(accessPolicies=[TEAM, OPERATOR_GRANT, ROGUE_GRANT]))
    assert ROGUE_CALLER in outcome.reason  # "caller … is not an approved caller"
    with Observer().delivery("delivery") as delivery:
        delivery.record(outcome)
    [line] = log_lines(caplog)
    assert ROGUE_CALLER not in line["reason"] and "caller <caller> is not an approved caller" in line["reason"]
    assert outcome_fields(outcome, with_caller=True)["reason"] == outcome.reason


def test_a_remediation_held_back_by_the_circuit_breaker_is_counted() -> None:
    telemetry = Telemetry()
    observer = Observer(instruments=telemetry.instruments)
    env = Env(circuit_breaker={"max_remediations": 1, "window": "PT1H"})
    for _ in range(2):
        with observer.delivery("delivery") as delivery:
            delivery.record(env.change(vault(accessPolicies=[TEAM, ROGUE_GRANT])))
        env.own_writes()
        env.world.clock.advance(timedelta(minutes=5))
    counts = telemetry.counts()
    assert counts["kvguard.circuit_breaker_openings"] == {(): 1}
    assert counts["kvguard.remediations"][(("handler", "revert_access_policy"), ("status", "applied"))] == 1
    assert counts["kvguard.remediations"][(("handler", "revert_access_policy"), ("status", "skipped"))] == 1
