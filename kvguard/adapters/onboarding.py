"""The reads (and the one write) of `kvguard doctor` through Azure Resource Manager: the
`KeyVaults` Defender pricing (azure-mgmt-security), kvguard's role assignments and their role
definitions (azure-mgmt-authorization 4.x), and each vault's diagnostic settings
(azure-mgmt-monitor 6.x: 7.0 dropped the diagnostic settings operations).

Every answer is turned back into its ARM JSON (REST names: the raw body, or
`serialize(keep_readonly=True)` for listed items), so the judgements in `kvguard.doctor` read what
ARM said whatever the SDK's models call it. The SDKs are imported when the first client is needed.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from kvguard.adapters.activity_log import monitor_client
from kvguard.adapters.azure_clients import ARM_ENDPOINT, SubscriptionClients, azure_errors, is_not_found, require_object
from kvguard.ids import parse_vault_ref

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.authorization import AuthorizationManagementClient
    from azure.mgmt.monitor import MonitorManagementClient
    from azure.mgmt.security import SecurityCenter

PRICING = "KeyVaults"  # Defender for Key Vault's plan (the write-up's `default` is the legacy name)
SUB_PLAN = "PerKeyVault"


def _security_client(*args: Any, **kwargs: Any) -> SecurityCenter:
    from azure.mgmt.security import SecurityCenter

    return SecurityCenter(*args, **kwargs)


def _authorization_client(*args: Any, **kwargs: Any) -> AuthorizationManagementClient:
    from azure.mgmt.authorization import AuthorizationManagementClient

    return AuthorizationManagementClient(*args, **kwargs)


def _raw_json(pipeline_response: Any, deserialized: Any, headers: Any) -> Any:
    """The `cls` hook of an SDK call: the response body exactly as ARM sent it (the older SDKs'
    transport responses have `text()`, not `json()`)."""
    return json.loads(pipeline_response.http_response.text())


class ArmOnboardingReader:
    """What the doctor reads, one SDK client per subscription and service, made on first use."""

    def __init__(self, credential: TokenCredential, endpoint: str = ARM_ENDPOINT, **client_kwargs: Any) -> None:
        self._security: SubscriptionClients[SecurityCenter] = SubscriptionClients(
            _security_client, credential, endpoint, **client_kwargs)
        self._authorization: SubscriptionClients[AuthorizationManagementClient] = SubscriptionClients(
            _authorization_client, credential, endpoint, **client_kwargs)
        self._monitor: SubscriptionClients[MonitorManagementClient] = SubscriptionClients(
            monitor_client, credential, endpoint, **client_kwargs)

    def get_pricing(self, subscription_id: str) -> dict[str, Any] | None:
        """The subscription's `KeyVaults` pricing, None when ARM has none."""
        from azure.core.exceptions import ResourceNotFoundError

        operations = self._security(subscription_id).pricings
        try:
            with azure_errors(f"get the {PRICING} pricing of subscription {subscription_id}",
                              answers=lambda e: e.status_code == 404, role="Security Reader"):
                body = operations.get(f"subscriptions/{subscription_id}", PRICING, cls=_raw_json)
        except ResourceNotFoundError:
            return None
        return require_object(body, f"{PRICING} pricing")

    def enable_defender(self, subscription_id: str) -> dict[str, Any]:
        """Set the `KeyVaults` pricing to Standard (per-vault sub-plan); needs Security Admin."""
        from azure.mgmt.security.models import Pricing

        operations = self._security(subscription_id).pricings
        with azure_errors(f"set the {PRICING} pricing of subscription {subscription_id} to Standard",
                          role="Security Admin"):
            body = operations.update(f"subscriptions/{subscription_id}", PRICING,
                                     Pricing(pricing_tier="Standard", sub_plan=SUB_PLAN), cls=_raw_json)
        return require_object(body, f"{PRICING} pricing")

    def role_definitions(self, subscription_id: str, principal_id: str) -> list[dict[str, Any]]:
        """The role definition of every assignment of `principal_id` that covers the subscription
        (at it or above it, also through a group: `assignedTo`)."""
        client = self._authorization(subscription_id)
        with azure_errors(f"list the role assignments of {principal_id} on subscription {subscription_id}",
                          role="Reader"):
            assignments = [a.serialize(keep_readonly=True) for a in client.role_assignments.list_for_scope(
                f"subscriptions/{subscription_id}", filter=f"assignedTo('{principal_id}')")]
        definitions: dict[str, dict[str, Any]] = {}
        for assignment in assignments:
            role_id = str((assignment.get("properties") or {}).get("roleDefinitionId") or "")
            if role_id and role_id.lower() not in definitions:
                with azure_errors(f"get role definition {role_id}", role="Reader"):
                    body = client.role_definitions.get_by_id(role_id.lstrip("/"), cls=_raw_json)
                definitions[role_id.lower()] = require_object(body, f"role definition {role_id}")
        return list(definitions.values())

    def diagnostic_settings(self, vault_id: str) -> list[dict[str, Any]]:
        """The vault's diagnostic settings (ARM JSON)."""
        ref = parse_vault_ref(vault_id)
        if ref is None:
            raise ValueError(f"not a vault id: {vault_id!r}")
        operations = self._monitor(ref.subscription_id).diagnostic_settings
        with azure_errors(f"list the diagnostic settings of {ref.name}", answers=is_not_found, role="Reader"):
            return [s.serialize(keep_readonly=True) for s in operations.list(vault_id.lstrip("/"))]

    def close(self) -> None:
        for clients in (self._security, self._authorization, self._monitor):
            clients.close()
