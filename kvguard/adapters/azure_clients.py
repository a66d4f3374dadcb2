"""What the ARM-based adapters share: one SDK client per subscription, the retry settings that
bound how long a call may wait, and which failures a retry can cure (TransientError)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from kvguard.ports import TransientError

ARM_ENDPOINT = "https://management.azure.com"
# 408 timeout, 409 "another operation is in progress on this resource", 429 throttled, 5xx.
TRANSIENT_STATUS = frozenset({408, 409, 429})

Client = TypeVar("Client")


def is_transient_status(status: int | None) -> bool:
    return status is not None and (status in TRANSIENT_STATUS or status >= 500)


@contextmanager
def azure_errors(what: str, transient: Callable[[int | None], bool] = is_transient_status) -> Iterator[None]:
    """Turn the Azure SDK's retryable failures into `TransientError`; let the others through."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    try:
        yield
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except HttpResponseError as exc:
        if transient(exc.status_code):
            code = exc.error.code if exc.error is not None else exc.reason
            raise TransientError(f"{what}: HTTP {exc.status_code} {code}") from exc
        raise


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
