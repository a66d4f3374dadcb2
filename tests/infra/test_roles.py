"""Least privilege: exactly these roles, by their built-in role definition GUIDs, each assignment
named by guid() (idempotent), each GUID a commented variable, and no broad role anywhere."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from tests.infra.bicep_tree import INFRA, Tree, accessor, body, function, loop, resources, variable

KEY_VAULT_CONTRIBUTOR = "f25e0fa2-a7c8-4377-a976-54943a77a395"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
SECURITY_ASSESSMENT_CONTRIBUTOR = "612c2aa1-cb24-443b-ac28-3ab7272de6f5"
EVENTGRID_DATA_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
MONITORING_CONTRIBUTOR = "749f88d5-cbae-40b8-bcfc-e573ddc772fa"

EXPECTED: dict[str, dict[str, str | None]] = {
    # kvguard's identity, on its own resources.
    "modules/rbac.bicep": {
        STORAGE_BLOB_DATA_OWNER: "storage",
        STORAGE_TABLE_DATA_CONTRIBUTOR: "storage",
        STORAGE_QUEUE_DATA_CONTRIBUTOR: "storage",
        EVENTGRID_DATA_SENDER: "topic",
        MONITORING_METRICS_PUBLISHER: "appInsights",
    },
    # kvguard's identity, in every protected subscription (subscription scope).
    "modules/rbac-subscription.bicep": {
        KEY_VAULT_CONTRIBUTOR: None,
        READER: None,
        SECURITY_ASSESSMENT_CONTRIBUTOR: None,
        MONITORING_CONTRIBUTOR: None,
    },
    # The system topic's identity (and optionally the operator), for dead letters.
    "modules/deadletter-access.bicep": {
        STORAGE_BLOB_DATA_CONTRIBUTOR: "storage",
    },
}

BROAD = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",  # Owner
    "b24988ac-6180-42a0-ab88-20f7382dd24c",  # Contributor
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",  # User Access Administrator
    "00482a5a-887f-4fb3-b363-3b7fe8e74483",  # Key Vault Administrator (data plane)
}

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def assigned(tree: Tree) -> list[tuple[str, Any, Mapping[str, Any]]]:
    """(role GUID, scope, assignment body) for every role assignment in the file, loops expanded."""
    found = []
    for entry in resources(tree, "Microsoft.Authorization/roleAssignments").values():
        assignment = body(entry)
        definition = function(assignment["properties"]["roleDefinitionId"])
        assert definition is not None and definition["type"] == "subscription_resource_id"
        assert definition["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
        role = definition["parameters"]["resource_name_1"]
        spec = loop(entry)
        if spec is not None and role == spec["detail"]["item_name"]:
            roles = [variable(tree, r) for r in variable(tree, spec["detail"]["array_name"])]
        else:
            roles = [variable(tree, role)]
        found += [(r, assignment.get("scope"), assignment) for r in roles]
    return found


def test_each_role_is_assigned_by_its_guid_at_its_scope(trees: dict[str, Tree]) -> None:
    for name, expected in EXPECTED.items():
        roles = assigned(trees[name])
        assert Counter(r for r, _, _ in roles) == Counter(list(expected)), name
        for role, scope, _ in roles:
            assert scope == expected[role], f"{name}: {role} assigned at {scope}"


def test_assignments_are_named_by_guid_of_scope_principal_and_role(trees: dict[str, Tree]) -> None:
    for name in EXPECTED:
        for role, _, assignment in assigned(trees[name]):
            naming = function(assignment["name"])
            assert naming is not None and naming["type"] == "guid", f"{name}: {role} not named by guid()"
            parts = list(naming["parameters"].values())
            assert "principalId" in parts, f"{name}: {role} name ignores the principal"
            assert assignment["properties"]["principalId"] == "principalId"
            assert len(parts) == 3


def test_no_other_file_assigns_roles_and_no_role_is_broad(trees: dict[str, Tree]) -> None:
    for name, tree in trees.items():
        if name not in EXPECTED:
            assert not resources(tree, "Microsoft.Authorization/roleAssignments"), f"{name} assigns roles"
    everywhere = "\n".join(p.read_text() for p in INFRA.rglob("*.bicep"))
    for role in BROAD:
        assert role not in everywhere


def test_role_guids_are_commented_variables(trees: dict[str, Tree]) -> None:
    for name in EXPECTED:
        lines = (INFRA / name).read_text().splitlines()
        guid_vars = [i for i, line in enumerate(lines) if re.match(r"^var \w+ = '[0-9a-f-]{36}'$", line)]
        assert len(guid_vars) == len(EXPECTED[name]), name
        for i in guid_vars:
            assert lines[i - 1].startswith("// "), f"{name}: no comment above {lines[i]}"
            value = lines[i].split("'")[1]
            assert GUID.match(value), value


def test_the_app_identity_gets_its_roles_in_every_protected_subscription(trees: dict[str, Tree]) -> None:
    protect = trees["modules/protect.bicep"]
    roles = protect["modules"]["roles"]
    assert roles["detail"]["path"] == "rbac-subscription.bicep"
    assert body(roles)["params"]["principalId"] == "identityPrincipalId"
    rbac = trees["main.bicep"]["modules"]["rbac"]
    assert accessor(body(rbac)["params"]["principalId"]) == "identity.outputs.principalId"


# What each role grants, from Azure's built-in role definitions (actions and dataActions).
GRANTS: dict[str, tuple[str, ...]] = {
    KEY_VAULT_CONTRIBUTOR: ("Microsoft.KeyVault/*",),
    SECURITY_ASSESSMENT_CONTRIBUTOR: ("Microsoft.Security/assessments/*",),
    EVENTGRID_DATA_SENDER: ("Microsoft.EventGrid/topics/events/send/action",),
    READER: ("*/read",),
    MONITORING_CONTRIBUTOR: ("Microsoft.Insights/diagnosticSettings/*",),
}


def opt_in_handlers() -> set[str]:
    """Handlers that only rules opting in use (`remediate: true` in the policy): the operator
    grants their rights, the deployment does not."""
    from kvguard.catalog import HANDLERS, RULES

    return {h for h in HANDLERS if h in {r.remediation for r in RULES.values()}
            and all(not r.remediate_by_default for r in RULES.values() if r.remediation == h)}


def test_every_handler_permission_is_granted_by_a_role_the_infra_assigns(trees: dict[str, Tree]) -> None:
    from fnmatch import fnmatchcase

    from kvguard.catalog import HANDLERS

    roles = {role for tree in trees.values() for role, _, _ in assigned(tree)}
    patterns = [pattern for role in roles for pattern in GRANTS.get(role, ())]
    ungranted = [
        f"{handler.id}: {handler.permission}"
        for handler in HANDLERS.values()
        if not handler.permission.startswith("none") and handler.id not in opt_in_handlers()
        and not any(fnmatchcase(handler.permission, pattern) for pattern in patterns)
    ]
    assert not ungranted, f"handlers whose Azure permission no assigned role grants: {ungranted}"
    assert {"revert_access_policy", "restore_network", "raise_defender_alert", "publish_detection"} <= set(HANDLERS)


def test_opt_in_rights_are_documented_and_not_granted(trees: dict[str, Tree]) -> None:
    from fnmatch import fnmatchcase

    from kvguard.catalog import HANDLERS

    roles = {role for tree in trees.values() for role, _, _ in assigned(tree)}
    patterns = [pattern for role in roles for pattern in GRANTS.get(role, ())]
    assert {"restore_lock", "restore_defender_plan"} <= opt_in_handlers()
    readme = (INFRA.parent / "README.md").read_text(encoding="utf-8")
    for handler_id in ("restore_lock", "restore_defender_plan"):
        permission = HANDLERS[handler_id].permission
        assert not any(fnmatchcase(permission, p) for p in patterns), f"{handler_id} is granted by default"
        assert permission in readme, f"{handler_id}'s right {permission} is not documented in the README"
