"""Least privilege: exactly these roles, by their built-in role definition GUIDs (and kvguard's one
custom role, holding only what its handlers and reads declare), each assignment named by guid()
(idempotent), each GUID a commented variable, no broad role anywhere, and nobody granted the right
to attach kvguard's identity to anything."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from tests.infra.bicep_tree import (
    INFRA,
    Tree,
    accessor,
    body,
    condition,
    function,
    loop,
    only_resource,
    resources,
    variable,
)

KEY_VAULT_CONTRIBUTOR = "f25e0fa2-a7c8-4377-a976-54943a77a395"
MANAGED_IDENTITY_OPERATOR = "f1a07417-d97a-45cb-824c-7a7467783830"
MANAGED_IDENTITY_CONTRIBUTOR = "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59"
# kvguard's custom remediation role, assigned by its GUID (a parameter: defined in role-definition.bicep).
REMEDIATOR = "remediatorRoleId"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
SECURITY_ASSESSMENT_CONTRIBUTOR = "612c2aa1-cb24-443b-ac28-3ab7272de6f5"
EVENTGRID_DATA_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
LOG_ANALYTICS_READER = "73c42c96-874c-492b-b04d-ab87d138a893"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
RBAC_ADMINISTRATOR = "f58310d9-a9f6-439a-9e8d-f62e7b41a168"

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
        REMEDIATOR: None,
        READER: None,
        SECURITY_ASSESSMENT_CONTRIBUTOR: None,
        RBAC_ADMINISTRATOR: None,  # with a condition: delete Key Vault data-role assignments only
    },
    # kvguard's identity, on the findings table's data collection rule (Logs Ingestion API).
    "modules/findings-log.bicep": {
        MONITORING_METRICS_PUBLISHER: "rule",
    },
    # kvguard's identity, on the workspace with the vaults' AuditEvent logs (blast radius, optional).
    "modules/audit-workspace-access.bicep": {
        LOG_ANALYTICS_READER: "workspace",
    },
    # kvguard's identity, on each resource group remediation is confined to (instead of the subscription).
    "modules/rbac-group.bicep": {
        REMEDIATOR: None,
    },
    # The system topic's identity (and optionally the operator), for dead letters.
    "modules/deadletter-access.bicep": {
        STORAGE_BLOB_DATA_CONTRIBUTOR: "deadLetterContainer",  # the container only, never the account
    },
}

BROAD = {
    KEY_VAULT_CONTRIBUTOR,  # Microsoft.KeyVault/*: replaced by the remediation role
    MANAGED_IDENTITY_OPERATOR,  # may attach kvguard's identity to a resource and act as kvguard
    MANAGED_IDENTITY_CONTRIBUTOR,
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
        assert len(guid_vars) == len([r for r in EXPECTED[name] if GUID.match(r)]), name
        for i in guid_vars:
            assert lines[i - 1].startswith("// "), f"{name}: no comment above {lines[i]}"
            value = lines[i].split("'")[1]
            assert GUID.match(value), value


def test_the_app_identity_gets_its_roles_in_every_protected_subscription(trees: dict[str, Tree]) -> None:
    protect = trees["modules/protect.bicep"]
    roles = protect["modules"]["roles"]
    assert roles["detail"]["path"] == "rbac-subscription.bicep"
    assert body(roles)["params"]["principalId"] == "identityPrincipalId"
    assert body(roles)["params"]["remediatorRoleId"] == "remediatorRoleId"
    main = body(trees["main.bicep"]["modules"]["protect"])["params"]
    assert accessor(main["remediatorRoleId"]) == "remediatorRole.outputs.roleId"
    rbac = trees["main.bicep"]["modules"]["rbac"]
    assert accessor(body(rbac)["params"]["principalId"]) == "identity.outputs.principalId"


def remediator_actions(trees: dict[str, Tree]) -> list[str]:
    """The actions of kvguard's custom role, as role-definition.bicep defines them."""
    tree = trees["modules/role-definition.bicep"]
    definition = body(only_resource(tree, "Microsoft.Authorization/roleDefinitions"))["properties"]
    (permissions,) = definition["permissions"]
    assert permissions["dataActions"] == [] and permissions["notDataActions"] == [] and permissions["notActions"] == []
    actions: list[str] = variable(tree, permissions["actions"])
    return actions


