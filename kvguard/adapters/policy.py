"""The ResourceGateway for Azure Policy, through azure-mgmt-resource's PolicyClient: exemptions
(GET, PUT, DELETE, list), assignments (GET, PUT, DELETE, list) and the definitions and set
definitions an assignment names (GET).

azure-mgmt-resource holds the policy client up to 24.x (25.0 moved it out) and exemptions only in
its API version 2022-07-01-preview; assignments and definitions are read at 2023-04-01. Both are
pinned here by a profile, whatever the installed version's defaults. Single resources are read as
the raw ARM JSON (REST names), as the other adapters read theirs; lists come back as the SDK's
models, serialised with their REST names. The client is made per subscription; an id under no
subscription (a management group, a built-in definition) uses the first subscription kvguard saw.

Errors follow `kvguard.adapters.azure_clients`; any 404 of a GET is None, a 204 (or 404) of a
DELETE is "already gone".
"""

from __future__ import annotations

import io
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
from kvguard.ids import parse_vault_ref, subscription_of
from kvguard.ports import PermanentError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.resource.policy import PolicyClient

EXEMPTIONS = "microsoft.authorization/policyexemptions"
ASSIGNMENTS = "microsoft.authorization/policyassignments"
DEFINITIONS = "microsoft.authorization/policydefinitions"
SET_DEFINITIONS = "microsoft.authorization/policysetdefinitions"
# The API versions kvguard reads and writes policy with (exemptions exist only in the preview).
API_VERSIONS = {"default": "2023-04-01", "policy_exemptions": "2022-07-01-preview"}
_NO_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
_MANAGEMENT_GROUP = "/providers/microsoft.management/managementgroups/"


def _policy_client(credential: TokenCredential, subscription_id: str, **kwargs: Any) -> PolicyClient:
    from azure.mgmt.resource.policy import PolicyClient
    from azure.profiles import ProfileDefinition

    profile = ProfileDefinition({PolicyClient._PROFILE_TAG: {None: API_VERSIONS["default"],
                                                             "policy_exemptions": API_VERSIONS["policy_exemptions"]}},
                                "kvguard")
    return PolicyClient(credential, subscription_id, profile=profile, **kwargs)


def _missing(error: HttpResponseError) -> bool:
    return error.status_code == 404


def kind_of(resource_id: str) -> str:
    """Which policy resource an id names (lower-cased type)."""
    lowered = resource_id.lower()
    for kind in (EXEMPTIONS, ASSIGNMENTS, SET_DEFINITIONS, DEFINITIONS):
        if f"/providers/{kind}/" in lowered:
            return kind
    raise PermanentError(f"no reader for {resource_id}: only policy exemptions, assignments and definitions")


def _split(resource_id: str, kind: str) -> tuple[str, str]:
    """(scope, name) of a policy resource's id; the scope without its leading slash (the SDK adds it)."""
    at = resource_id.lower().rfind(f"/providers/{kind}/")
    return resource_id[:at].lstrip("/"), resource_id[at:].rsplit("/", 1)[-1]


