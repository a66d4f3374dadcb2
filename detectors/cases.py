"""The vocabulary rule cases are written in: a well-configured vault, grants, callers, subnets.

Only the rules' case functions and the tests import it, never the event path. The default vault
is deliberately hardened (firewall closed, soft delete and purge protection on), so each case
states only the one thing it changes. `tests/cases.py` turns a `Case` into the `Context` a rule sees.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kvguard.vault import VaultConfig, diff

TENANT = "4d2c9a1e-6b7f-4c3d-9e8a-1f2b3c4d5e6f"
OTHER_TENANT = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
SUBSCRIPTION = "6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
VAULT_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-payments/providers/Microsoft.KeyVault/vaults/kv-payments"
APP_TEAM = "0b1c2d3e-4f50-4617-8829-3a4b5c6d7e8f"
INTRUDER = "e7d6c5b4-a392-4817-9605-f4e3d2c1b0a9"
OPERATOR = "31415926-5358-4979-8323-846264338327"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # a Wednesday, 10:00 UTC


def grant(object_id: str, tenant: str = TENANT, application_id: str | None = None,
          **permissions: list[str]) -> dict[str, Any]:
    """An access-policy entry in ARM's shape: grant(APP_TEAM, secrets=["get"])."""
    entry: dict[str, Any] = {"tenantId": tenant, "objectId": object_id, "permissions": dict(permissions)}
    if application_id:
        entry["applicationId"] = application_id
    return entry


BASE_PROPERTIES: dict[str, Any] = {
    "tenantId": TENANT,
    "sku": {"family": "A", "name": "standard"},
    "accessPolicies": [grant(APP_TEAM, secrets=["get"], keys=["get", "wrapKey", "unwrapKey"])],
    "enableRbacAuthorization": False,
    "enableSoftDelete": True,
    "softDeleteRetentionInDays": 90,
    "enablePurgeProtection": True,
    "enabledForDeployment": False,
    "enabledForTemplateDeployment": False,
    "enabledForDiskEncryption": False,
    "publicNetworkAccess": "Disabled",
    "networkAcls": {"defaultAction": "Deny", "bypass": "None", "ipRules": [], "virtualNetworkRules": []},
    "provisioningState": "Succeeded",
    "vaultUri": "https://kv-payments.vault.azure.net/",
}


def vault(tags: Mapping[str, str] | None = None, **properties: Any) -> dict[str, Any]:
    """The default vault's ARM GET body with some properties replaced (None removes one)."""
    props = copy.deepcopy(BASE_PROPERTIES)
    for name, value in properties.items():
        if value is None:
            props.pop(name, None)
        else:
            props[name] = value
    return {
        "id": VAULT_ID,
        "name": "kv-payments",
        "type": "Microsoft.KeyVault/vaults",
        "location": "westeurope",
        "tags": dict(tags or {}),
        "properties": props,
    }


def with_grants(*entries: dict[str, Any], **properties: Any) -> dict[str, Any]:
    """The default vault with the app team's grant plus `entries`."""
    return vault(accessPolicies=[*BASE_PROPERTIES["accessPolicies"], *entries], **properties)


def acls(default_action: str = "Deny", bypass: str = "None", ip_rules: tuple[str, ...] = (),
         subnets: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "defaultAction": default_action,
        "bypass": bypass,
        "ipRules": [{"value": ip} for ip in ip_rules],
        "virtualNetworkRules": [{"id": s} for s in subnets],
    }


def granted_marks(before: Mapping[str, Any], after: Mapping[str, Any], at: datetime) -> dict[str, datetime]:
    """The `recent_grants` the pipeline would remember after the change `before` -> `after` at `at`:
    built from the real diff, so history cases speak the same marks the rules compare."""
    return dict.fromkeys(diff(VaultConfig.from_arm(before), VaultConfig.from_arm(after)).grant_marks(), at)


FOREIGN_SUBSCRIPTION = "c0ffee00-1234-4abc-9def-0123456789ab"
# The default vault after its deletion, as a purge event names it.
DELETED_VAULT_ID = (
    f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.KeyVault/locations/westeurope/deletedVaults/kv-payments"
)


def subnet(subscription: str = SUBSCRIPTION, vnet: str = "vnet-payments", name: str = "snet-app") -> str:
    """A subnet's resource id, as a virtual network rule of a vault firewall names it."""
    return (f"/subscriptions/{subscription}/resourceGroups/rg-network/providers/Microsoft.Network"
            f"/virtualNetworks/{vnet}/subnets/{name}")