def declared_needs() -> set[str]:
    """Every Azure action kvguard's remediation handlers and its vault gateway declare, but the one
    the conditioned RBAC Administrator grants instead (roleAssignments/delete: see
    test_the_rbac_administrator_may_only_delete_key_vault_data_roles) and the opt-in handlers'
    rights, which the operator grants (README, "Opt-in rights")."""
    from kvguard.adapters.arm import READ_PERMISSIONS
    from kvguard.adapters.resources import SURFACE_READ_PERMISSIONS
    from kvguard.catalog import HANDLERS

    by_condition = {GRANTS[RBAC_ADMINISTRATOR][0]}
    declared = {h.permission for h in HANDLERS.values() if h.kind == "remediation" and h.id not in opt_in_handlers()}
    return declared - by_condition | set(READ_PERMISSIONS) | set(SURFACE_READ_PERMISSIONS)


def test_the_remediation_role_reads_the_further_surfaces_and_writes_none_of_them(trees: dict[str, Tree]) -> None:
    from kvguard.adapters.resources import SURFACE_READ_PERMISSIONS
    from kvguard.deployment import SURFACE_OPERATIONS

    actions = set(remediator_actions(trees))
    assert set(SURFACE_READ_PERMISSIONS) <= actions
    assert all(a.endswith("/read") for a in SURFACE_READ_PERMISSIONS)
    # Every type whose change kvguard watches on the surfaces subscription is read by the role.
    watched_types = {o.rsplit("/", 1)[0].lower() for o in SURFACE_OPERATIONS if not o.endswith("/action")}
    read_types = {a.rsplit("/", 1)[0].lower() for a in actions if a.endswith("/read")}
    assert watched_types <= read_types, sorted(watched_types - read_types)
    surface_types = watched_types | {"microsoft.authorization/policydefinitions",
                                     "microsoft.authorization/policysetdefinitions"}
    assert not [a for a in actions if not a.endswith("/read") and a.rsplit("/", 1)[0].lower() in surface_types]


def test_the_remediation_role_holds_exactly_the_declared_needs(trees: dict[str, Tree]) -> None:
    from fnmatch import fnmatchcase

    actions = remediator_actions(trees)
    assert len(actions) == len(set(actions))
    assert not [a for a in actions if "*" in a], "no wildcards: each action is one that something declares"
    undeclared = sorted(set(actions) - declared_needs())
    assert not undeclared, f"actions of the remediation role that no handler or read declares: {undeclared}"
    assert set(actions) == declared_needs()
    assert not [a for a in actions if fnmatchcase(a, "*/roleAssignments/*") or fnmatchcase(a, "*/assign/action")]


def test_the_remediation_role_is_defined_once_for_every_protected_subscription(trees: dict[str, Tree]) -> None:
    definitions = {name: resources(tree, "Microsoft.Authorization/roleDefinitions") for name, tree in trees.items()}
    assert {name for name, found in definitions.items() if found} == {"modules/role-definition.bicep"}
    main = trees["main.bicep"]
    role = main["modules"]["remediatorRole"]
    assert role["detail"]["path"] == "modules/role-definition.bicep"
    assert loop(role) is None and "scope" not in body(role), "defined once, in the deployment's subscription"
    assert body(role)["params"]["subscriptionIds"] == "subscriptionIds"
    tree = trees["modules/role-definition.bicep"]
    definition = body(only_resource(tree, "Microsoft.Authorization/roleDefinitions"))
    scopes = function(definition["properties"]["assignableScopes"])
    assert scopes is not None and scopes["type"] == "union"
    assert "protectedScopes" in scopes["parameters"].values()
    assert "for id in subscriptionIds: '/subscriptions/${id}'" in (INFRA / "modules/role-definition.bicep").read_text()
    assert function(definition["name"])["type"] == "guid"  # type: ignore[index]
    assert "${environmentName}" in definition["properties"]["roleName"], "role names are unique per tenant"


