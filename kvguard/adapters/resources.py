"""The ResourceGateway on Azure Resource Manager for the resources beside a vault: its diagnostic
settings, the locks over it, its (or a Managed HSM's) private endpoint connections, its
subscription's Defender plan (the `KeyVaults` pricing), its keys (read through azure-mgmt-keyvault's
`keys` operations; kvguard never writes a key), its Network Security Perimeter configurations, and
the access rules and associations of a perimeter.

Each is read, written and listed as raw ARM JSON by a thin call (`send_request`) through the ARM
pipeline of the azure-mgmt-keyvault client (azure-mgmt-core's: the same credential policy,
retries and logging as every SDK call), at an API version pinned per resource type below: one
path for all these types, and every field ARM returned kept, as kvguard judges resources by their
wire JSON, never by SDK models (azure-mgmt-monitor 7.x has no diagnostic-settings operations).

Errors follow `kvguard.adapters.azure_clients`: a resource that is not there (404
`ResourceNotFound`) is None for `get` and False for `delete`; throttling and 5xx after the SDK's
own retries are transient; other failures, and a type this gateway does not read, are permanent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from kvguard.adapters.azure_clients import (
    ARM_ENDPOINT,
    SubscriptionClients,
    azure_errors,
    is_not_found,
    raw_object,
    require_object,
)
from kvguard.client_request import request_id_kwargs
from kvguard.ids import parse_vault_ref, subscription_of
from kvguard.ports import PermanentError, ResourceGateway
from kvguard.resources import key_vaults_pricing_id

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.keyvault import KeyVaultManagementClient

def _keyvault_client(*args: Any, **kwargs: Any) -> KeyVaultManagementClient:
    from azure.mgmt.keyvault import KeyVaultManagementClient

    return KeyVaultManagementClient(*args, **kwargs)


# The reads of the further surfaces' resource types (DESIGN.md, "Further surfaces"), whichever
# adapter makes them: kvguard's custom role holds these and no write of them (the handlers that
# write them are opt-in: README, "Opt-in rights").
SURFACE_READ_PERMISSIONS = (
    "Microsoft.Authorization/policyExemptions/read",
    "Microsoft.Authorization/policyAssignments/read",
    "Microsoft.Authorization/policyDefinitions/read",
    "Microsoft.Authorization/policySetDefinitions/read",
    "Microsoft.Authorization/denyAssignments/read",
    "Microsoft.Resources/deploymentStacks/read",
    "Microsoft.Authorization/roleEligibilityScheduleRequests/read",
    "Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/read",
    "Microsoft.Network/networkSecurityPerimeters/resourceAssociations/read",
    "Microsoft.EventGrid/eventSubscriptions/read",
    "Microsoft.EventGrid/systemTopics/read",
    "Microsoft.KeyVault/managedHSMs/read",
    "Microsoft.KeyVault/managedHSMs/privateEndpointConnections/read",
    "Microsoft.KeyVault/vaults/keys/read",
    "Microsoft.KeyVault/vaults/networkSecurityPerimeterConfigurations/read",
)
# The API version each resource type is read and written with (lower-cased type).
API_VERSIONS = {
    "microsoft.insights/diagnosticsettings": "2021-05-01-preview",
    "microsoft.authorization/locks": "2020-05-01",
    "microsoft.keyvault/vaults/privateendpointconnections": "2023-07-01",
    "microsoft.security/pricings": "2024-01-01",
    "microsoft.keyvault/managedhsms/privateendpointconnections": "2023-07-01",
    # A perimeter's access rules and associations (Microsoft.Network's NSP GA version), and a vault's
    # perimeter configurations (the first Key Vault version that has them; azure-mgmt-keyvault 14.x
    # offers no operations for them, nor for the perimeter's types the thin call reads the same way).
    "microsoft.network/networksecurityperimeters/profiles/accessrules": "2024-07-01",
    "microsoft.network/networksecurityperimeters/resourceassociations": "2024-07-01",
    "microsoft.keyvault/vaults/networksecurityperimeterconfigurations": "2024-04-01-preview",
}
# Where each type is listed for a scope (the vault's id), and with which query.
_LISTINGS = {
    "microsoft.insights/diagnosticsettings": ("/providers/Microsoft.Insights/diagnosticSettings", {}),
    "microsoft.authorization/locks": ("/providers/Microsoft.Authorization/locks", {"$filter": "atScope()"}),
    "microsoft.keyvault/vaults/privateendpointconnections": ("/privateEndpointConnections", {}),
    "microsoft.keyvault/managedhsms/privateendpointconnections": ("/privateEndpointConnections", {}),
    "microsoft.keyvault/vaults/networksecurityperimeterconfigurations": ("/networkSecurityPerimeterConfigurations", {}),
}
KEYS = "microsoft.keyvault/vaults/keys"


def resource_type_of_id(resource_id: str) -> str:
    """The type of a resource beside a vault, from its id alone."""
    lowered = resource_id.lower()
    if "/providers/microsoft.insights/diagnosticsettings/" in lowered:
        return "microsoft.insights/diagnosticsettings"
    if "/providers/microsoft.authorization/locks/" in lowered:
        return "microsoft.authorization/locks"
    if "/providers/microsoft.security/pricings/" in lowered:
        return "microsoft.security/pricings"
    if "/privateendpointconnections/" in lowered and "/providers/microsoft.keyvault/vaults/" in lowered:
        return "microsoft.keyvault/vaults/privateendpointconnections"
    if "/privateendpointconnections/" in lowered and "/providers/microsoft.keyvault/managedhsms/" in lowered:
        return "microsoft.keyvault/managedhsms/privateendpointconnections"
    if _key_parts(resource_id) is not None:
        return KEYS
    if "/networksecurityperimeterconfigurations/" in lowered and "/providers/microsoft.keyvault/vaults/" in lowered:
        return "microsoft.keyvault/vaults/networksecurityperimeterconfigurations"
    if "/providers/microsoft.network/networksecurityperimeters/" in lowered:
        if "/profiles/" in lowered and "/accessrules/" in lowered:
            return "microsoft.network/networksecurityperimeters/profiles/accessrules"
        if "/resourceassociations/" in lowered:
            return "microsoft.network/networksecurityperimeters/resourceassociations"
    raise PermanentError(f"no reader of the resource {resource_id} is configured")


class ArmResourceGateway:
    """Diagnostic settings, locks, private endpoint connections, the Defender plan, a vault's
    perimeter configurations and a perimeter's access rules and associations, by id."""

    def __init__(self, credential: TokenCredential, endpoint: str = ARM_ENDPOINT, **client_kwargs: Any) -> None:
        """`client_kwargs` go to every client, as for ArmVaultGateway."""
        self._clients: SubscriptionClients[KeyVaultManagementClient] = SubscriptionClients(
            _keyvault_client, credential, endpoint, **client_kwargs
        )

    def __repr__(self) -> str:
        return f"ArmResourceGateway(endpoint={self._clients.endpoint!r})"

    def get(self, resource_id: str) -> Mapping[str, Any] | None:
        from azure.core.exceptions import HttpResponseError

        if resource_type_of_id(resource_id) == KEYS:
            return self._get_key(resource_id)
        try:
            return self._call("GET", resource_id, f"get {resource_id}", answers=is_not_found)
        except HttpResponseError:
            return None

    def _get_key(self, key_id: str) -> Mapping[str, Any] | None:
        """A vault's key through azure-mgmt-keyvault's `keys.get`, as the raw ARM JSON."""
        from azure.core.exceptions import ResourceNotFoundError

        subscription, group, vault, name = _key_parts(key_id) or ("", "", "", "")
        try:
            with azure_errors(f"get key {name} of vault {vault}", answers=is_not_found):
                key: Mapping[str, Any] = self._clients(subscription).keys.get(group, vault, name, cls=raw_object)
                return key
        except ResourceNotFoundError:
            return None

    def put(self, resource_id: str, document: Mapping[str, Any]) -> Mapping[str, Any]:
        if resource_type_of_id(resource_id) == KEYS:
            raise PermanentError(f"kvguard never writes keys ({resource_id}): KV-KEY-01 is alert-only")
        body = {k: v for k, v in document.items() if k.lower() not in ("id", "type", "etag", "systemdata")}
        answer = self._call("PUT", resource_id, f"put {resource_id}", body=body)
        return answer or self.get(resource_id) or {}

    def delete(self, resource_id: str) -> bool:
        from azure.core.exceptions import HttpResponseError

        if resource_type_of_id(resource_id) == KEYS:
            raise PermanentError(f"kvguard never deletes keys ({resource_id})")
        try:
            status = self._status("DELETE", resource_id, f"delete {resource_id}")
        except HttpResponseError:
            return False
        return status != 204

    def list_at_scope(self, scope: str, resource_type: str) -> list[Mapping[str, Any]]:
        wanted = resource_type.lower()
        subscription = subscription_of(scope) or ""
        if wanted == "microsoft.security/pricings":
            plan = self.get(key_vaults_pricing_id(subscription))
            return [plan] if plan is not None else []
        if wanted == KEYS:
            return self._list_keys(scope)
        if wanted not in _LISTINGS:
            raise PermanentError(f"no reader of {resource_type} is configured")
        suffix, query = _LISTINGS[wanted]
        url = self._url(scope.rstrip("/") + suffix, API_VERSIONS[wanted], query)
        found: list[Mapping[str, Any]] = []
        while url:
            page = self._send("GET", url, f"list {resource_type} at {scope}", subscription)
            found += [item for item in page.get("value") or [] if isinstance(item, dict)]
            url = page.get("nextLink") or ""
        return found

    def _list_keys(self, vault_id: str) -> list[Mapping[str, Any]]:
        """A vault's keys through `keys.list`, each in ARM's wire shape (the models of
        azure-mgmt-keyvault 14 are mappings over the wire JSON)."""
        ref = parse_vault_ref(vault_id)
        if ref is None or ref.resource_group is None or ref.kind != "vault":
            raise PermanentError(f"keys are listed for a Key Vault, not {vault_id}")
        with azure_errors(f"list keys of vault {ref.name}"):
            listed = self._clients(ref.subscription_id).keys.list(ref.resource_group, ref.name)
            return [key.as_dict() for key in listed]

    def close(self) -> None:
        self._clients.close()

    # --- the thin calls ---------------------------------------------------------------------

    def _url(self, path: str, api_version: str, query: Mapping[str, str] | None = None) -> str:
        from urllib.parse import urlencode

        return f"{self._clients.endpoint}{path}?" + urlencode({"api-version": api_version, **(query or {})})

    def _call(self, method: str, resource_id: str, what: str, *, body: Any = None,
              answers: Any = lambda error: False) -> dict[str, Any] | None:
        url = self._url(resource_id, API_VERSIONS[resource_type_of_id(resource_id)])
        return self._send(method, url, what, subscription_of(resource_id) or "", body=body, answers=answers)

    def _status(self, method: str, resource_id: str, what: str) -> int:
        url = self._url(resource_id, API_VERSIONS[resource_type_of_id(resource_id)])
        response = self._request(method, url, what, subscription_of(resource_id) or "", answers=is_not_found)
        return int(response.status_code)

    def _send(self, method: str, url: str, what: str, subscription: str, *, body: Any = None,
              answers: Any = lambda error: False) -> dict[str, Any]:
        response = self._request(method, url, what, subscription, body=body, answers=answers)
        if response.status_code in (202, 204) or not response.text():
            return {}
        with azure_errors(what):
            payload = response.json()
        return require_object(payload, f"ARM's answer to {method} {urlsplit(url).path}")

    def _request(self, method: str, url: str, what: str, subscription: str, *, body: Any = None,
                 answers: Any = lambda error: False) -> Any:
        from azure.core.exceptions import HttpResponseError, ODataV4Format
        from azure.core.rest import HttpRequest

        request = HttpRequest(method, url, json=body) if body is not None else HttpRequest(method, url)
        with azure_errors(what, answers=answers):
            response = self._clients(subscription).send_request(request, **request_id_kwargs())
            if response.status_code >= 400:
                raise HttpResponseError(response=response, error_format=ODataV4Format)  # ARM's {"error": …}
        return response


