"""The alert sinks, in one table: which alert handler feeds each sink, which setting switches it
on, and how it is built. The composition roots build sinks only from this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvguard.ports import AlertSink
from kvguard.registry import Registry
from kvguard.settings import Settings


@dataclass(frozen=True)
class SinkEntry:
    handler: str  # the alert handler whose operations the sink receives
    setting: str  # what switches the sink on
    build: Callable[[Settings, Any], AlertSink | None]  # (settings, credential) -> sink, None when off


def _defender(settings: Settings, credential: Any) -> AlertSink | None:
    if not settings.defender:
        return None
    from kvguard.adapters.defender import DefenderAlertSink

    return DefenderAlertSink(credential, settings.arm_endpoint)


def _eventgrid(settings: Settings, credential: Any) -> AlertSink | None:
    if not settings.eventgrid_topic_endpoint:
        return None
    from kvguard.adapters.eventgrid import EventGridAlertSink

    return EventGridAlertSink(settings.eventgrid_topic_endpoint, settings.eventgrid_topic_key or credential)


def _webhook(settings: Settings, credential: Any) -> AlertSink | None:
    if not settings.webhook_url:
        return None
    from kvguard.adapters.webhook import WebhookAlertSink

    return WebhookAlertSink(settings.webhook_url, message_format=settings.webhook_format)


def _no_setting(settings: Settings, credential: Any) -> AlertSink | None:
    return None  # switched on by a command-line option, not by the environment (see `alerts_file`)


ALERTS_FILE = "write_alerts_file"

SINKS: Registry[SinkEntry] = Registry("alert sink")
for _entry in (
    SinkEntry("raise_defender_alert", "KVGUARD_DEFENDER=true", _defender),
    SinkEntry("publish_detection", "KVGUARD_EVENTGRID_TOPIC_ENDPOINT (+ KVGUARD_EVENTGRID_TOPIC_KEY)", _eventgrid),
    SinkEntry("notify_webhook", "KVGUARD_WEBHOOK_URL (+ KVGUARD_WEBHOOK_FORMAT)", _webhook),
    SinkEntry(ALERTS_FILE, "kvguard replay --alerts FILE", _no_setting),
):
    SINKS.add(_entry.handler, _entry)


def build_sinks(settings: Settings, credential: Any) -> dict[str, AlertSink]:
    """The sinks the settings switch on, keyed by the alert handler that feeds each."""
    built = {entry.handler: entry.build(settings, credential) for entry in SINKS.values()}
    return {handler_id: sink for handler_id, sink in built.items() if sink is not None}


def alerts_file(path: str) -> dict[str, AlertSink]:
    """The JSON Lines sink of `kvguard replay --alerts FILE`, under its own alert handler."""
    from kvguard.adapters.jsonl import JsonLinesAlertSink

    return {ALERTS_FILE: JsonLinesAlertSink(path)}
