"""Reads of kvguard's own deployment through Azure Resource Manager (azure-mgmt-eventgrid): its
event subscriptions, which the reconcile timer checks (KV-SELF-02).

The subscription is read as the raw ARM JSON (REST names), never through the SDK's models, so the
check judges exactly what ARM said. The SDK is imported when the first client is needed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kvguard.adapters.azure_clients import ARM_ENDPOINT, SubscriptionClients, azure_errors, is_not_found, require_object

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.eventgrid import EventGridManagementClient

# The read the reconcile check makes; the infra grants it (Reader on each protected subscription).
READ_PERMISSION = "Microsoft.EventGrid/systemTopics/eventSubscriptions/read"

_EVENT_SUBSCRIPTION_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.eventgrid"
    r"/systemtopics/(?P<topic>[^/]+)/eventsubscriptions/(?P<name>[^/]+)/?$",
    re.IGNORECASE,
)


def _eventgrid_client(*args: Any, **kwargs: Any) -> EventGridManagementClient:
    from azure.mgmt.eventgrid import EventGridManagementClient

    return EventGridManagementClient(*args, **kwargs)


def _raw_json(pipeline_response: Any, deserialized: Any, headers: Any) -> Any:
    """The `cls` hook of an SDK call: the response body exactly as ARM sent it."""
    return pipeline_response.http_response.json()


class ArmDeploymentReader:
    """kvguard.ports.DeploymentReader on ARM. One SDK client per subscription, made on first use."""

    def __init__(self, credential: TokenCredential, endpoint: str = ARM_ENDPOINT, **client_kwargs: Any) -> None:
        """`client_kwargs` go to every EventGridManagementClient (e.g. `connection_verify`)."""
        self._clients: SubscriptionClients[EventGridManagementClient] = SubscriptionClients(
            _eventgrid_client, credential, endpoint, **client_kwargs
        )

    def get_event_subscription(self, resource_id: str) -> Mapping[str, Any] | None:
        from azure.core.exceptions import ResourceNotFoundError

        match = _EVENT_SUBSCRIPTION_RE.match(resource_id.strip())
        if match is None:
            raise ValueError(f"not a system topic event subscription id: {resource_id!r}")
        operations = self._clients(match["sub"]).system_topic_event_subscriptions
        try:
            with azure_errors(f"get event subscription {match['name']}", answers=is_not_found):
                body = operations.get(match["rg"], match["topic"], match["name"], cls=_raw_json)
        except ResourceNotFoundError:
            return None
        return require_object(body, f"event subscription {match['name']}")

    def close(self) -> None:
        self._clients.close()