def _key_parts(key_id: str) -> tuple[str, str, str, str] | None:
    """(subscription, resource group, vault, key) of a key's id (`{vault id}/keys/{name}`), or None."""
    ref = parse_vault_ref(key_id)
    rest = key_id.strip().rstrip("/")[len(ref.id):].split("/") if ref is not None else []
    if ref is None or ref.resource_group is None or ref.kind != "vault" or len(rest) != 3 or rest[1].lower() != "keys":
        return None
    return ref.subscription_id, ref.resource_group, ref.name, rest[2]



# Through azure-mgmt-authorization: roleAssignments, roleDefinitions, roleEligibilityScheduleRequests
# and denyAssignments; through azure-mgmt-resource-deploymentstacks: deployment stacks.
_AUTHORIZATION = ("/providers/microsoft.authorization/role", "/providers/microsoft.authorization/denyassignments")
_AUTHORIZATION_TYPES = ("microsoft.authorization/role", "microsoft.authorization/denyassignments")
_STACKS = "/providers/microsoft.resources/deploymentstacks/"
_STACKS_TYPE = "microsoft.resources/deploymentstacks"


class _RoleReader(Protocol):
    """What kvguard does with roles: read, list and delete; the pipeline never writes one (only
    `kvguard undo` puts back an assignment kvguard removed, with the operator's credential)."""

    def get(self, resource_id: str) -> Mapping[str, Any] | None: ...

    def delete(self, resource_id: str) -> bool: ...

    def create_role_assignment(self, resource_id: str, properties: Mapping[str, Any]) -> Mapping[str, Any]: ...

    def list_at_scope(self, scope: str, resource_type: str) -> list[Mapping[str, Any]]: ...


