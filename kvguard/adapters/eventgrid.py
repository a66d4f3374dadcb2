"""Findings as CloudEvents on an Event Grid custom topic (azure-eventgrid), for SIEM, SOAR and
Logic Apps.

One event per alert: `type` `kvguard.detection`, `source` the vault's resource id, `subject` the
rule id, and an `id` derived from (event id, vault, rule), so a retried or duplicated alert carries
the same id and a subscriber can drop the copy. Resolutions are `kvguard.detection.resolved`.
"""

from __future__ import annotations

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
        from azure.core.messaging import CloudEvent

        event_id = detection_event_id(alert.event_id, alert.vault_id, alert.rule)
        event = CloudEvent(
            source=alert.vault_id,
            type=DETECTION_TYPE,
            subject=alert.rule,
            id=event_id,
            time=alert.time,
            data=alert_data(alert),
            datacontenttype="application/json",
        )
        self._send(event, alert.rule)
        return f"event grid {DETECTION_TYPE} {event_id} ({alert.rule})"

    def resolve(self, vault_id: str, rule: str) -> str:
        from azure.core.messaging import CloudEvent

        # A resolution has no triggering event to derive an id from, and the same finding may be
        # resolved again after it reopens; a repeated resolution is harmless to subscribers.
        event = CloudEvent(
            source=vault_id,
            type=RESOLVED_TYPE,
            subject=rule,
            id=str(uuid4()),
            time=datetime.now(UTC),
            data={"vaultId": vault_id, "rule": rule},
            datacontenttype="application/json",
        )
        self._send(event, rule)
        return f"event grid {RESOLVED_TYPE} {event.id} ({rule})"

    def _send(self, event: Any, rule: str) -> None:
        with azure_errors(f"event grid publish {rule}"):
            self._client().send([event])

    def _client(self) -> EventGridPublisherClient:
        if self._publisher is None:
            from azure.core.credentials import AzureKeyCredential
            from azure.eventgrid import EventGridPublisherClient

            credential = self._credential
            if isinstance(credential, str):
                credential = AzureKeyCredential(credential)
            self._publisher = EventGridPublisherClient(self._endpoint, credential)
        return self._publisher
