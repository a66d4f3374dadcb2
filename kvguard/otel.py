"""kvguard's spans and counters on the OpenTelemetry API (vendor neutral: the exporter is set up by
`kvguard.adapters.appinsights`). Imported only when telemetry is configured.

One span per delivery (`kvguard.delivery`) carries the outcome's fields as `kvguard.*`
attributes. The counters are the ones README "Operating kvguard" explains:

| instrument | attributes |
|---|---|
| kvguard.outcomes | outcome |
| kvguard.findings | rule, severity |
| kvguard.remediations | handler, status |
| kvguard.alerts | handler, status |
| kvguard.rejects | |
| kvguard.transient_failures | error |
| kvguard.circuit_breaker_openings | |
| kvguard.findings_log_failures | |
| kvguard.latency.decision, kvguard.latency.revert (histograms, ms) | |
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry.metrics import MeterProvider, get_meter_provider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider, get_tracer_provider

from kvguard.catalog import HANDLERS
from kvguard.outcome import Outcome
from kvguard.telemetry import circuit_breaker_open

SCOPE = "kvguard"


def span_attributes(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The outcome's fields as span attributes, None left out. A list (`kvguard.rules`,
    `kvguard.actions` as `handler:status`) is written as JSON text: Application Insights' exporter
    turns every attribute value into `str(value)`, and Python's text of a tuple is nothing
    `parse_json` can read, while `["KV-AP-01","KV-AP-03"]` is."""
    attributes: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if name == "actions":
            value = [f"{a['handler']}:{a['status']}" for a in value]
        if isinstance(value, (list, tuple)):
            value = json.dumps(list(value), separators=(",", ":"))
        attributes[f"kvguard.{name}"] = value
    return attributes


class OtelInstruments:
    def __init__(self, tracer_provider: TracerProvider | None = None,
                 meter_provider: MeterProvider | None = None) -> None:
        self.tracer = (tracer_provider or get_tracer_provider()).get_tracer(SCOPE)
        meter = (meter_provider or get_meter_provider()).get_meter(SCOPE)
        self.outcomes = meter.create_counter("kvguard.outcomes", description="outcomes by kind")
        self.findings = meter.create_counter("kvguard.findings", description="findings by rule and severity")
        self.remediations = meter.create_counter("kvguard.remediations", description="remediation actions")
        self.alerts = meter.create_counter("kvguard.alerts", description="alert actions")
        self.rejects = meter.create_counter("kvguard.rejects", description="payloads rejected as bad input")
        self.transient = meter.create_counter("kvguard.transient_failures",
                                              description="deliveries that raised for redelivery")
        self.breaker = meter.create_counter("kvguard.circuit_breaker_openings",
                                            description="remediations held back by the circuit breaker")
        self.findings_log_failures = meter.create_counter("kvguard.findings_log_failures",
                                                          description="outcomes the findings table missed")
        self.decision_latency = meter.create_histogram("kvguard.latency.decision", unit="ms",
                                                       description="eventTime to decision")
        self.revert_latency = meter.create_histogram("kvguard.latency.revert", unit="ms",
                                                     description="eventTime to revert applied")

    @contextmanager
    def delivery(self, name: str) -> Iterator[Span]:
        # A consumer span (an Event Grid delivery consumed): Application Insights files it under
        # AppRequests, where the workbook and README queries look for it.
        with self.tracer.start_as_current_span(f"kvguard.{name}", kind=SpanKind.CONSUMER, record_exception=False,
                                               set_status_on_exception=False) as span:
            yield span

    def outcome(self, span: Span, outcome: Outcome, fields: Mapping[str, Any]) -> None:
        attributes = span_attributes(fields)
        if span.is_recording() and "kvguard.outcome" in _attributes_of(span):
            span.add_event("kvguard.outcome", attributes)  # a second outcome in the same delivery
        else:
            span.set_attributes(attributes)
        self.outcomes.add(1, {"outcome": outcome.outcome})
        if outcome.outcome == "rejected":
            self.rejects.add(1)
        for finding in outcome.findings:
            self.findings.add(1, {"rule": finding.rule, "severity": finding.severity})
        for action in outcome.actions:
            kind = HANDLERS[action.handler].kind if action.handler in HANDLERS else "alert"
            counter = self.remediations if kind == "remediation" else self.alerts
            counter.add(1, {"handler": action.handler, "status": action.status})
        if circuit_breaker_open(outcome):
            self.breaker.add(1)
        if fields.get("latency_to_decision_ms") is not None and outcome.outcome == "processed":
            self.decision_latency.record(fields["latency_to_decision_ms"])
        if fields.get("latency_to_revert_ms") is not None:
            self.revert_latency.record(fields["latency_to_revert_ms"])

    def transient_failure(self, span: Span, error: BaseException) -> None:
        self.transient.add(1, {"error": type(error).__name__})
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))

    def findings_log_failure(self) -> None:
        self.findings_log_failures.add(1)


def _attributes_of(span: Span) -> Mapping[str, Any]:
    return getattr(span, "attributes", None) or {}
