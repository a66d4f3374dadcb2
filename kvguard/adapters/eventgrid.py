"""Findings as CloudEvents on an Event Grid custom topic (azure-eventgrid), for SIEM, SOAR and
Logic Apps.

One event per alert, and every event of a delivery in one POST (the topic takes an array):
`type` `kvguard.detection`, `source` the vault's resource id, `subject` the rule id, and an `id`
derived from (event id, vault, rule), so a retried or duplicated alert carries the same id and a
subscriber can drop the copy. Resolutions are `kvguard.detection.resolved`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4, uuid5

from kvguard.adapters.azure_clients import azure_errors
from kvguard.adapters.log_redaction import protect
from kvguard.ids import vault_key
from kvguard.ports import Alert

if TYPE_CHECKING:
    from azure.core.credentials import AzureKeyCredential, TokenCredential
    from azure.eventgrid import EventGridPublisherClient

DETECTION_TYPE = "kvguard.detection"
RESOLVED_TYPE = "kvguard.detection.resolved"

# Namespace of the deterministic CloudEvent ids. Never change it: subscribers dedupe on the ids.
EVENT_NAMESPACE = UUID("0f6e2b8a-3d4c-4e71-9a55-7c1d2e9b4f30")


def detection_event_id(event_id: str, vault_id: str, rule: str) -> str:
    """The same alert (same triggering event, vault and rule) always gets the same CloudEvent id."""
    return str(uuid5(EVENT_NAMESPACE, f"{event_id}|{vault_key(vault_id)}|{rule.upper()}"))


def alert_data(alert: Alert) -> dict[str, Any]:
    """The alert as the event's JSON data."""
    return {
        "vaultId": alert.vault_id,
        "rule": alert.rule,
        "title": alert.title,
        "severity": alert.severity,
        "score": alert.score,
        "risk": alert.risk,
        "mitre": list(alert.mitre),
        "eventId": alert.event_id,
        "caller": alert.caller,
        "time": alert.time.isoformat(),
        "evidence": alert.evidence,
        "explanation": list(alert.explanation),
    }


def _detection_event(alert: Alert) -> Any:
    from azure.core.messaging import CloudEvent

    return CloudEvent(
        source=alert.vault_id,
        type=DETECTION_TYPE,
        subject=alert.rule,
        id=detection_event_id(alert.event_id, alert.vault_id, alert.rule),
        time=alert.time,
        data=alert_data(alert),
        datacontenttype="application/json",
    )


class EventGridAlertSink:
    """AlertSink publishing to an Event Grid topic (CloudEvents 1.0 input schema).

    `credential_or_key` is the topic's access key (a string or an AzureKeyCredential) or a
    TokenCredential (the identity needs the EventGrid Data Sender role on the topic)."""

    def __init__(self, endpoint: str, credential_or_key: str | AzureKeyCredential | TokenCredential) -> None:
        if isinstance(credential_or_key, str):
            protect(credential_or_key)  # sent as a header; never in a log line, whatever logs headers
        self._endpoint = endpoint
        self._credential = credential_or_key
        self._publisher: EventGridPublisherClient | None = None

    def __repr__(self) -> str:
        return f"EventGridAlertSink(endpoint={self._endpoint!r})"

    def raise_alert(self, alert: Alert) -> str:
        return self.raise_alerts([alert])[0]

    def raise_alerts(self, alerts: Sequence[Alert]) -> list[str]:
        """Every alert of a delivery as one POST: the topic takes an array of CloudEvents."""
        events = [_detection_event(alert) for alert in alerts]
        self._send(events, ", ".join(alert.rule for alert in alerts))
        return [f"event grid {DETECTION_TYPE} {event.id} ({alert.rule})"
                for event, alert in zip(events, alerts, strict=True)]

    def resolve(self, vault_id: str, rule: str) -> str:
        return self.resolve_all([(vault_id, rule)])[0]

    def resolve_all(self, closed: Sequence[tuple[str, str]]) -> list[str]:
        """Every resolution of a delivery as one POST."""
        from azure.core.messaging import CloudEvent

        # A resolution has no triggering event to derive an id from, and the same finding may be
        # resolved again after it reopens; a repeated resolution is harmless to subscribers.
        events = [
            CloudEvent(source=vault_id, type=RESOLVED_TYPE, subject=rule, id=str(uuid4()), time=datetime.now(UTC),
                       data={"vaultId": vault_id, "rule": rule}, datacontenttype="application/json")
            for vault_id, rule in closed
        ]
        self._send(events, ", ".join(rule for _, rule in closed))
        return [f"event grid {RESOLVED_TYPE} {event.id} ({rule})"
                for event, (_, rule) in zip(events, closed, strict=True)]

    def _send(self, events: list[Any], rules: str) -> None:
        if not events:
            return
        with azure_errors(f"event grid publish {rules}"):
            self._client().send(events)

    def _client(self) -> EventGridPublisherClient:
        if self._publisher is None:
            from azure.core.credentials import AzureKeyCredential
            from azure.eventgrid import EventGridPublisherClient

            credential = self._credential
            if isinstance(credential, str):
                credential = AzureKeyCredential(credential)
            self._publisher = EventGridPublisherClient(self._endpoint, credential)
        return self._publisher