# --- role assignments and role definitions (KV-RBAC-*) ---------------------------------------------

SUBSCRIPTION_ID = f"/subscriptions/{SUBSCRIPTION}"
RESOURCE_GROUP_ID = f"{SUBSCRIPTION_ID}/resourceGroups/rg-payments"
CUSTOM_ROLE_ID = (f"{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions"
                  "/c0c0a000-1111-4222-8333-444455556666")
ROLES = {
    "kv-admin": "00482a5a-887f-4fb3-b363-3b7fe8e74483",
    "secrets-user": "4633458b-17de-408a-b874-0445c86b69e6",
    "crypto-user": "12338af0-0e69-4776-bea7-57ae8d297424",
    "crypto-release-user": "08bbd89e-9f13-488c-ac41-acfcb10c90ab",
    "kv-reader": "21090545-7ca7-4776-b22c-e363652d74d2",
    "data-access-admin": "8b54135c-b56d-4d72-a534-26097cfdc8d8",
    "owner": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
    "contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "rbac-admin": "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
    "kv-contributor": "f25e0fa2-a7c8-4377-a976-54943a77a395",
    "reader": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
}


def assignment(role: str, scope: str = VAULT_ID, scope_suffix: str = "", principal: str = INTRUDER) -> dict[str, Any]:
    """A role assignment's ARM GET body: `role` a key of ROLES, or "custom" for CUSTOM_ROLE_ID."""
    at = scope + scope_suffix
    definition = CUSTOM_ROLE_ID if role == "custom" else \
        f"{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/{ROLES[role]}"
    name = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{role}|{at}|{principal}"))
    return {
        "id": f"{at}/providers/Microsoft.Authorization/roleAssignments/{name}",
        "name": name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {"roleDefinitionId": definition, "principalId": principal, "principalType": "User",
                       "scope": at},
    }


def custom_role(actions: list[str] | None = None, data_actions: list[str] | None = None) -> dict[str, Any]:
    """A custom role definition's ARM GET body (CUSTOM_ROLE_ID)."""
    return {
        "id": CUSTOM_ROLE_ID,
        "name": CUSTOM_ROLE_ID.rsplit("/", 1)[-1],
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {"roleName": "payments operator", "type": "CustomRole",
                       "permissions": [{"actions": actions or [], "notActions": [],
                                        "dataActions": data_actions or [], "notDataActions": []}],
                       "assignableScopes": [SUBSCRIPTION_ID]},
    }


# kvguard's own identity and deployment (KV-SELF-*).
KVGUARD_IDENTITY = "5ca1ab1e-0000-4000-8000-00000000c0de"
EVENT_SUBSCRIPTION_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-kvguard/providers/Microsoft.EventGrid"
    "/systemTopics/evgst-kvguard/eventSubscriptions/kvguard-prod"
)
FUNCTION_APP_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-kvguard/providers/Microsoft.Web/sites/func-kvguard"
APP_CONFIG_WRITE_ID = f"{FUNCTION_APP_ID}/config/appsettings"
OWN_DEPLOYMENT = {"own_resource_ids": [EVENT_SUBSCRIPTION_ID, FUNCTION_APP_ID]}

# --- resources beside the vault: diagnostic settings, locks, private endpoints, the Defender plan
WORKSPACE = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-soc/providers/"
             "Microsoft.OperationalInsights/workspaces/law-soc")
OTHER_WORKSPACE = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-soc/providers/"
                   "Microsoft.OperationalInsights/workspaces/law-soc-archive")
FOREIGN_WORKSPACE = (f"/subscriptions/{FOREIGN_SUBSCRIPTION}/resourceGroups/rg-x/providers/"
                     "Microsoft.OperationalInsights/workspaces/law-x")


def diagnostic_setting(name: str = "audit", logs: tuple[dict[str, Any], ...] | None = None,
                       metrics_enabled: bool = True, **destinations: str) -> dict[str, Any]:
    """A diagnostic setting of the default vault: audit logs to the SOC workspace unless told otherwise."""
    return {
        "id": f"{VAULT_ID}/providers/Microsoft.Insights/diagnosticSettings/{name}",
        "name": name,
        "type": "Microsoft.Insights/diagnosticSettings",
        "properties": {
            **(destinations or {"workspaceId": WORKSPACE}),
            "logs": list(logs if logs is not None else ({"categoryGroup": "audit", "enabled": True},)),
            "metrics": [{"category": "AllMetrics", "enabled": metrics_enabled}],
        },
    }


