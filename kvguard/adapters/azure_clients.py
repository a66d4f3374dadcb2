"""What the ARM-based adapters share: one SDK client per subscription, the retry settings that
bound how long a call may wait, and the one rule for which failures a retry can cure.

The rule (every adapter raises by it; the pipeline acts on the two kinds):

- **Transient** (`TransientError`: raised, the claim released, Event Grid redelivers): no answer at
  all (connection refused or reset, DNS, TLS, timeouts, a token the identity endpoint did not hand
  out), 408, 429, every 5xx, and 409 (on ARM "another operation is in progress on this resource").
  These are what the SDK's own retries were for; a later delivery meets a service that recovered.
- **Permanent** (`PermanentError`: recorded with the event's raw payload and acknowledged): every
  other 4xx, because the same request will be refused the same way. 400 and 414 (a malformed
  request, a URL too long: a 100,000-character vault name), 404 that is not "this resource does not
  exist" (`SubscriptionNotFound`, no such route or resource type), 405, 413, 422 and the like; 409
  `ScopeLocked` (a lock refuses the write until a person removes it); and an answer that cannot be
  read (a 200 whose body is not a JSON object).
- **401 and 403 are permanent too** (`RefusedError`, naming the role the call needs when the caller
  says which), deliberately. A role assignment does take minutes to
  propagate, but Event Grid would keep a refused event for 24 hours and then dead-letter it with
  nothing recorded, once per event while the role is missing. Recorded, the event keeps its raw
  payload and a reason that names the missing right, and the reconcile timer re-reads every vault
  hourly, so a change refused while the role propagated is judged once the role works.
- **A 404 that says the resource (or its resource group) does not exist is an answer**, not a
  failure: the caller decides (a vault read as gone, a write aimed at a vault that went).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

from kvguard.adapters.signin import RefusedError
from kvguard.ports import PermanentError, TransientError

if TYPE_CHECKING:
    from azure.core.exceptions import HttpResponseError

ARM_ENDPOINT = "https://management.azure.com"
# 408 timeout, 409 "another operation is in progress on this resource", 429 throttled, 5xx.
TRANSIENT_STATUS = frozenset({408, 409, 429})
# Error codes that make an otherwise transient status permanent (lower case).
PERMANENT_CODES = frozenset({"scopelocked"})
# A 404 with one of these codes says the resource is not there: an answer the caller handles.
NOT_FOUND_CODES = frozenset({"resourcenotfound", "resourcegroupnotfound"})
# How much of a service's message (or of the call's description) a reason keeps: an answer to a
# 100,000-character URL may quote it whole.
REASON_LIMIT = 300

Client = TypeVar("Client")


def is_transient_status(status: int | None) -> bool:
    """The status part of the rule: None (no HTTP answer), 408, 409, 429 and 5xx."""
    return status is None or status in TRANSIENT_STATUS or status >= 500


def error_code(error: HttpResponseError) -> str | None:
    """ARM's `error.code` of a failed answer, when it had one."""
    code = error.error.code if error.error is not None else None
    return str(code) if code else None


def is_not_found(error: HttpResponseError) -> bool:
    """A 404 saying the resource or its resource group does not exist (not any other 404)."""
    return error.status_code == 404 and (error_code(error) or "").lower() in NOT_FOUND_CODES


