"""What one delivery tells the operators: one JSON log line per outcome, and — when configured — a
span, counters and rows for Log Analytics with the same fields.

The fields are built here once (`outcome_fields`), so the log line, the span and the findings
table can never disagree. This module imports nothing heavy: OpenTelemetry is loaded by
`kvguard.otel` and the Azure exporters by the adapters, only when their settings are present, so
a worker without them starts as fast and as small as before.

Caller fields (object id, UPN, IP address) are personal data: they reach the log line and the span
only when `KVGUARD_LOG_CALLER=true`. The audit record and the findings table always keep them —
that is the security record, readable only by those the workspace lets in.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

from kvguard.catalog import HANDLERS
from kvguard.outcome import Outcome

log = logging.getLogger("kvguard")
CIRCUIT_BREAKER_PREFIX = "circuit breaker"


def _millis(since: datetime | None, until: datetime | None) -> int | None:
    if since is None or until is None:
        return None
    return max(0, round((until - since).total_seconds() * 1000))


def decided_at(outcome: Outcome) -> datetime | None:
    """When kvguard had decided: the first action started right after the decision; an outcome
    with no action was decided when it was finished."""
    starts = [a.started for a in outcome.actions if a.started is not None]
    return min(starts) if starts else outcome.finished


def reverted_at(outcome: Outcome) -> datetime | None:
    """When the last applied remediation was done; None when nothing was reverted."""
    ends = [a.finished for a in outcome.actions
            if a.status == "applied" and a.finished is not None and _is_remediation(a.handler)]
    return max(ends) if ends else None


def _is_remediation(handler: str) -> bool:
    known = HANDLERS.get(handler)
    return known is not None and known.kind == "remediation"


def circuit_breaker_open(outcome: Outcome) -> bool:
    """Whether the decision for this outcome held remediation back because the breaker was open."""
    return any(a.status == "skipped" and a.detail.startswith(CIRCUIT_BREAKER_PREFIX) for a in outcome.actions)


def caller_fields(outcome: Outcome) -> dict[str, Any]:
    caller = outcome.event.caller if outcome.event is not None else None
    if caller is None:
        return {"caller_id": None, "caller_upn": None, "caller_ip": None}
    return {"caller_id": caller.id, "caller_upn": caller.upn, "caller_ip": caller.ip}


def without_caller(outcome: Outcome) -> str:
    """The outcome's reason with the caller's ids, names and address replaced: a reason may name
    the caller ("caller … is not an approved caller")."""
    reason = outcome.reason
    caller = outcome.event.caller if outcome.event is not None else None
    if caller is None:
        return reason
    names = {caller.object_id, caller.app_id, caller.upn, caller.name, caller.ip, caller.evidence_principal_id}
    for name in sorted((n for n in names if n), key=len, reverse=True):
        reason = re.sub(re.escape(name), "<caller>", reason, flags=re.IGNORECASE)
    return reason


def outcome_fields(outcome: Outcome, *, with_caller: bool) -> dict[str, Any]:
    """The fields of one outcome that operators query: no evidence values, no secrets."""
    event = outcome.event
    event_time = event.time if event is not None else None
    fields: dict[str, Any] = {
        "event_id": outcome.event_id,
        "outcome": outcome.outcome,
        "reason": outcome.reason if with_caller else without_caller(outcome),
        "vault": outcome.vault,
        "operation": event.operation if event is not None else None,
        "event_time": event_time.isoformat() if event_time is not None else None,
        "rules": sorted({f.rule for f in outcome.findings}),
        "risk": outcome.risk,
        "severity": outcome.severity,
        "actions": [{"handler": a.handler, "status": a.status} for a in outcome.actions],
        "latency_to_decision_ms": _millis(event_time, decided_at(outcome)),
        "latency_to_revert_ms": _millis(event_time, reverted_at(outcome)),
    }
    if with_caller:
        fields.update(caller_fields(outcome))
    return fields


class Instruments(Protocol):
    """Spans and counters (kvguard.otel implements it on OpenTelemetry)."""

    def delivery(self, name: str) -> Any:
        """A context manager around one delivery; yields a handle passed back to `outcome`."""
        ...

    def outcome(self, span: Any, outcome: Outcome, fields: Mapping[str, Any]) -> None: ...

    def transient_failure(self, span: Any, error: BaseException) -> None: ...

    def findings_log_failure(self) -> None: ...


class FindingsLog(Protocol):
    """Where every finding and action of an outcome goes as rows (the Logs Ingestion API)."""

    def send(self, outcome: Outcome) -> None: ...


class Observer:
    """Logs every outcome of a delivery; feeds the instruments and the findings log when present."""

    def __init__(self, *, with_caller: bool = False, instruments: Instruments | None = None,
                 findings_log: FindingsLog | None = None) -> None:
        self.with_caller = with_caller
        self.instruments = instruments
        self.findings_log = findings_log

    @contextmanager
    def delivery(self, name: str) -> Iterator[Delivery]:
        """Around one invocation; a failure is counted (as transient: it makes the host redeliver)
        and raised on."""
        if self.instruments is None:
            yield Delivery(self, None)
            return
        with self.instruments.delivery(name) as span:
            try:
                yield Delivery(self, span)
            except Exception as error:
                self.instruments.transient_failure(span, error)
                raise


class Delivery:
    def __init__(self, observer: Observer, span: Any) -> None:
        self._observer = observer
        self._span = span

    def record(self, outcome: Outcome, label: str = "outcome") -> None:
        observer = self._observer
        fields = outcome_fields(outcome, with_caller=observer.with_caller)
        log.info("kvguard %s %s", label, json.dumps(fields, default=str, sort_keys=True))
        if observer.instruments is not None:
            observer.instruments.outcome(self._span, outcome, fields)
        if observer.findings_log is not None and (outcome.findings or outcome.actions):
            try:
                observer.findings_log.send(outcome)
            except Exception as error:  # the audit record keeps the outcome; this copy is for hunting
                log.error("kvguard findings log: sending event %s failed: %s", outcome.event_id,
                          type(error).__name__)
                if observer.instruments is not None:
                    observer.instruments.findings_log_failure()

    def record_all(self, outcomes: Sequence[Outcome], label: str = "outcome") -> None:
        for outcome in outcomes:
            self.record(outcome, label)
