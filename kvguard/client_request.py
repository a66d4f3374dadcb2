"""The client request id kvguard sends with each of its own ARM writes (`x-ms-client-request-id`).

A fresh, unguessable nonce per write, noted in the ledger of own writes before the write is made.
ARM echoes it in the write's Activity Log record and Event Grid event
(`data.httpRequest.clientRequestId`), so an own-identity event is recognised as kvguard's own by a
value only kvguard's request carried, never by the identity, the resource or a correlation id
(which any caller can set, or copy from an earlier write).

The nonce travels in a context variable rather than through every gateway method: the runner sets
it around the one write it is for, and each adapter sends it with that write (the SDK's
`request_id` keyword); the simulated world puts it in the event it emits.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_CURRENT: ContextVar[str | None] = ContextVar("kvguard_client_request_id", default=None)


def new_request_id() -> str:
    """A nonce for one write: a random UUID, as ARM's own client request ids are."""
    return str(uuid.uuid4())


@contextmanager
def sending(request_id: str) -> Iterator[str]:
    """The writes made inside carry `request_id`."""
    token = _CURRENT.set(request_id)
    try:
        yield request_id
    finally:
        _CURRENT.reset(token)


def current_request_id() -> str | None:
    """The nonce of the write being made, or None outside one."""
    return _CURRENT.get()


def request_id_kwargs() -> dict[str, Any]:
    """The SDK keyword that sends the current nonce as `x-ms-client-request-id` (azure-core's
    RequestIdPolicy); none outside a write, so the SDK picks its own id as it always does."""
    request_id = _CURRENT.get()
    return {"request_id": request_id} if request_id is not None else {}
