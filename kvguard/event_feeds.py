"""Event subscriptions on a vault's own events: where they send them.

A vault's events (`SecretNewVersionCreated`, `KeyNearExpiry`, …) name every secret, key and
certificate and each new version. They reach a subscriber through an event subscription on a
system topic whose `source` is the vault, or one made on the vault itself
(`{vault id}/providers/Microsoft.EventGrid/eventSubscriptions/{name}`). kvguard's own event
subscriptions sit on the subscription's system topic (its `source` is the subscription, not a
vault): those are KV-SELF-02's, never judged here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kvguard.ids import subscription_of, vault_key

SYSTEM_TOPIC_SUBSCRIPTIONS_TYPE = "Microsoft.EventGrid/systemTopics/eventSubscriptions"
VAULT_SUBSCRIPTIONS_TYPE = "Microsoft.EventGrid/eventSubscriptions"
EVENT_SUBSCRIPTION_TYPES = (SYSTEM_TOPIC_SUBSCRIPTIONS_TYPE.lower(), VAULT_SUBSCRIPTIONS_TYPE.lower())
_EVENT_SUBSCRIPTIONS = "/eventsubscriptions/"


@dataclass(frozen=True)
class Destination:
    """Where a subscription delivers: a webhook's host, or a resource id (lower case), and the
    endpoint type as ARM names it."""

    kind: str  # "webhook" or "resource"
    value: str
    endpoint_type: str

    def to_json(self) -> dict[str, str]:
        return {"endpointType": self.endpoint_type, self.kind: self.value}


def system_topic_of(subscription_id: str) -> str | None:
    """The system topic a `systemTopics/…/eventSubscriptions/…` id lies under, or None."""
    at = subscription_id.lower().rfind(_EVENT_SUBSCRIPTIONS)
    prefix = subscription_id[:at]
    return prefix if at > 0 and "/providers/microsoft.eventgrid/systemtopics/" in prefix.lower() else None


def topic_source(topic: Mapping[str, Any] | None) -> str | None:
    """The resource whose events a system topic carries (`properties.source`), or None."""
    properties = (topic or {}).get("properties")
    source = properties.get("source") if isinstance(properties, Mapping) else None
    return str(source) if source else None


def destination(subscription: Mapping[str, Any] | None) -> Destination | None:
    """Where the subscription sends its events: `destination`, or the one of
    `deliveryWithResourceIdentity`; a webhook by its host (`endpointBaseUrl`, as a GET returns
    it, or `endpointUrl`), every other endpoint type by its resource id. None: no destination."""
    properties = (subscription or {}).get("properties")
    if not isinstance(properties, Mapping):
        return None
    found = properties.get("destination")
    if not isinstance(found, Mapping):
        identity = properties.get("deliveryWithResourceIdentity")
        found = identity.get("destination") if isinstance(identity, Mapping) else None
    if not isinstance(found, Mapping):
        return None
    kind = str(found.get("endpointType") or "")
    given = found.get("properties")
    details: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    url = details.get("endpointBaseUrl") or details.get("endpointUrl")
    if kind.lower() == "webhook" or (url and not details.get("resourceId")):
        host = urlsplit(str(url or "")).hostname
        return Destination("webhook", (host or "").lower(), kind or "WebHook")
    resource = details.get("resourceId")
    return Destination("resource", vault_key(str(resource)), kind) if resource else None


def allowed_destination(found: Destination, allowed: Sequence[str], vault_subscription: str | None) -> bool:
    """Whether `allowed_event_destinations` (webhook hosts or resource ids) admits the destination:
    a webhook by its host (an entry may be a URL), a resource by its id, and any resource in the
    vault's own subscription."""
    if found.kind == "webhook":
        hosts = {(urlsplit(a).hostname or "") if "://" in a else a.strip().lower().rstrip("/") for a in allowed}
        return found.value in {h.lower() for h in hosts if h}
    if vault_subscription is not None and subscription_of(found.value) == vault_subscription.lower():
        return True
    return found.value in {vault_key(a) for a in allowed if a.strip().startswith("/")}
