"""Event subscriptions on a vault's events, and the system topics they hang on, through
azure-mgmt-eventgrid: read by id as the raw ARM JSON (REST names; never the SDK's models), deleted
by id (remove_event_subscription), and listed on a vault (`kvguard baseline` and the reconcile seed
them). kvguard never writes one.

Errors follow `kvguard.adapters.azure_clients`: not there is None for `get` and False for `delete`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kvguard.adapters.azure_clients import ARM_ENDPOINT, SubscriptionClients, azure_errors, is_not_found, require_object
from kvguard.client_request import request_id_kwargs
from kvguard.ids import parse_vault_ref, subscription_of
from kvguard.ports import PermanentError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.eventgrid import EventGridManagementClient

_TOPIC = (r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
          r"/providers/microsoft\.eventgrid/systemtopics/(?P<topic>[^/]+)")
_TOPIC_RE = re.compile(_TOPIC + r"/?$", re.IGNORECASE)
_TOPIC_SUBSCRIPTION_RE = re.compile(_TOPIC + r"/eventsubscriptions/(?P<name>[^/]+)/?$", re.IGNORECASE)
_SCOPED_SUBSCRIPTION_RE = re.compile(
    r"^(?P<scope>/.+?)/providers/microsoft\.eventgrid/eventsubscriptions/(?P<name>[^/]+)/?$", re.IGNORECASE)
SCOPED_SUBSCRIPTIONS = "microsoft.eventgrid/eventsubscriptions"


def _eventgrid_client(*args: Any, **kwargs: Any) -> EventGridManagementClient:
    from azure.mgmt.eventgrid import EventGridManagementClient

    return EventGridManagementClient(*args, **kwargs)


def _raw_json(pipeline_response: Any, deserialized: Any, headers: Any) -> Any:
    """The `cls` hook of an SDK call: the response body exactly as ARM sent it."""
    return pipeline_response.http_response.json()


class EventGridResources:
    """System topics and event subscriptions by id; one SDK client per subscription, made on first use."""

    def __init__(self, credential: TokenCredential, endpoint: str = ARM_ENDPOINT, **client_kwargs: Any) -> None:
        """`client_kwargs` go to every EventGridManagementClient (e.g. `connection_verify`)."""
        self._clients: SubscriptionClients[EventGridManagementClient] = SubscriptionClients(
            _eventgrid_client, credential, endpoint, **client_kwargs
        )

    def __repr__(self) -> str:
        return f"EventGridResources(endpoint={self._clients.endpoint!r})"

    def get(self, resource_id: str) -> Mapping[str, Any] | None:
        from azure.core.exceptions import ResourceNotFoundError

        text = resource_id.strip()
        client = self._clients(subscription_of(text) or "")
        extra = {"cls": _raw_json, **request_id_kwargs()}
        body: Any
        try:
            with azure_errors(f"get {text}", answers=is_not_found):
                if match := _TOPIC_SUBSCRIPTION_RE.match(text):
                    body = client.system_topic_event_subscriptions.get(match["rg"], match["topic"], match["name"],
                                                                       **extra)
                elif match := _TOPIC_RE.match(text):
                    body = client.system_topics.get(match["rg"], match["topic"], **extra)
                elif match := _SCOPED_SUBSCRIPTION_RE.match(text):
                    body = client.event_subscriptions.get(match["scope"], match["name"], **extra)
                else:
                    raise PermanentError(f"no reader of the resource {text} is configured")
        except ResourceNotFoundError:
            return None
        return require_object(body, f"ARM's answer to GET {text}")

    def put(self, resource_id: str, document: Mapping[str, Any]) -> Mapping[str, Any]:
        raise PermanentError(f"kvguard never writes event subscriptions or system topics ({resource_id})")

    def delete(self, resource_id: str) -> bool:
        """Delete an event subscription; False when it was not there."""
        if self.get(resource_id) is None:
            return False
        text = resource_id.strip()
        client = self._clients(subscription_of(text) or "")
        with azure_errors(f"delete {text}"):
            if match := _TOPIC_SUBSCRIPTION_RE.match(text):
                poller = client.system_topic_event_subscriptions.begin_delete(
                    match["rg"], match["topic"], match["name"], **request_id_kwargs())
            elif match := _SCOPED_SUBSCRIPTION_RE.match(text):
                poller = client.event_subscriptions.begin_delete(match["scope"], match["name"], **request_id_kwargs())
            else:
                raise PermanentError(f"kvguard deletes only event subscriptions, not {text}")
            poller.result()
        return True

    def list_at_scope(self, scope: str, resource_type: str) -> list[Mapping[str, Any]]:
        """The event subscriptions made on a vault itself, each read again by id as ARM's JSON."""
        vault = parse_vault_ref(scope)
        if resource_type.lower() != SCOPED_SUBSCRIPTIONS or vault is None or vault.resource_group is None:
            raise PermanentError(f"no reader of {resource_type} at {scope} is configured")
        client = self._clients(vault.subscription_id)
        with azure_errors(f"list event subscriptions of {vault.id}"):
            ids = [str(item.id) for item in client.event_subscriptions.list_by_resource(
                vault.resource_group, "Microsoft.KeyVault", "vaults", vault.name) if item.id]
        return [doc for doc in (self.get(i) for i in ids) if doc is not None]

    def close(self) -> None:
        self._clients.close()