_POLICY = "/providers/microsoft.authorization/policy"  # exemptions, assignments, (set) definitions
_POLICY_TYPES = "microsoft.authorization/policy"
_EVENT_GRID = "/providers/microsoft.eventgrid/"  # system topics and event subscriptions


class RoutedResourceGateway:
    """One ResourceGateway over its readers: role assignments and definitions, eligibility
    requests and deny assignments go through azure-mgmt-authorization (`AuthorizationGateway`),
    deployment stacks through azure-mgmt-resource-deploymentstacks (`DeploymentStackReader`, when
    given), Azure Policy through azure-mgmt-resource (`PolicyGateway`, when given), system topics and
    event subscriptions through azure-mgmt-eventgrid (`EventGridResources`, when given), every other
    resource beside the vaults through the thin ARM calls above. The pipeline sees one port; each
    SDK stays in its adapter."""

    def __init__(self, authorization: _RoleReader, others: ResourceGateway, *,
                 stacks: ResourceGateway | None = None, policy: ResourceGateway | None = None,
                 event_grid: ResourceGateway | None = None) -> None:
        self._authorization = authorization
        self._others = others
        self._stacks = stacks
        self._policy = policy
        self._event_grid = event_grid

    def __repr__(self) -> str:
        return (f"RoutedResourceGateway({self._authorization!r}, {self._others!r}, "
                f"stacks={self._stacks!r}, policy={self._policy!r}, event_grid={self._event_grid!r})")

    def _for_id(self, resource_id: str) -> _RoleReader | ResourceGateway:
        lowered = resource_id.lower()
        if self._stacks is not None and _STACKS in lowered:
            return self._stacks
        if self._policy is not None and _POLICY in lowered:
            return self._policy
        if self._event_grid is not None and _EVENT_GRID in lowered:
            return self._event_grid
        return self._authorization if any(a in lowered for a in _AUTHORIZATION) else self._others

    def _for_type(self, resource_type: str) -> _RoleReader | ResourceGateway:
        lowered = resource_type.lower()
        if self._stacks is not None and lowered == _STACKS_TYPE:
            return self._stacks
        if self._policy is not None and lowered.startswith(_POLICY_TYPES):
            return self._policy
        if self._event_grid is not None and lowered.startswith("microsoft.eventgrid/"):
            return self._event_grid
        return self._authorization if lowered.startswith(_AUTHORIZATION_TYPES) else self._others

    def get(self, resource_id: str) -> Mapping[str, Any] | None:
        return self._for_id(resource_id).get(resource_id)

    def put(self, resource_id: str, document: Mapping[str, Any]) -> Mapping[str, Any]:
        reader = self._for_id(resource_id)
        if reader is self._authorization:
            raise PermanentError(f"kvguard never writes role assignments or definitions ({resource_id})")
        return reader.put(resource_id, document)  # type: ignore[union-attr]

    def delete(self, resource_id: str) -> bool:
        return self._for_id(resource_id).delete(resource_id)

    def create_role_assignment(self, resource_id: str, properties: Mapping[str, Any]) -> Mapping[str, Any]:
        """`kvguard undo`'s put-back of an assignment kvguard removed (see `AuthorizationGateway`)."""
        return self._authorization.create_role_assignment(resource_id, properties)

    def list_at_scope(self, scope: str, resource_type: str) -> list[Mapping[str, Any]]:
        return self._for_type(resource_type).list_at_scope(scope, resource_type)
