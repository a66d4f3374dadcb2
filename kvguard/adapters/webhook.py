"""Findings to an incoming webhook: Teams Workflows, Slack, or anything that reads JSON.

The body is the configured format's (`webhook_formats`: an Adaptive Card, Block Kit, or the
structured alert beside a `text` line). The URL of an incoming webhook is itself the secret
(whoever has it can post), so it never appears in a log line (not even the HTTP client's DEBUG
lines: `log_redaction`), an exception message or a repr: errors name only the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kvguard.adapters.azure_clients import is_transient_status
from kvguard.adapters.log_redaction import protect_url
from kvguard.adapters.webhook_formats import FORMATS, WebhookFormat
from kvguard.ports import Alert, PermanentError, TransientError

if TYPE_CHECKING:
    import requests


class WebhookError(PermanentError):
    """The webhook refused the message for good (a 4xx that the shared rule calls permanent)."""


class WebhookAlertSink:
    """AlertSink posting to an incoming webhook with `requests`."""

    def __init__(
        self, url: str, session: requests.Session | None = None, *, timeout: float = 10.0,
        message_format: WebhookFormat = "json",
    ) -> None:
        protect_url(url)  # the HTTP client logs its request lines: never with this URL's secret part
        self._alert_body, self._resolved_body = FORMATS[message_format]
        self._url = url
        self._host = urlsplit(url).hostname or "webhook"
        self._session = session
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"WebhookAlertSink(host={self._host!r})"

    def raise_alert(self, alert: Alert) -> str:
        self._post(self._alert_body(alert))
        return f"webhook {self._host}: {alert.rule} ({alert.severity})"

    def resolve(self, vault_id: str, rule: str) -> str:
        self._post(self._resolved_body(vault_id, rule))
        return f"webhook {self._host}: {rule} resolved"

    def _post(self, payload: dict[str, Any]) -> None:
        import requests

        if self._session is None:
            self._session = requests.Session()
        try:
            # The session's own `verify` is passed explicitly: requests would otherwise let
            # REQUESTS_CA_BUNDLE from the environment override a session-level CA bundle.
            response = self._session.post(
                self._url, json=payload, timeout=self._timeout, verify=self._session.verify
            )
        except requests.RequestException as exc:
            # requests puts the URL in its messages: name the failure, never chain the message.
            raise TransientError(f"webhook {self._host}: {type(exc).__name__}") from None
        if is_transient_status(response.status_code):
            raise TransientError(f"webhook {self._host}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise WebhookError(f"webhook {self._host}: HTTP {response.status_code}")