def test_remediation_rights_can_be_confined_to_resource_groups(trees: dict[str, Tree]) -> None:
    tree = trees["modules/rbac-subscription.bicep"]
    assert tree["parameters"]["resourceGroupNames"]["default"] == []
    at_subscription = tree["resources"]["remediator"]
    only_without_groups = {"type": "empty", "parameters": {"item_to_test": "resourceGroupNames"}}
    assert function(condition(at_subscription)) == only_without_groups
    in_groups = tree["modules"]["remediatorInGroups"]
    assert in_groups["detail"]["path"] == "rbac-group.bicep"
    assert loop(in_groups)["detail"] == {"item_name": "group", "array_name": "resourceGroupNames"}  # type: ignore[index]
    main = trees["main.bicep"]
    assert main["parameters"]["remediationResourceGroups"]["default"] == {}
    passed = body(trees["modules/protect.bicep"]["modules"]["roles"])["params"]["resourceGroupNames"]
    assert passed == "remediationResourceGroups"


def test_nobody_may_attach_kvguards_identity(trees: dict[str, Tree]) -> None:
    """Managed Identity Operator (or any role with userAssignedIdentities/*/assign/action) would let
    its holder attach kvguard's identity to a resource of theirs and act as kvguard."""
    from fnmatch import fnmatchcase

    assignments = [(name, role, scope) for name, tree in trees.items() for role, scope, _ in assigned(tree)]
    assert not [a for a in assignments if a[1] in (MANAGED_IDENTITY_OPERATOR, MANAGED_IDENTITY_CONTRIBUTOR)]
    assign = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"
    for name, tree in trees.items():
        for definition in resources(tree, "Microsoft.Authorization/roleDefinitions").values():
            for permissions in body(definition)["properties"]["permissions"]:
                actions = variable(tree, permissions["actions"])
                assert not [a for a in actions if fnmatchcase(assign, a) or "managedidentity" in a.lower()], name
    # No assignment of any role on the identity itself.
    identity_scopes = [a for a in assignments if a[2] in ("identity", "userAssignedIdentity")]
    assert identity_scopes == []
    assert not resources(trees["modules/identity.bicep"], "Microsoft.Authorization/roleAssignments")


# What each role grants, from Azure's built-in role definitions (actions and dataActions).
GRANTS: dict[str, tuple[str, ...]] = {
    SECURITY_ASSESSMENT_CONTRIBUTOR: ("Microsoft.Security/assessments/*",),
    EVENTGRID_DATA_SENDER: ("Microsoft.EventGrid/topics/events/send/action",),
    READER: ("*/read",),
    # as narrowed by its ABAC condition (test_the_rbac_administrator_may_only_delete_key_vault_data_roles)
    RBAC_ADMINISTRATOR: ("Microsoft.Authorization/roleAssignments/delete",),
}


# The opt-in handlers of the further surfaces and the rights each needs (DESIGN.md).
FURTHER_SURFACE_RIGHTS = {
    "remove_policy_exemption": ("Microsoft.Authorization/policyExemptions/delete",
                                "Microsoft.Authorization/policyExemptions/write"),
    "restore_policy_assignment": ("Microsoft.Authorization/policyAssignments/write",),
    "remove_perimeter_rule_source": ("Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/write",),
    "remove_event_subscription": ("Microsoft.EventGrid/eventSubscriptions/delete",),
}


def opt_in_handlers() -> set[str]:
    """Handlers that only rules opting in use (`remediate: true` in the policy): the operator
    grants their rights, the deployment does not."""
    from kvguard.catalog import HANDLERS, RULES

    return {h for h in HANDLERS if h in {r.remediation for r in RULES.values()}
            and all(not r.remediate_by_default for r in RULES.values() if r.remediation == h)}


