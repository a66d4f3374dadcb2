"""Activity Log administrative records in the REST shape of `eventtypes/management/values`
(api-version 2015-04-01), with this project's own ids, for the backfill tests."""

from __future__ import annotations

import json
from typing import Any

SUB = "4a3b2c1d-0e9f-4876-a5b4-c3d2e1f0a9b8"
TENANT = "1a2b3c4d-5e6f-4a7b-8c9d-e0f1a2b3c4d5"
INTRUDER = "2f3e4d5c-6b7a-4897-a6b5-c4d3e2f1a0b9"
FOREIGN_TENANT = "7d6c5b4a-3f2e-4d1c-8b0a-9f8e7d6c5b4a"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-apps/providers/Microsoft.KeyVault/vaults/kv-web-01"
PROVIDERS = {"microsoft.keyvault": "Microsoft.KeyVault", "microsoft.authorization": "Microsoft.Authorization"}


def record(
    event_id: str,
    operation: str,
    status: str,
    time: str,
    *,
    resource: str = VAULT,
    correlation: str | None = None,
    caller: str = INTRUDER,
    tenant: str = TENANT,
    properties: dict[str, Any] | None = None,
    category: str = "Administrative",
) -> dict[str, Any]:
    provider = operation.split("/", 1)[0]
    return {
        "authorization": {"action": operation, "scope": resource},
        "caller": caller,
        "channels": "Operation",
        "claims": {"oid": caller, "tid": tenant, "appid": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
                   "http://schemas.microsoft.com/identity/claims/identityprovider": f"https://sts.windows.net/{tenant}/"},
        "correlationId": correlation or f"corr-{event_id}",
        "description": "",
        "eventDataId": event_id,
        "eventName": {"value": "EndRequest" if status != "Started" else "BeginRequest"},
        "category": {"value": category, "localizedValue": category},
        "eventTimestamp": time,
        "httpRequest": {"clientRequestId": f"req-{event_id}", "clientIpAddress": "203.0.113.9", "method": "PUT"},
        "id": f"{resource}/events/{event_id}/ticks/1",
        "level": "Informational",
        "operationId": f"op-{event_id}",
        "operationName": {"value": operation, "localizedValue": operation},
        "resourceGroupName": "rg-apps",
        "resourceProviderName": {"value": PROVIDERS.get(provider.lower(), provider), "localizedValue": provider},
        "resourceType": {"value": operation.rsplit("/", 1)[0]},
        "resourceId": resource,
        "status": {"value": status, "localizedValue": status},
        "subStatus": {"value": "Created" if status == "Succeeded" else ""},
        "submissionTimestamp": time,
        "subscriptionId": SUB,
        "tenantId": tenant,
        "properties": properties or {},
    }


ASSIGNMENT_GUID = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"


def role_assignment_records(when: str, assignment_guid: str = ASSIGNMENT_GUID) -> list[dict[str, Any]]:
    """The Started record (with the request body) and the Succeeded one of one role assignment."""
    assignment = f"{VAULT}/providers/Microsoft.Authorization/roleAssignments/{assignment_guid}"
    body = json.dumps({"Id": assignment_guid, "Properties": {
        "PrincipalId": INTRUDER, "PrincipalType": "User", "Scope": VAULT,
        "RoleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{SECRETS_USER}",
    }})
    op = "Microsoft.Authorization/roleAssignments/write"
    return [
        record("ra-started", op, "Started", when, resource=assignment, correlation="corr-ra",
               properties={"requestbody": body}),
        record("ra-succeeded", op, "Succeeded", when.replace(":00Z", ":04Z"), resource=assignment,
               correlation="corr-ra", properties={"statusCode": "Created", "serviceRequestId": "s-1"}),
    ]