def lock(level: str = "CanNotDelete", scope: str = VAULT_ID, name: str = "do-not-delete",
         notes: str = "payments vault") -> dict[str, Any]:
    return {
        "id": f"{scope}/providers/Microsoft.Authorization/locks/{name}",
        "name": name,
        "type": "Microsoft.Authorization/locks",
        "properties": {"level": level, "notes": notes},
    }


def endpoint_connection(status: str = "Approved", subscription: str = SUBSCRIPTION,
                        name: str = "pe-app") -> dict[str, Any]:
    endpoint = (f"/subscriptions/{subscription}/resourceGroups/rg-net/providers/"
                f"Microsoft.Network/privateEndpoints/{name}")
    return {
        "id": f"{VAULT_ID}/privateEndpointConnections/{name}",
        "name": name,
        "type": "Microsoft.KeyVault/vaults/privateEndpointConnections",
        "properties": {
            "privateEndpoint": {"id": endpoint},
            "privateLinkServiceConnectionState": {"status": status, "description": "", "actionsRequired": "None"},
            "provisioningState": "Succeeded",
        },
    }


def pricing(tier: str = "Standard", sub_plan: str | None = "PerKeyVault",
            subscription: str = SUBSCRIPTION) -> dict[str, Any]:
    properties: dict[str, Any] = {"pricingTier": tier}
    if sub_plan is not None:
        properties["subPlan"] = sub_plan
    return {
        "id": f"/subscriptions/{subscription}/providers/Microsoft.Security/pricings/KeyVaults",
        "name": "KeyVaults",
        "type": "Microsoft.Security/pricings",
        "properties": properties,
    }


# --- deny settings and PIM eligibility (KV-DENY-01, KV-PIM-01) ---------------------------------

EVERYONE = "00000000-0000-0000-0000-000000000000"
DENY_ID = f"{RESOURCE_GROUP_ID}/providers/Microsoft.Authorization/denyAssignments/d3a11ed0-5e7f-4a8b-9c0d-1e2f3a4b5c6d"
STACK_ID = f"{RESOURCE_GROUP_ID}/providers/Microsoft.Resources/deploymentStacks/payments-stack"


def deny_assignment(actions: list[str], scope: str = RESOURCE_GROUP_ID, principals: list[str] | None = None,
                    exclude: list[str] | None = None, not_actions: list[str] | None = None,
                    child_scopes: bool = True) -> dict[str, Any]:
    """A deny assignment's ARM GET body (api-version 2022-04-01) at `scope`; `principals` default
    Everyone (the system-defined all-zero id), `exclude` the excluded principals' object ids."""
    def principal(object_id: str) -> dict[str, str]:
        return {"id": object_id, "type": "SystemDefined" if object_id == EVERYONE else "ServicePrincipal"}

    name = DENY_ID.rsplit("/", 1)[-1]
    return {
        "id": f"{scope}/providers/Microsoft.Authorization/denyAssignments/{name}",
        "name": name,
        "type": "Microsoft.Authorization/denyAssignments",
        "properties": {
            "denyAssignmentName": "payments freeze", "description": "", "scope": scope,
            "permissions": [{"actions": actions, "notActions": not_actions or [], "dataActions": [],
                             "notDataActions": []}],
            "doNotApplyToChildScopes": not child_scopes,
            "principals": [principal(p) for p in (principals or [EVERYONE])],
            "excludePrincipals": [principal(p) for p in exclude or []],
            "isSystemProtected": True,
        },
    }


def stack(mode: str, managed: list[str] | None = None, excluded_principals: list[str] | None = None,
          excluded_actions: list[str] | None = None, child_scopes: bool = False) -> dict[str, Any]:
    """A deployment stack's ARM GET body (api-version 2025-07-01) managing `managed` (default the
    vault) with deny settings of `mode` (none, denyDelete, denyWriteAndDelete)."""
    return {
        "id": STACK_ID,
        "name": STACK_ID.rsplit("/", 1)[-1],
        "type": "Microsoft.Resources/deploymentStacks",
        "properties": {
            "actionOnUnmanage": {"resources": "detach", "resourceGroups": "detach"},
            "denySettings": {"mode": mode, "excludedPrincipals": excluded_principals or [],
                             "excludedActions": excluded_actions or [], "applyToChildScopes": child_scopes},
            "resources": [{"id": r, "status": "managed", "denyStatus": mode} for r in managed or [VAULT_ID]],
            "provisioningState": "succeeded",
        },
    }


