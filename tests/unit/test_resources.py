"""Scopes of resources beside the vaults, and the events that name them (kvguard.resources)."""

from __future__ import annotations

import pytest

from kvguard.events import VaultEvent, parse
from kvguard.resources import covered_vaults, covers, resource_change, scope_of

SUB = "/subscriptions/0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
RG = f"{SUB}/resourceGroups/rg-data"
KV = f"{RG}/providers/Microsoft.KeyVault/vaults/kv-data"
ASSIGNMENT = "/providers/Microsoft.Authorization/roleAssignments/0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"


@pytest.mark.parametrize(("resource_id", "scope"), [
    (f"{KV}{ASSIGNMENT}", KV),
    (f"{KV}/secrets/db-password{ASSIGNMENT}", f"{KV}/secrets/db-password"),
    (f"{RG}{ASSIGNMENT}", RG),
    (f"{SUB}{ASSIGNMENT}", SUB),
    (f"/providers/Microsoft.Management/managementGroups/mg{ASSIGNMENT}",
     "/providers/Microsoft.Management/managementGroups/mg"),
    (f"{KV}/providers/Microsoft.Insights/diagnosticSettings/audit", KV),
    (f"{KV}/privateEndpointConnections/pe-1", KV),
    (f"{SUB}/providers/Microsoft.Security/pricings/KeyVaults", SUB),
])
def test_scope_of_each_resource_id_form(resource_id: str, scope: str) -> None:
    assert scope_of(resource_id) == scope


@pytest.mark.parametrize(("scope", "covered"), [
    (KV, True),
    (KV.upper().replace("/SUBSCRIPTIONS/", "/subscriptions/"), True),
    (f"{KV}/secrets/db-password", True),
    (RG.replace("resourceGroups", "resourcegroups"), True),
    (SUB, True),
    ("/providers/Microsoft.Management/managementGroups/any", True),
    (f"{RG}/providers/Microsoft.KeyVault/vaults/kv-dat", False),  # a prefix, not a segment
    (f"{RG}/providers/Microsoft.KeyVault/vaults/kv-data2", False),
    (f"{SUB}/resourceGroups/rg-data-eu", False),
    ("/subscriptions/9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", False),
])
def test_a_scope_covers_a_vault_segment_wise_and_case_insensitively(scope: str, covered: bool) -> None:
    assert covers(scope, KV) is covered


def test_covered_vaults_keeps_the_given_order() -> None:
    other = f"{SUB}/resourceGroups/rg-other/providers/Microsoft.KeyVault/vaults/kv-other"
    assert covered_vaults(SUB, [other, KV]) == [other, KV]
    assert covered_vaults(RG, [other, KV]) == [KV]


def test_unwatched_operations_are_no_resource_change() -> None:
    assert resource_change("Microsoft.Storage/storageAccounts/write", f"{RG}/providers/x/y/z") is None
    change = resource_change("microsoft.authorization/ROLEASSIGNMENTS/delete", f"{KV}{ASSIGNMENT}/")
    assert change is not None
    assert (change.id, change.type, change.action) == (f"{KV}{ASSIGNMENT}", "Microsoft.Authorization/roleAssignments",
                                                       "delete")
    assert change.operation == "Microsoft.Authorization/roleAssignments/delete"


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_a_role_assignment_event_is_parsed_in_both_schemas(schema: str) -> None:
    resource_id = f"{RG}{ASSIGNMENT}"
    data = {"resourceUri": resource_id, "operationName": "Microsoft.Authorization/roleAssignments/write",
            "status": "Succeeded", "claims": {"oid": "7E8F9A0B-1C2D-4E3F-8A4B-5C6D7E8F9A0B"}}
    raw = ({"id": "e1", "eventType": "Microsoft.Resources.ResourceWriteSuccess", "subject": resource_id,
            "eventTime": "2026-11-27T10:00:00Z", "data": data} if schema == "eventgrid" else
           {"id": "e1", "type": "Microsoft.Resources.ResourceWriteSuccess", "source": SUB, "specversion": "1.0",
            "subject": resource_id, "time": "2026-11-27T10:00:00Z", "data": data})
    [event] = parse(raw)
    assert isinstance(event, VaultEvent)
    assert event.vault is None and event.kind == "other"
    assert event.resource is not None and event.resource.id == resource_id and event.resource.scope == RG
    assert event.caller.object_id == "7e8f9a0b-1c2d-4e3f-8a4b-5c6d7e8f9a0b"


def test_an_assignment_inside_a_vault_names_the_vault_too() -> None:
    [event] = parse({"id": "e1", "eventType": "Microsoft.Resources.ResourceDeleteSuccess", "subject": "x",
                     "eventTime": "2026-11-27T10:00:00Z",
                     "data": {"resourceUri": f"{KV}/secrets/s{ASSIGNMENT}",
                              "operationName": "Microsoft.Authorization/roleAssignments/delete"}})
    assert isinstance(event, VaultEvent)
    assert event.vault is not None and event.vault.id == KV
    assert event.resource is not None and event.resource.action == "delete"
