"""Secrets kept out of every log line, at every level.

The HTTP clients under the SDKs log what they send: urllib3 writes each request line at DEBUG
(`"POST /webhookb2/…?sig=… HTTP/1.1" 200`), its retry logic the URL it retries, and azure-core's
HTTP logging policy the URL and headers of every call at INFO. An incoming webhook's URL *is* its
secret, in the path (Teams, Slack) or the query string (a Logic App's `sig=`), and the Functions
host may run with DEBUG on. So:

- `protect(secret)` registers a secret; a filter on each logger that writes request lines
  (`HTTP_LOGGERS`) replaces it with `[redacted]` in every record, whatever the logger's level;
- `protect_url(url)` registers what follows a URL's host (its path and query string), so the
  host stays readable while the part that grants access never appears;
- `quiet_sdk_loggers()` lowers those loggers to WARNING unless the operator has set a level of
  their own: their INFO/DEBUG lines are noise in production, and fewer lines leak less.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import quote, urlsplit

REDACTED = "[redacted]"
HTTP_LOGGERS = (
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.util.retry",
    "urllib3.poolmanager",
    "azure.core.pipeline.policies.http_logging_policy",
    "azure.core.pipeline.policies._universal",
)
QUIET_LOGGERS = ("urllib3", "azure.core.pipeline.policies.http_logging_policy", "azure.identity")


class _Redactor(logging.Filter):
    """Replaces every registered secret in a record's message (formatted with its arguments)."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        with self._lock:
            # Longest first, so a secret that contains another is replaced whole.
            self._secrets = tuple(sorted({*self._secrets, secret}, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        if not secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in secrets:
            redacted = redacted.replace(secret, REDACTED)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_redactor = _Redactor()
_installed = False
_install_lock = threading.Lock()


def protect(secret: str) -> None:
    """Never let `secret` appear in a line of the HTTP loggers (from now on, at any level)."""
    global _installed
    if not secret:
        return
    _redactor.add(secret)
    with _install_lock:
        if not _installed:
            for name in HTTP_LOGGERS:
                logging.getLogger(name).addFilter(_redactor)
            _installed = True


def protect_url(url: str) -> None:
    """Protect the parts of `url` after its host: the path with its query string, the query
    string alone, and the path alone when it is more than `/`."""
    parts = urlsplit(url)
    path = parts.path or "/"
    secrets = [f"{path}?{parts.query}", parts.query] if parts.query else []
    if path != "/":
        secrets.append(path)
    for secret in secrets:
        protect(secret)
        protect(quote(secret, safe=_SENT_AS_IS))  # as the HTTP client writes it on the wire


# What `requests` leaves unquoted when it sends a URL (requests.utils.requote_uri).
_SENT_AS_IS = "!#$%&'()*+,/:;=?@[]~"


def quiet_sdk_loggers() -> None:
    """WARNING for the chatty HTTP loggers, unless a level was set for them already."""
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