def eligibility_request(role: str, scope: str = VAULT_ID, request_type: str = "AdminAssign",
                        principal: str = INTRUDER, status: str = "Provisioned") -> dict[str, Any]:
    """A role eligibility schedule request's ARM GET body (api-version 2020-10-01): `role` a key
    of ROLES, or "custom" for CUSTOM_ROLE_ID."""
    definition = CUSTOM_ROLE_ID if role == "custom" else \
        f"{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/{ROLES[role]}"
    name = str(uuid.uuid5(uuid.NAMESPACE_URL, f"eligible|{role}|{scope}|{principal}|{request_type}"))
    return {
        "id": f"{scope}/providers/Microsoft.Authorization/roleEligibilityScheduleRequests/{name}",
        "name": name,
        "type": "Microsoft.Authorization/roleEligibilityScheduleRequests",
        "properties": {
            "scope": scope, "roleDefinitionId": definition, "principalId": principal, "principalType": "User",
            "requestType": request_type, "status": status, "requestorId": OPERATOR,
            "scheduleInfo": {"startDateTime": "2026-11-25T10:00:00Z",
                             "expiration": {"type": "AfterDuration", "duration": "P365D"}},
            "justification": "on-call",
        },
    }


KEY_ID = f"{VAULT_ID}/keys/cmk-payments"
KEY_EXPIRY = 1_830_297_600  # 2028-01-01T00:00:00Z


def rotation_policy(*actions: tuple[str, str, str], expiry: str | None = "P2Y") -> dict[str, Any]:
    """A key's rotation policy in ARM's shape: rotation_policy(("Rotate", "timeAfterCreate", "P90D"))."""
    policy: dict[str, Any] = {"lifetimeActions": [
        {"trigger": {trigger: duration}, "action": {"type": action}} for action, trigger, duration in actions]}
    if expiry is not None:
        policy["attributes"] = {"expiryTime": expiry}
    return policy


ROTATE_YEARLY = rotation_policy(("Rotate", "timeAfterCreate", "P1Y"), ("Notify", "timeBeforeExpiry", "P30D"))


def vault_key_doc(rotation: Mapping[str, Any] | None = ROTATE_YEARLY, exp: int | None = KEY_EXPIRY,
                  exportable: bool | None = None, release: Mapping[str, Any] | None = None,
                  **attributes: Any) -> dict[str, Any]:
    """A key of the default vault as ARM's `vaults/keys` GET returns it (None leaves a part out)."""
    attrs: dict[str, Any] = {"enabled": True, "created": 1_764_000_000, "updated": 1_764_000_000,
                             "recoveryLevel": "Recoverable", **attributes}
    if exp is not None:
        attrs["exp"] = exp
    if exportable is not None:
        attrs["exportable"] = exportable
    properties: dict[str, Any] = {"attributes": attrs, "kty": "RSA-HSM", "keySize": 3072,
                                  "keyOps": ["wrapKey", "unwrapKey"],
                                  "keyUri": "https://kv-payments.vault.azure.net/keys/cmk-payments"}
    if rotation is not None:
        properties["rotationPolicy"] = copy.deepcopy(dict(rotation))
    if release is not None:
        properties["release_policy"] = copy.deepcopy(dict(release))
    return {"id": KEY_ID, "name": "cmk-payments", "type": "Microsoft.KeyVault/vaults/keys",
            "location": "westeurope", "properties": properties}


