"""The VaultGateway on Azure Resource Manager, through azure-mgmt-keyvault.

Vaults are read as the raw ARM JSON (camelCase, every field ARM returned, unknown ones included)
and parsed by `VaultConfig.from_arm`, never through the SDK's models, so what kvguard judges is
exactly what ARM said. The SDK is imported when a client is first needed, not when this module is
imported: a Functions cold start should not pay for it before the first event.

Errors: a vault that does not exist (404 `ResourceNotFound` or `ResourceGroupNotFound`) is `None`
for `get` and `VaultNotFoundError` for writes; every other failure is a `TransientError` or a
`PermanentError` by the rule in `kvguard.adapters.azure_clients` (throttling, 5xx and connection
failures that outlive the SDK's own retries are transient; 400, 403, 414, other 404s and an answer
that is not a JSON object are permanent).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from kvguard.adapters.azure_clients import (
    ARM_ENDPOINT,
    SubscriptionClients,
    azure_errors,
    is_not_found,
    raw_object,
    shorten,
)
from kvguard.client_request import request_id_kwargs
from kvguard.ids import VaultRef, parse_vault_ref
from kvguard.ports import PermanentError
from kvguard.vault import AccessPolicy, VaultConfig

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.keyvault import KeyVaultManagementClient

# The reads this gateway makes (get, list_vaults, and the re-reads around a write); the infra grants
# them with kvguard's remediation role. The writes are declared by the handlers that plan them.
READ_PERMISSIONS = ("Microsoft.KeyVault/vaults/read", "Microsoft.KeyVault/managedHSMs/read")


class VaultNotFoundError(LookupError):
    """The vault a write was aimed at does not exist (any more)."""


def _keyvault_client(*args: Any, **kwargs: Any) -> KeyVaultManagementClient:
    from azure.mgmt.keyvault import KeyVaultManagementClient

    return KeyVaultManagementClient(*args, **kwargs)


def _raw_json_or_none(pipeline_response: Any, deserialized: Any, headers: Any) -> Any:
    """As `raw_object`, for a read that ARM may answer with 204 and no body (a Managed HSM's GET
    does, for an HSM that is not there)."""
    if pipeline_response.http_response.status_code == 204:
        return None
    return raw_object(pipeline_response, deserialized, headers)


class ArmVaultGateway:
    """Key Vault's management plane. One SDK client per subscription, made on first use."""

    def __init__(
        self,
        credential: TokenCredential,
        endpoint: str = ARM_ENDPOINT,
        **client_kwargs: Any,
    ) -> None:
        """`client_kwargs` go to every KeyVaultManagementClient (e.g. `connection_verify`,
        `credential_scopes` or `api_version` for a sovereign cloud); the retry settings
        (`retry_total`, `retry_backoff_factor`, `retry_backoff_max`, defaults in SubscriptionClients)
        bound how long a call may wait on throttling before it gives up with a TransientError."""
        self._clients: SubscriptionClients[KeyVaultManagementClient] = SubscriptionClients(
            _keyvault_client, credential, endpoint, **client_kwargs
        )

    def __repr__(self) -> str:
        return f"ArmVaultGateway(endpoint={self._clients.endpoint!r})"

    def client(self, subscription_id: str) -> KeyVaultManagementClient:
        """The cached client for a subscription (ids compared case-insensitively)."""
        return self._clients(subscription_id)

    def get(self, vault_id: str) -> VaultConfig | None:
        """A Key Vault through `vaults.get`, a Managed HSM (a vault of kind `hsm`) through
        `managed_hsms.get`: the same raw ARM JSON, parsed the same way."""
        from azure.core.exceptions import ResourceNotFoundError

        ref, group = _locate(vault_id)
        client = self.client(ref.subscription_id)
        try:
            with azure_errors(f"get {_what(ref)} {ref.name}", answers=is_not_found):
                body: Any = (client.managed_hsms.get(group, ref.name, cls=_raw_json_or_none) if ref.kind == "hsm"
                             else client.vaults.get(group, ref.name, cls=raw_object))
        except ResourceNotFoundError:
            return None
        return _vault(body) if body is not None else None

    def update(self, vault_id: str, properties: Mapping[str, Any]) -> VaultConfig:
        from azure.core.exceptions import ResourceNotFoundError

        ref, group = _locate(vault_id)
        patch = {"properties": dict(properties)}
        if ref.kind == "hsm":
            return self._update_hsm(vault_id, patch)
        vaults = self.client(ref.subscription_id).vaults
        try:
            with azure_errors(f"update vault {ref.name}", answers=is_not_found):
                body = vaults.update(group, ref.name, cast(Any, patch), cls=raw_object, **request_id_kwargs())
        except ResourceNotFoundError as exc:
            raise VaultNotFoundError(f"vault {ref.id} not found") from exc
        return _vault(body)

    def _update_hsm(self, hsm_id: str, patch: Mapping[str, Any]) -> VaultConfig:
        """A Managed HSM's PATCH is a long-running operation: waited for, then the HSM re-read.
        Only a rule the policy opts in reaches here, with the right granted (README, "Opt-in rights")."""
        from azure.core.exceptions import ResourceNotFoundError

        ref, group = _locate(hsm_id)
        hsms = self.client(ref.subscription_id).managed_hsms
        try:
            with azure_errors(f"update managed HSM {ref.name}", answers=is_not_found):
                hsms.begin_update(group, ref.name, cast(Any, patch), **request_id_kwargs()).result()
        except ResourceNotFoundError as exc:
            raise VaultNotFoundError(f"managed HSM {ref.id} not found") from exc
        after = self.get(hsm_id)
        if after is None:
            raise VaultNotFoundError(f"managed HSM {ref.id} disappeared after its update")
        return after

    def remove_access_policy(self, vault_id: str, entry: AccessPolicy) -> VaultConfig:
        """A targeted `accessPolicies/remove`: only `entry`'s permissions, only for its principal,
        so that a concurrent legitimate change to other entries is never lost."""
        return self._update_access_policy(vault_id, entry, "remove")

    def add_access_policy(self, vault_id: str, entry: AccessPolicy) -> VaultConfig:
        """A targeted `accessPolicies/add` (a revert giving back what the baseline had explicitly,
        `kvguard undo`): ARM merges `entry`'s permissions into its principal's entry and leaves
        every other entry alone."""
        return self._update_access_policy(vault_id, entry, "add")

    def _update_access_policy(self, vault_id: str, entry: AccessPolicy, kind: str) -> VaultConfig:
        from azure.core.exceptions import ResourceNotFoundError

        ref, group = _locate(vault_id)
        arm_entry = entry.to_arm()
        if not arm_entry["permissions"] or not arm_entry["tenantId"]:
            # Nothing to write, or ARM needs the tenant of the entry: read the vault first.
            current = self.get(vault_id)
            if current is None:
                raise VaultNotFoundError(f"vault {ref.id} not found")
            if not arm_entry["permissions"]:
                return current
            arm_entry["tenantId"] = current.tenant_id
        parameters = {"properties": {"accessPolicies": [arm_entry]}}
        vaults = self.client(ref.subscription_id).vaults
        try:
            with azure_errors(f"{kind} access policy on vault {ref.name}", answers=is_not_found):
                vaults.update_access_policy(group, ref.name, kind, cast(Any, parameters), **request_id_kwargs())
        except ResourceNotFoundError as exc:
            raise VaultNotFoundError(f"vault {ref.id} not found") from exc
        after = self.get(vault_id)
        if after is None:
            raise VaultNotFoundError(f"vault {ref.id} disappeared after the access policy {kind}")
        return after

    def list_vaults(self, subscription_id: str) -> list[VaultConfig]:
        """The subscription's Key Vaults, then its Managed HSMs (vaults of kind `hsm`)."""
        client = self.client(subscription_id)
        with azure_errors(f"list vaults of subscription {subscription_id}", role="Reader"):
            vaults = [_vault(_wire_json(vault)) for vault in client.vaults.list_by_subscription()]
        with azure_errors(f"list managed HSMs of subscription {subscription_id}", role="Reader"):
            return vaults + [_vault(_wire_json(hsm)) for hsm in client.managed_hsms.list_by_subscription()]

    def close(self) -> None:
        self._clients.close()


