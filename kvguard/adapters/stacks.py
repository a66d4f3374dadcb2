"""Deployment stacks, read through azure-mgmt-resource-deploymentstacks (api-version 2025-07-01).

A stack's deny settings cover the resources it manages, wherever the stack lives: so a vault's
stacks are those of its resource group and of its subscription (management-group stacks never
arrive on a subscription topic and are out of reach here). Each is read as ARM's wire JSON (REST
names), never as SDK models. kvguard never writes or deletes a stack.

Errors follow `kvguard.adapters.azure_clients`: a stack that is not there (404) is None.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kvguard.adapters.azure_clients import ARM_ENDPOINT, SubscriptionClients, azure_errors, require_object
from kvguard.ports import PermanentError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.resource.deploymentstacks import DeploymentStacksClient

STACKS = "microsoft.resources/deploymentstacks"
_STACK_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)(?:/resourcegroups/(?P<rg>[^/]+))?"
                       r"/providers/microsoft\.resources/deploymentstacks/(?P<name>[^/]+)$", re.IGNORECASE)
_SCOPE_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)(?:/resourcegroups/(?P<rg>[^/]+))?", re.IGNORECASE)


def _stacks_client(*args: Any, **kwargs: Any) -> DeploymentStacksClient:
    from azure.mgmt.resource.deploymentstacks import DeploymentStacksClient

    return DeploymentStacksClient(*args, **kwargs)


def _raw_json(pipeline_response: Any, deserialized: Any, headers: Any) -> Any:
    return require_object(pipeline_response.http_response.json(), "ARM's answer for a deployment stack")


def _missing(error: Any) -> bool:
    return getattr(error, "status_code", None) == 404


class DeploymentStackReader:
    """Deployment stacks by id (GET) and the stacks over a scope (list at its resource group and
    its subscription)."""

    def __init__(self, credential: TokenCredential, endpoint: str = ARM_ENDPOINT, **client_kwargs: Any) -> None:
        """`client_kwargs` go to every DeploymentStacksClient (e.g. `connection_verify`)."""
        self._clients: SubscriptionClients[DeploymentStacksClient] = SubscriptionClients(
            _stacks_client, credential, endpoint, **client_kwargs)

    def __repr__(self) -> str:
        return f"DeploymentStackReader(endpoint={self._clients.endpoint!r})"

    def get(self, resource_id: str) -> Mapping[str, Any] | None:
        from azure.core.exceptions import HttpResponseError

        match = _STACK_RE.match(resource_id.strip().rstrip("/"))
        if match is None:
            raise PermanentError(f"not a deployment stack of a subscription or resource group: {resource_id}")
        operations = self._clients(match["sub"]).deployment_stacks
        try:
            with azure_errors(f"get deployment stack {match['name']}", answers=_missing):
                if match["rg"]:
                    body: Any = operations.get_at_resource_group(match["rg"], match["name"], cls=_raw_json)
                else:
                    body = operations.get_at_subscription(match["name"], cls=_raw_json)
        except HttpResponseError:
            return None
        return dict(body)

    def put(self, resource_id: str, document: Mapping[str, Any]) -> Mapping[str, Any]:
        raise PermanentError(f"kvguard never writes a deployment stack ({resource_id})")

    def delete(self, resource_id: str) -> bool:
        raise PermanentError(f"kvguard never deletes a deployment stack ({resource_id})")

    def list_at_scope(self, scope: str, resource_type: str) -> list[Mapping[str, Any]]:
        """The stacks of the scope's resource group and of its subscription; another type: none."""
        match = _SCOPE_RE.match(scope.strip())
        if resource_type.lower() != STACKS or match is None:
            return []
        operations = self._clients(match["sub"]).deployment_stacks
        found: dict[str, Mapping[str, Any]] = {}
        with azure_errors(f"list deployment stacks over {scope}"):
            listings = [operations.list_at_subscription()]
            if match["rg"]:
                listings.insert(0, operations.list_at_resource_group(match["rg"]))
            for listing in listings:
                for stack in listing:
                    document = stack.as_dict()
                    found.setdefault(str(document.get("id") or "").lower(), document)
        return list(found.values())

    def close(self) -> None:
        self._clients.close()