def release_policy(authority: str = "https://sharedeus.eus.attest.azure.net") -> dict[str, Any]:
    """A key release policy (the data is the base64url of the policy document, as ARM returns it)."""
    import base64
    import json

    document = {"version": "1.0.0", "anyOf": [{"authority": authority, "allOf": [
        {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"}]}]}
    data = base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")
    return {"contentType": "application/json; charset=utf-8", "data": data}


HSM_ID = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-payments/providers/Microsoft.KeyVault/managedHSMs"
          "/hsm-payments")


def managed_hsm(**properties: Any) -> dict[str, Any]:
    """A Managed HSM's ARM GET body (API 2025-05-01), hardened like the default vault, with some
    properties replaced (None removes one)."""
    props: dict[str, Any] = {
        "tenantId": TENANT, "initialAdminObjectIds": [OPERATOR], "enableSoftDelete": True,
        "softDeleteRetentionInDays": 90, "enablePurgeProtection": True, "createMode": "default",
        "publicNetworkAccess": "Disabled",
        "networkAcls": {"defaultAction": "Deny", "bypass": "None", "ipRules": [], "virtualNetworkRules": []},
        "regions": [{"name": "westeurope", "isPrimary": True, "provisioningState": "Succeeded"}],
        "hsmUri": "https://hsm-payments.managedhsm.azure.net/", "provisioningState": "Succeeded",
        "statusMessage": "The Managed HSM is provisioned and ready to use.",
        "securityDomainProperties": {"activationStatus": "Active", "activationStatusMessage": "Active"},
    }
    for name, value in properties.items():
        if value is None:
            props.pop(name, None)
        else:
            props[name] = value
    return {"id": HSM_ID, "name": "hsm-payments", "type": "Microsoft.KeyVault/managedHSMs", "location": "westeurope",
            "sku": {"family": "B", "name": "Standard_B1"}, "tags": {}, "properties": props}


# Azure Policy: a built-in Key Vault definition assigned on the subscription, and exemptions from it.
KEY_VAULT_POLICY_ID = "/providers/Microsoft.Authorization/policyDefinitions/0b60c0b2-2dc2-4e1c-b5c9-abbed971de53"
KEY_VAULT_INITIATIVE_ID = f"{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/policySetDefinitions/kv-baseline"
POLICY_ASSIGNMENT_ID = f"{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/policyAssignments/kv-deletion-protection"


def policy_assignment(enforcement: str = "Default", not_scopes: tuple[str, ...] = (),
                      scope: str = SUBSCRIPTION_ID, definition: str = KEY_VAULT_POLICY_ID,
                      name: str = "kv-deletion-protection") -> dict[str, Any]:
    return {
        "id": f"{scope}/providers/Microsoft.Authorization/policyAssignments/{name}",
        "name": name,
        "type": "Microsoft.Authorization/policyAssignments",
        "location": "westeurope",
        "properties": {"displayName": "Key vaults should have deletion protection enabled",
                       "policyDefinitionId": definition, "scope": scope, "notScopes": list(not_scopes),
                       "enforcementMode": enforcement, "parameters": {"effect": {"value": "Deny"}}},
    }


def exemption(scope: str = RESOURCE_GROUP_ID, name: str = "payments-waiver", category: str = "Waiver",
              assignment_id: str = POLICY_ASSIGNMENT_ID, references: tuple[str, ...] = (),
              expires: str | None = "2026-12-31T00:00:00Z",
              selectors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {"policyAssignmentId": assignment_id, "exemptionCategory": category,
                                  "displayName": "payments migration", "policyDefinitionReferenceIds": list(references)}
    if expires is not None:
        properties["expiresOn"] = expires
    if selectors is not None:
        properties["resourceSelectors"] = selectors
    return {
        "id": f"{scope}/providers/Microsoft.Authorization/policyExemptions/{name}",
        "name": name,
        "type": "Microsoft.Authorization/policyExemptions",
        "properties": properties,
    }


def policy_definition(policy_rule: dict[str, Any], definition_id: str = KEY_VAULT_POLICY_ID,
                      mode: str = "Indexed") -> dict[str, Any]:
    return {"id": definition_id, "name": definition_id.rsplit("/", 1)[-1],
            "type": "Microsoft.Authorization/policyDefinitions",
            "properties": {"mode": mode, "policyType": "BuiltIn", "policyRule": policy_rule}}


# The rule of the built-in "Key vaults should have deletion protection enabled" (as published).
KEY_VAULT_POLICY_RULE: dict[str, Any] = {
    "if": {"allOf": [
        {"field": "type", "equals": "Microsoft.KeyVault/vaults"},
        {"not": {"field": "Microsoft.KeyVault/vaults/createMode", "equals": "recover"}},
        {"anyOf": [{"field": "Microsoft.KeyVault/vaults/enablePurgeProtection", "exists": "false"},
                   {"field": "Microsoft.KeyVault/vaults/enablePurgeProtection", "notEquals": "true"}]},
    ]},
    "then": {"effect": "[parameters('effect')]"},
}


# Network Security Perimeters (KV-NSP-01): a perimeter in the network team's subscription with one
# profile the vault is associated with, and the vault's configuration that says so.
PERIMETER_ID = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-net/providers/"
                "Microsoft.Network/networkSecurityPerimeters/nsp-payments")
PERIMETER_GUID = "5e1f0c2a-7b3d-4e6f-9a8b-0c1d2e3f4a5b"


def access_rule(prefixes: tuple[str, ...] = ("10.20.0.0/16",), subscriptions: tuple[str, ...] = (),
                direction: str = "Inbound", name: str = "allow-corp", profile: str = "default") -> dict[str, Any]:
    return {
        "id": f"{PERIMETER_ID}/profiles/{profile}/accessRules/{name}",
        "name": name,
        "type": "Microsoft.Network/networkSecurityPerimeters/profiles/accessRules",
        "properties": {"provisioningState": "Succeeded", "direction": direction,
                       "addressPrefixes": list(prefixes),
                       "subscriptions": [{"id": f"/subscriptions/{s}"} for s in subscriptions],
                       "fullyQualifiedDomainNames": [], "emailAddresses": [], "phoneNumbers": []},
    }


def perimeter_association(mode: str = "Enforced", name: str = "kv-payments-assoc",
                          profile: str = "default") -> dict[str, Any]:
    return {
        "id": f"{PERIMETER_ID}/resourceAssociations/{name}",
        "name": name,
        "type": "Microsoft.Network/networkSecurityPerimeters/resourceAssociations",
        "properties": {"privateLinkResource": {"id": VAULT_ID}, "profile": {"id": f"{PERIMETER_ID}/profiles/{profile}"},
                       "accessMode": mode, "provisioningState": "Succeeded", "hasProvisioningIssues": "no"},
    }


def perimeter_configuration(mode: str = "Enforced", rules: tuple[dict[str, Any], ...] | None = None,
                            profile: str = "default", association: str = "kv-payments-assoc") -> dict[str, Any]:
    """The vault's `networkSecurityPerimeterConfigurations` entry, as Key Vault's provider reports it."""
    listed = [access_rule()] if rules is None else list(rules)
    name = f"{PERIMETER_GUID}.{association}"
    return {
        "id": f"{VAULT_ID}/networkSecurityPerimeterConfigurations/{name}",
        "name": name,
        "type": "Microsoft.KeyVault/vaults/networkSecurityPerimeterConfigurations",
        "properties": {
            "provisioningState": "Succeeded", "provisioningIssues": [],
            "networkSecurityPerimeter": {"id": PERIMETER_ID, "perimeterGuid": PERIMETER_GUID, "location": "westeurope"},
            "resourceAssociation": {"name": association, "accessMode": mode},
            "profile": {"name": profile, "accessRulesVersion": 1,
                        "accessRules": [{"name": r["name"], "properties": {
                            k: v for k, v in r["properties"].items() if k != "provisioningState"}} for r in listed],
                        "diagnosticSettingsVersion": 0, "enabledLogCategories": []},
        },
    }


# Event subscriptions on the vault's events (KV-EG-01).
VAULT_TOPIC_ID = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-payments/providers/"
                  "Microsoft.EventGrid/systemTopics/kv-payments-events")
SOC_HOOK = "https://hooks.soc.contoso.example/api/keyvault"
FOREIGN_HOOK = "https://collector.attacker.example/in"


def vault_topic() -> dict[str, Any]:
    return {"id": VAULT_TOPIC_ID, "name": "kv-payments-events", "type": "Microsoft.EventGrid/systemTopics",
            "location": "westeurope",
            "properties": {"source": VAULT_ID, "topicType": "Microsoft.KeyVault.vaults",
                           "provisioningState": "Succeeded"}}


def event_subscription(webhook: str | None = FOREIGN_HOOK, resource: str | None = None, name: str = "feed",
                       on_vault: bool = False, filter_types: tuple[str, ...] = ()) -> dict[str, Any]:
    """A subscription on the vault's system topic (or, `on_vault`, on the vault itself) to a webhook
    (as a GET returns it: `endpointBaseUrl`) or to a resource (an event hub, a queue)."""
    if resource is not None:
        destination: dict[str, Any] = {"endpointType": "EventHub", "properties": {"resourceId": resource}}
    else:
        destination = {"endpointType": "WebHook", "properties": {"endpointBaseUrl": webhook,
                                                                 "maxEventsPerBatch": 1}}
    scope = f"{VAULT_ID}/providers/Microsoft.EventGrid" if on_vault else VAULT_TOPIC_ID
    return {
        "id": f"{scope}/eventSubscriptions/{name}",
        "name": name,
        "type": "Microsoft.EventGrid/eventSubscriptions" if on_vault
        else "Microsoft.EventGrid/systemTopics/eventSubscriptions",
        "properties": {"topic": VAULT_ID if on_vault else VAULT_TOPIC_ID, "provisioningState": "Succeeded",
                       "destination": destination, "eventDeliverySchema": "EventGridSchema",
                       "filter": {"includedEventTypes": list(filter_types) or None}},
    }