def _wire_json(model: Any) -> dict[str, Any]:
    """A listed vault as ARM sent it (a paged call has no `cls` hook that sees the body). The
    models of azure-mgmt-keyvault 14 are mappings over the wire JSON, so `as_dict()` keeps ARM's
    camelCase names and the fields the SDK does not know; the msrest models of 10.x–13.x returned
    snake_case from the same call, which is why requirements.txt admits 14.x only."""
    body = model.as_dict()
    if not isinstance(body, dict) or "properties" not in body:
        raise TypeError(f"listed vault is not in ARM's wire shape (keys {sorted(body)[:6]}): check the SDK version")
    return body


def _vault(body: Any) -> VaultConfig:
    """ARM's answer parsed as a vault; an object that is no vault (no id, a field of the wrong
    type) is a permanent failure naming the field: the same GET would answer the same."""
    try:
        return VaultConfig.from_arm(body)
    except ValueError as error:
        raise PermanentError(f"ARM's answer is not a vault: {shorten(str(error))}") from error


def _what(ref: VaultRef) -> str:
    return "managed HSM" if ref.kind == "hsm" else "vault"


def _locate(vault_id: str) -> tuple[VaultRef, str]:
    """The vault's parts and its resource group; ValueError for anything but a vault id."""
    ref = parse_vault_ref(vault_id)
    if ref is None or ref.resource_group is None:
        raise ValueError(f"not a Key Vault resource id: {vault_id!r}")
    return ref, ref.resource_group
