"""The ResourceGateway for role assignments and role definitions, deny assignments (api-version
2022-04-01) and role eligibility schedule requests (2020-10-01), through azure-mgmt-authorization.

Assignments and definitions are read as the raw ARM JSON (REST names), as the vault gateway reads
vaults, so the rules judge exactly what ARM said. They are addressed by id at any scope (a vault, a
secret in it, a resource group, a subscription, a management group); the SDK's client is made per
subscription, and a management-group id uses the client of the first subscription kvguard saw
(the `…ById` operations ignore the client's subscription). The SDK is imported on first use.

Errors: any 404 of a GET is `None` (the assignment or definition does not exist), a 204 (or 404)
of a DELETE is "already gone"; everything else follows `kvguard.adapters.azure_clients`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kvguard.adapters.azure_clients import (
    ARM_ENDPOINT,
    SubscriptionClients,
    azure_errors,
    raw_object,
    response_status,
)
from kvguard.client_request import request_id_kwargs
from kvguard.ids import subscription_of
from kvguard.ports import PermanentError
from kvguard.resources import scope_of

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.authorization import AuthorizationManagementClient

ROLE_ASSIGNMENTS = "microsoft.authorization/roleassignments"
ROLE_DEFINITIONS = "microsoft.authorization/roledefinitions"
DENY_ASSIGNMENTS = "microsoft.authorization/denyassignments"
ELIGIBILITY_REQUESTS = "microsoft.authorization/roleeligibilityschedulerequests"
KINDS = (ROLE_ASSIGNMENTS, ROLE_DEFINITIONS, DENY_ASSIGNMENTS, ELIGIBILITY_REQUESTS)
# Only for an id under no subscription (a management group) before any subscription was seen.
_NO_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


def _authorization_client(*args: Any, **kwargs: Any) -> AuthorizationManagementClient:
    from azure.mgmt.authorization import AuthorizationManagementClient

    return AuthorizationManagementClient(*args, **kwargs)


def _missing(error: HttpResponseError) -> bool:
    return error.status_code == 404


def _kind(resource_id: str) -> str:
    lowered = resource_id.lower()
    for kind in KINDS:
        if f"/providers/{kind}/" in lowered:
            return kind
    raise PermanentError(f"no reader for {resource_id}: only role assignments and definitions, deny assignments and "
                         "eligibility requests are read here")


class AuthorizationGateway:
    """Role assignments (GET, DELETE, list `atScope()`) and role definitions (GET), by id."""

    def __init__(self, credential: TokenCredential, endpoint: str = ARM_ENDPOINT, **client_kwargs: Any) -> None:
        """`client_kwargs` go to every AuthorizationManagementClient (e.g. `connection_verify`)."""
        self._clients: SubscriptionClients[AuthorizationManagementClient] = SubscriptionClients(
            _authorization_client, credential, endpoint, **client_kwargs)
        self._last_subscription = _NO_SUBSCRIPTION

    def __repr__(self) -> str:
        return f"AuthorizationGateway(endpoint={self._clients.endpoint!r})"

    def _client(self, resource_id: str) -> AuthorizationManagementClient:
        subscription = subscription_of(resource_id)
        if subscription is not None:
            self._last_subscription = subscription
        return self._clients(subscription or self._last_subscription)

    def get(self, resource_id: str) -> Mapping[str, Any] | None:
        from azure.core.exceptions import HttpResponseError

        client = self._client(resource_id)
        try:
            with azure_errors(f"get {resource_id.rsplit('/', 2)[-2]} {resource_id.rsplit('/', 1)[-1]}",
                              answers=_missing):
                kind = _kind(resource_id)
                if kind == ROLE_ASSIGNMENTS:
                    body: dict[str, Any] = client.role_assignments.get_by_id(resource_id, cls=raw_object)
                elif kind == DENY_ASSIGNMENTS:
                    body = client.deny_assignments.get_by_id(resource_id, cls=raw_object)
                elif kind == ELIGIBILITY_REQUESTS:
                    scope, name = scope_of(resource_id), resource_id.rsplit("/", 1)[-1]
                    body = client.role_eligibility_schedule_requests.get(scope.lstrip("/"), name, cls=raw_object)
                else:
                    body = client.role_definitions.get_by_id(resource_id, cls=raw_object)
        except HttpResponseError:
            return None
        return body

    def delete(self, resource_id: str) -> bool:
        """DELETE a role assignment; False when it was already gone (204, or a 404)."""
        from azure.core.exceptions import HttpResponseError

        if _kind(resource_id) != ROLE_ASSIGNMENTS:
            raise PermanentError(f"kvguard deletes role assignments only, not {resource_id}")
        client = self._client(resource_id)
        try:
            with azure_errors(f"delete role assignment {resource_id.rsplit('/', 1)[-1]}", answers=_missing):
                status = client.role_assignments.delete_by_id(resource_id, cls=response_status, **request_id_kwargs())
        except HttpResponseError:
            return False
        return status == 200

    def create_role_assignment(self, resource_id: str, properties: Mapping[str, Any]) -> Mapping[str, Any]:
        """PUT a role assignment by id (`properties`: roleDefinitionId, principalId and what else
        ARM takes); its ARM JSON afterwards. Only `kvguard undo` calls this, with the operator's
        credential, to put back an assignment kvguard removed: the pipeline never writes one."""
        import io

        if _kind(resource_id) != ROLE_ASSIGNMENTS:
            raise PermanentError(f"not a role assignment: {resource_id}")
        client = self._client(resource_id)
        body = io.BytesIO(json.dumps({"properties": dict(properties)}).encode())
        with azure_errors(f"create role assignment {resource_id.rsplit('/', 1)[-1]}"):
            created: dict[str, Any] = client.role_assignments.create_by_id(
                resource_id, body, content_type="application/json", cls=raw_object)
        return created

    def list_at_scope(self, scope: str, resource_type: str) -> list[Mapping[str, Any]]:
        """Role assignments at `scope`, inherited from above it (`$filter=atScope()`) and below it
        (the list with no filter includes child scopes: an assignment on one secret, key or
        certificate of a vault), each once; deny assignments and eligibility requests at and
        above it (`atScope()`); no other type is listed here (an empty list)."""
        if resource_type.lower() in (DENY_ASSIGNMENTS, ELIGIBILITY_REQUESTS):
            return self._list_above(scope, resource_type.lower())
        if resource_type.lower() != ROLE_ASSIGNMENTS:
            return []
        client = self._client(scope)
        found: dict[str, Mapping[str, Any]] = {}
        with azure_errors(f"list role assignments at {scope}"):
            # serialize() gives the wire JSON back with ARM's own (REST) names.
            for listing in (client.role_assignments.list_for_scope(scope.lstrip("/"), filter="atScope()"),
                            client.role_assignments.list_for_scope(scope.lstrip("/"))):
                for assignment in listing:
                    document = assignment.serialize(keep_readonly=True)
                    found.setdefault(str(document.get("id") or "").lower(), document)
        return list(found.values())

    def _list_above(self, scope: str, kind: str) -> list[Mapping[str, Any]]:
        client = self._client(scope)
        with azure_errors(f"list {kind.rsplit('/', 1)[-1]} at {scope}"):
            operations = client.deny_assignments if kind == DENY_ASSIGNMENTS else \
                client.role_eligibility_schedule_requests
            return [item.serialize(keep_readonly=True)
                    for item in operations.list_for_scope(scope.lstrip("/"), filter="atScope()")]

    def close(self) -> None:
        self._clients.close()