class PolicyGateway:
    """Policy exemptions and assignments by id (GET, PUT, DELETE, listed at a vault with
    `atScope()`), definitions and set definitions by id (GET)."""

    def __init__(self, credential: TokenCredential, endpoint: str = ARM_ENDPOINT, **client_kwargs: Any) -> None:
        """`client_kwargs` go to every PolicyClient (e.g. `connection_verify`)."""
        self._clients: SubscriptionClients[PolicyClient] = SubscriptionClients(
            _policy_client, credential, endpoint, **client_kwargs)
        self._last_subscription = _NO_SUBSCRIPTION

    def __repr__(self) -> str:
        return f"PolicyGateway(endpoint={self._clients.endpoint!r})"

    def _client(self, resource_id: str) -> PolicyClient:
        subscription = subscription_of(resource_id)
        if subscription is not None:
            self._last_subscription = subscription
        return self._clients(subscription or self._last_subscription)

    def get(self, resource_id: str) -> Mapping[str, Any] | None:
        from azure.core.exceptions import HttpResponseError

        kind = kind_of(resource_id)
        client = self._client(resource_id)
        scope, name = _split(resource_id, kind)
        try:
            with azure_errors(f"get {kind.rsplit('/', 1)[-1]} {name}", answers=_missing):
                body: dict[str, Any]
                if kind == EXEMPTIONS:
                    body = client.policy_exemptions.get(scope, name, cls=raw_object)
                elif kind == ASSIGNMENTS:
                    body = client.policy_assignments.get_by_id(resource_id.lstrip("/"), cls=raw_object)
                else:
                    body = self._definition(client, kind, scope, name)
        except HttpResponseError:
            return None
        return body

    def _definition(self, client: PolicyClient, kind: str, scope: str, name: str) -> dict[str, Any]:
        """A definition or set definition: built in (no scope), a subscription's or a management group's."""
        operations: Any = client.policy_set_definitions if kind == SET_DEFINITIONS else client.policy_definitions
        lowered = "/" + scope.lower()
        if not scope:
            return dict(operations.get_built_in(name, cls=raw_object))
        if lowered.startswith(_MANAGEMENT_GROUP):
            return dict(operations.get_at_management_group(scope.split("/")[3], name, cls=raw_object))
        return dict(operations.get(name, cls=raw_object))

    def put(self, resource_id: str, document: Mapping[str, Any]) -> Mapping[str, Any]:
        """PUT an exemption or an assignment as `document` says (its `properties`, and for an
        assignment its `location` and `identity`); its ARM JSON afterwards."""
        kind = kind_of(resource_id)
        body = io.BytesIO(json.dumps({k: v for k, v in document.items()
                                      if k.lower() not in ("id", "name", "type", "etag", "systemdata")}).encode())
        client = self._client(resource_id)
        scope, name = _split(resource_id, kind)
        with azure_errors(f"put {kind.rsplit('/', 1)[-1]} {name}"):
            if kind == EXEMPTIONS:
                written: dict[str, Any] = client.policy_exemptions.create_or_update(
                    scope, name, body, content_type="application/json", cls=raw_object, **request_id_kwargs())
            elif kind == ASSIGNMENTS:
                written = client.policy_assignments.create_by_id(
                    resource_id.lstrip("/"), body, content_type="application/json", cls=raw_object,
                    **request_id_kwargs())
            else:
                raise PermanentError(f"kvguard never writes policy definitions ({resource_id})")
        return written

    def delete(self, resource_id: str) -> bool:
        """DELETE an exemption or an assignment; False when it was already gone (204, or a 404)."""
        from azure.core.exceptions import HttpResponseError

        kind = kind_of(resource_id)
        client = self._client(resource_id)
        scope, name = _split(resource_id, kind)
        try:
            with azure_errors(f"delete {kind.rsplit('/', 1)[-1]} {name}", answers=_missing):
                if kind == EXEMPTIONS:
                    status = client.policy_exemptions.delete(scope, name, cls=response_status, **request_id_kwargs())
                elif kind == ASSIGNMENTS:
                    status = client.policy_assignments.delete_by_id(resource_id.lstrip("/"), cls=response_status,
                                                                    **request_id_kwargs())
                else:
                    raise PermanentError(f"kvguard never deletes policy definitions ({resource_id})")
        except HttpResponseError:
            return False
        return status == 200

    def list_at_scope(self, scope: str, resource_type: str) -> list[Mapping[str, Any]]:
        """The exemptions or assignments that apply to a vault (`atScope()`: at it and inherited
        from above it), with ARM's own (REST) names; another type, or a scope that is not a vault,
        lists nothing here."""
        wanted = resource_type.lower()
        vault = parse_vault_ref(scope)
        if wanted not in (EXEMPTIONS, ASSIGNMENTS) or vault is None or vault.resource_group is None:
            return []
        client = self._client(scope)
        operations: Any = client.policy_exemptions if wanted == EXEMPTIONS else client.policy_assignments
        with azure_errors(f"list {wanted.rsplit('/', 1)[-1]} at {scope}"):
            listing = operations.list_for_resource(vault.resource_group, "Microsoft.KeyVault", "", "vaults",
                                                   vault.name, filter="atScope()")
            return [item.serialize(keep_readonly=True) for item in listing]

    def close(self) -> None:
        self._clients.close()