def shorten(text: str, limit: int = REASON_LIMIT) -> str:
    """`text` cut to `limit` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


@contextmanager
def azure_errors(
    what: str,
    transient: Callable[[int | None], bool] = is_transient_status,
    *,
    answers: Callable[[HttpResponseError], bool] = lambda error: False,
    role: str | None = None,
) -> Iterator[None]:
    """Turn the Azure SDK's failures into `TransientError` or `PermanentError` by the module's
    rule. Errors for which `answers(error)` holds are let through unchanged for the caller (e.g.
    `is_not_found`); `transient` replaces the status rule where a service differs (Table Storage's
    409 is an insert conflict its callers decide on). `role`: the role that grants the call, named
    when ARM refuses it (401, 403)."""
    from azure.core.exceptions import (
        DeserializationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    try:
        yield
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientError(f"{shorten(what)}: {type(exc).__name__}: {shorten(str(exc))}") from exc
    except HttpResponseError as exc:
        if answers(exc):
            raise
        code = error_code(exc)
        label = f"{shorten(what)}: HTTP {exc.status_code} {code or exc.reason or ''}".rstrip()
        if transient(exc.status_code) and (code or "").lower() not in PERMANENT_CODES:
            raise TransientError(label) from exc
        message = exc.error.message if exc.error is not None and exc.error.message else None
        text = f"{label}: {shorten(message)}" if message else label
        if exc.status_code in (401, 403):
            raise RefusedError(f"{text} (needs the {role} role)" if role else text, role) from exc
        raise PermanentError(text) from exc
    except (json.JSONDecodeError, DeserializationError) as exc:
        # The SDK reads every answer as JSON before anything else sees it: "<html>" with a 200.
        raise PermanentError(f"{shorten(what)}: the answer is not JSON ({shorten(str(exc))})") from exc


def require_object(body: Any, what: str) -> dict[str, Any]:
    """An answer's body that must be a JSON object (ARM's resources are): anything else is a
    permanent failure naming what came instead."""
    if not isinstance(body, dict):
        raise PermanentError(f"{shorten(what)}: the answer is a JSON {type(body).__name__}, not an object")
    return body


def raw_object(pipeline_response: Any, deserialized: Any, headers: Any) -> dict[str, Any]:
    """The `cls` hook of an SDK call answered with one ARM resource: its body exactly as ARM sent it
    (read through `text()`, which the older SDKs' transport responses have and `json()` they lack),
    or a PermanentError naming the request when it is not an object."""
    response = pipeline_response.http_response
    request = f"{response.request.method} {urlsplit(response.request.url).path}"
    return require_object(json.loads(response.text()), f"ARM's answer to {request}")


def response_status(pipeline_response: Any, deserialized: Any, headers: Any) -> int:
    """The `cls` hook of an SDK call whose answer is only its status (a delete: 200, or 204 when gone)."""
    return int(pipeline_response.http_response.status_code)


class SubscriptionClients(Generic[Client]):
    """SDK clients made on first use, one per subscription (ids compared case-insensitively), and
    reused by every later invocation of the worker."""

    def __init__(
        self,
        make: Callable[..., Client],
        credential: Any,
        endpoint: str = ARM_ENDPOINT,
        *,
        retry_total: int = 4,
        retry_backoff_factor: float = 0.8,
        retry_backoff_max: float = 30.0,
        **client_kwargs: Any,
    ) -> None:
        """`make(credential, subscription_id, base_url=…, **kwargs)` builds a client (an SDK
        class, imported by the caller only when the first client is needed)."""
        self._make = make
        self._credential = credential
        self.endpoint = endpoint.rstrip("/")
        self._kwargs = {
            "retry_total": retry_total,
            "retry_backoff_factor": retry_backoff_factor,
            "retry_backoff_max": retry_backoff_max,
            **client_kwargs,
        }
        self._clients: dict[str, Client] = {}
        self._lock = threading.Lock()

    def __call__(self, subscription_id: str) -> Client:
        key = subscription_id.strip().lower()
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._make(self._credential, key, base_url=self.endpoint, **self._kwargs)
                self._clients[key] = client
            return client

    def __contains__(self, subscription_id: object) -> bool:
        """Whether the client of this subscription has been made already."""
        return isinstance(subscription_id, str) and subscription_id.strip().lower() in self._clients

    def close(self) -> None:
        """Close every client made so far (their HTTP sessions); new ones are made on next use."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            close = getattr(client, "close", None)
            if close is not None:
                close()
