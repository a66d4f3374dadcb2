"""Application Insights through the Azure Monitor OpenTelemetry distro, with the app's managed
identity (the Bicep disables local authentication and grants Monitoring Metrics Publisher).

Only the `kvguard` logger is exported (its one JSON line per outcome lands in AppTraces), every
delivery's span is kept, and the SDKs' own HTTP spans too: each ARM read and revert shows under the
delivery's span. Those HTTP spans name the URL they called, and an incoming webhook's URL is its
own secret (a Teams Workflows path with `sig=`, a Slack hook path, an Azure Functions `code=`):
`WebhookUrlRedactor` strips its path and query from every span before any exporter sees it.

Imported only when a connection string is set (the OpenTelemetry SDK comes with the distro).
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span, SpanProcessor

REDACTED = "[redacted]"
# Where the HTTP instrumentations put the URL a client span called (old and new semantic
# conventions), and the parts of it some also record apart.
_URL_ATTRIBUTES = ("http.url", "url.full")
_PART_ATTRIBUTES = ("http.target", "url.path", "url.query")


class WebhookUrlRedactor(SpanProcessor):
    """Replaces the path and query of the webhook's URL in the spans that call it, keeping the
    scheme and host (so the dependency still says where it went). A span's URL attributes are set
    when the span starts (the requests, urllib and urllib3 instrumentations pass them to
    `start_span`), so they are rewritten here, before any processor's `on_end` exports them."""

    def __init__(self, webhook_url: str) -> None:
        parts = urlsplit(webhook_url.strip())
        self._host = (parts.hostname or "").lower()
        self._path = parts.path.rstrip("/")

    def _matches(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
        except ValueError:
            return False
        return bool(self._host) and host == self._host and parts.path.rstrip("/") == self._path

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attributes = span.attributes or {}
        redacted = False
        for key in _URL_ATTRIBUTES:
            value = attributes.get(key)
            if isinstance(value, str) and self._matches(value):
                parts = urlsplit(value)
                span.set_attribute(key, f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/{REDACTED}")
                redacted = True
        if redacted:
            for key in _PART_ATTRIBUTES:
                if key in attributes:
                    span.set_attribute(key, REDACTED if key == "url.query" else f"/{REDACTED}")


def configure(connection_string: str, credential: Any, webhook_url: str | None = None) -> None:
    """The distro, with `webhook_url` (when one is configured) kept out of every span."""
    from azure.monitor.opentelemetry import configure_azure_monitor

    # Every delivery's span is kept (the distro's default rate limit of 5 traces a second may drop
    # the first ones of a cold worker); OTEL_TRACES_SAMPLER, when set, decides instead.
    sampling = {} if os.environ.get("OTEL_TRACES_SAMPLER") else {"sampling_ratio": 1.0}
    processors = [WebhookUrlRedactor(webhook_url)] if webhook_url else []
    configure_azure_monitor(connection_string=connection_string, credential=credential, logger_name="kvguard",
                            enable_live_metrics=False, span_processors=processors, **sampling)
    kvguard_log = logging.getLogger("kvguard")
    if kvguard_log.level == logging.NOTSET:
        kvguard_log.setLevel(logging.INFO)  # the outcome lines are INFO; the root's WARNING would drop them