def test_every_handler_permission_is_granted_by_a_role_the_infra_assigns(trees: dict[str, Tree]) -> None:
    from fnmatch import fnmatchcase

    from kvguard.adapters import arm, deployment
    from kvguard.catalog import HANDLERS

    roles = {role for tree in trees.values() for role, _, _ in assigned(tree)}
    grants = {**GRANTS, REMEDIATOR: tuple(remediator_actions(trees))}
    patterns = [pattern for role in roles for pattern in grants.get(role, ())]
    ungranted = [
        f"{handler.id}: {handler.permission}"
        for handler in HANDLERS.values()
        if not handler.permission.startswith("none") and handler.id not in opt_in_handlers()
        and not any(fnmatchcase(handler.permission, pattern) for pattern in patterns)
    ]
    assert not ungranted, f"handlers whose Azure permission no assigned role grants: {ungranted}"
    reads = [*arm.READ_PERMISSIONS, deployment.READ_PERMISSION]
    assert not [r for r in reads if not any(fnmatchcase(r, pattern) for pattern in patterns)]
    assert {"revert_access_policy", "restore_network", "raise_defender_alert", "publish_detection"} <= set(HANDLERS)


def test_the_rbac_administrator_may_only_delete_key_vault_data_roles(trees: dict[str, Tree]) -> None:
    """A data-role id may appear inside the condition, never as a role kvguard is assigned: the
    condition lets kvguard delete assignments of exactly the Key Vault data roles, and write none."""
    import json

    from kvguard.roles import BUILTIN_ROLES, KEY_VAULT_DATA_ROLES

    tree = trees["modules/rbac-subscription.bicep"]
    [(_, _, remover)] = [a for a in assigned(tree) if a[0] == RBAC_ADMINISTRATOR]
    assert remover["properties"]["conditionVersion"] == "2.0"
    condition = variable(tree, remover["properties"]["condition"])
    assert condition.startswith("((!(ActionMatches{\\'Microsoft.Authorization/roleAssignments/write\\'}))) AND ")
    assert "(!(ActionMatches{\\'Microsoft.Authorization/roleAssignments/delete\\'})) OR (@Resource[" in condition
    assert condition.endswith("ForAnyOfAnyValues:GuidEquals {${keyVaultDataRoleIds}}))")
    named = json.loads((INFRA / "modules" / "keyvault-data-roles.json").read_text())
    assert named["ids"] == list(KEY_VAULT_DATA_ROLES)
    assert named["names"] == [BUILTIN_ROLES[g].name for g in named["ids"]]
    assert not any(BUILTIN_ROLES[g].grants_access for g in named["ids"])
    assigned_anywhere = {role for t in trees.values() for role, _, _ in assigned(t)}
    assert not assigned_anywhere & set(KEY_VAULT_DATA_ROLES)


def test_opt_in_rights_are_documented_and_not_granted(trees: dict[str, Tree]) -> None:
    from fnmatch import fnmatchcase

    from kvguard.catalog import HANDLERS

    roles = {role for tree in trees.values() for role, _, _ in assigned(tree)}
    patterns = [pattern for role in roles for pattern in GRANTS.get(role, ())]
    assert {"restore_lock", "restore_defender_plan"} <= opt_in_handlers()
    readme = (INFRA.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Opt-in rights"):]
    section = section[:section.index("\n### ", 1)]
    # The further surfaces' handlers (DESIGN.md), documented whether or not their family is built yet.
    for handler_id, rights in FURTHER_SURFACE_RIGHTS.items():
        assert f"| `{handler_id}` |" in section, handler_id
        for right in rights:
            assert f"`{right}`" in section, (handler_id, right)
            assert not any(fnmatchcase(right, p) for p in patterns), f"{handler_id}'s {right} is granted by default"
            assert not any(fnmatchcase(right, a) for a in remediator_actions(trees)), right
        if handler_id in HANDLERS:
            assert handler_id in opt_in_handlers(), f"{handler_id} must be opt-in"
    for handler_id in ("restore_lock", "restore_defender_plan"):
        permission = HANDLERS[handler_id].permission
        assert not any(fnmatchcase(permission, p) for p in patterns), f"{handler_id} is granted by default"
        assert permission in readme, f"{handler_id}'s right {permission} is not documented in the README"
