"""Role-based access rules (KV-RBAC-*): who was given which role over a protected vault.

On a vault with Azure RBAC authorization nobody writes access policies: data access is a role
assignment at the vault or any scope above it (resource group, subscription, management group) or
below it (one secret). These rules judge a role assignment (or a custom role definition) against
its baseline, for the vaults its scope covers (`ctx.resource`, filled by the pipeline).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from kvguard.detection import Case, Context, Hit, rule
from kvguard.ids import vault_key
from kvguard.intents import DeleteRoleAssignment, RoleAssignmentRef
from kvguard.resources import ResourceState
from kvguard.roles import Role, role_from_arm
from kvguard.vault import VaultConfig

ASSIGNMENTS = "microsoft.authorization/roleassignments"
DEFINITIONS = "microsoft.authorization/roledefinitions"


def _state(ctx: Context, resource_type: str) -> ResourceState | None:
    state = ctx.resource
    if state is None or state.change.type.lower() != resource_type or not state.vaults:
        return None
    return state


def _properties(doc: Mapping[str, Any] | None) -> Mapping[str, Any]:
    properties = (doc or {}).get("properties")
    return properties if isinstance(properties, Mapping) else {}


def _approved(ctx: Context) -> bool:
    """A successful change by an approved caller (the team's pipeline) is the intended change."""
    return ctx.event.succeeded and bool(set(ctx.policy.approved_callers) & ctx.event.caller.ids())


def _protected(ctx: Context, state: ResourceState) -> list[VaultConfig]:
    """The covered vaults for which this scope counts: any covering scope, or with
    `protect_inherited_scopes: false` only the vault itself and what lies inside it."""
    if ctx.policy.protect_inherited_scopes:
        return list(state.vaults)
    scope = vault_key(state.change.scope)
    return [v for v in state.vaults if scope == v.key or scope.startswith(v.key + "/")]


def _added(ctx: Context, state: ResourceState) -> bool:
    """An assignment the baseline lacks, not made by an approved caller, and not one of kvguard's
    own (those are KV-RBAC-04's, and never removed)."""
    principal = str(_properties(state.after).get("principalId") or "").lower()
    return (state.before is None and state.after is not None and not _approved(ctx)
            and principal not in {i.lower() for i in ctx.policy.own_principal_ids})


def _evidence(state: ResourceState, vaults: list[VaultConfig], role: Role | None) -> dict[str, Any]:
    properties = _properties(state.current)
    return {
        "assignmentId": state.change.id,
        "principalId": properties.get("principalId"),
        "principalType": properties.get("principalType"),
        "roleDefinitionId": properties.get("roleDefinitionId"),
        "role": role.name if role is not None else None,
        "scope": state.change.scope,
        "vaults": [v.id for v in vaults],
    }


def _delete(state: ResourceState, role: Role) -> tuple[DeleteRoleAssignment, ...]:
    """Deleting the added assignment, while it still has the principal, role and scope it has now
    (nothing when it names no principal or role: there is nothing to match the delete against)."""
    properties = _properties(state.after)
    ref = RoleAssignmentRef(
        id=state.change.id,
        principal_id=str(properties.get("principalId") or "").lower(),
        role_definition_id=str(properties.get("roleDefinitionId") or "").lower(),
        scope=state.change.scope.lower(),
    )
    return (DeleteRoleAssignment(ref, role.name),) if ref.principal_id and ref.role_definition_id else ()


def _access_policy_model(vault: VaultConfig) -> bool:
    """A vault where access policies grant data access (RBAC authorization not switched on)."""
    return vault.enable_rbac_authorization is not True


# --- KV-RBAC-01 ----------------------------------------------------------------------------------


def _data_role_cases() -> list[Case]:
    from detectors.cases import INTRUDER, OPERATOR, RESOURCE_GROUP_ID, VAULT_ID, assignment, custom_role, vault

    secrets_user = assignment("secrets-user")
    added = RoleAssignmentRef(secrets_user["id"], INTRUDER, secrets_user["properties"]["roleDefinitionId"].lower(),
                              VAULT_ID.lower())
    return [
        Case("Secrets User on the vault", fires=True, resource={"after": secrets_user},
             restore=(DeleteRoleAssignment(added, "Key Vault Secrets User"),)),
        Case("Crypto User on the resource group", fires=True,
             resource={"after": assignment("crypto-user", scope=RESOURCE_GROUP_ID)}),
        Case("custom role with secrets/* on one secret", fires=True,
             resource={"after": assignment("custom", scope_suffix="/secrets/db-password"),
                       "role": custom_role(data_actions=["Microsoft.KeyVault/vaults/secrets/*"])}),
        Case("Key Vault Reader: metadata only", fires=True, resource={"after": assignment("kv-reader")}),
        Case("Crypto Service Release User: releases keys", fires=True,
             resource={"after": assignment("crypto-release-user")}),
        Case("custom role with key release only", fires=True,
             resource={"after": assignment("custom"),
                       "role": custom_role(data_actions=["Microsoft.KeyVault/vaults/keys/release/action"])}),
        Case("custom role with backups only", fires=True,
             resource={"after": assignment("custom"),
                       "role": custom_role(data_actions=["Microsoft.KeyVault/vaults/keys/backup/action",
                                                         "Microsoft.KeyVault/vaults/secrets/backup/action",
                                                         "Microsoft.KeyVault/vaults/certificates/backup/action"])}),
        Case("custom role restoring keys", fires=True,
             resource={"after": assignment("custom"),
                       "role": custom_role(data_actions=["Microsoft.KeyVault/vaults/keys/restore/action"])}),
        Case("custom role with another service's data actions", fires=False,
             resource={"after": assignment("custom"),
                       "role": custom_role(data_actions=[
                           "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"])}),
        Case("custom role with Managed HSM data actions only", fires=False,
             resource={"after": assignment("custom"),
                       "role": custom_role(data_actions=["Microsoft.KeyVault/managedHsm/keys/release/action"])}),
        Case("Reader: no data actions", fires=False, resource={"after": assignment("reader")}),
        Case("Owner: control plane only", fires=False, resource={"after": assignment("owner")}),
        Case("scope covers no protected vault", fires=False,
             resource={"after": assignment("secrets-user"), "vaults": []}),
        Case("inherited scope not protected", fires=False, policy={"protect_inherited_scopes": False},
             resource={"after": assignment("secrets-user", scope=RESOURCE_GROUP_ID)}),
        Case("approved caller", fires=False, policy={"approved_callers": [OPERATOR]},
             resource={"after": assignment("secrets-user")}),
        Case("already in the baseline", fires=False,
             resource={"before": assignment("secrets-user"), "after": assignment("secrets-user"),
                       "vaults": [vault(enableRbacAuthorization=True)]}),
    ]


@rule(
    "KV-RBAC-01",
    title="Role with Key Vault data access assigned over a protected vault",
    severity="high",
    mitre=("T1098", "T1555.006"),
    kind="diff",
    remediation="remove_role_assignment",
    cases=_data_role_cases,
)
def data_role_assigned(ctx: Context) -> Iterator[Hit]:
    """On an RBAC vault a role assignment is the grant: Secrets User on the vault, Crypto Officer on
    its resource group or a custom `secrets/*` role on the subscription all read what the vault
    guards. An assignment the baseline lacks is new access, also for a principal that already held
    another role. Every documented Key Vault data action counts (backups and restores too: a backup
    restores the item in another vault of the subscription); critical when the role can read secret
    values, decrypt/unwrap with keys or release a key (Secure Key Release hands over its private
    material)."""
    state = _state(ctx, ASSIGNMENTS)
    if state is None or not _added(ctx, state) or state.role is None:
        return
    actions = state.role.key_vault_data_actions
    vaults = _protected(ctx, state)
    if not actions or not vaults:
        return
    yield Hit(evidence={**_evidence(state, vaults, state.role), "dataActions": actions},
              severity="critical" if state.role.reads_secret_values else None, detail=state.role.name,
              restore=_delete(state, state.role))


# --- KV-RBAC-02 ----------------------------------------------------------------------------------


def _privileged_role_cases() -> list[Case]:
    from detectors.cases import SUBSCRIPTION_ID, assignment, custom_role, vault

    access_policy_vault = vault(enableRbacAuthorization=False)
    return [
        Case("Owner on the subscription", fires=True, resource={"after": assignment("owner", scope=SUBSCRIPTION_ID)}),
        Case("Data Access Administrator on the vault", fires=True,
             resource={"after": assignment("data-access-admin")}),
        Case("custom role with roleAssignments/write", fires=True,
             resource={"after": assignment("custom"),
                       "role": custom_role(actions=["Microsoft.Authorization/roleAssignments/*"])}),
        Case("Contributor on an access-policy vault", fires=True,
             resource={"after": assignment("contributor"), "vaults": [access_policy_vault]}),
        Case("Contributor on an RBAC vault", fires=False, resource={"after": assignment("contributor")}),
        Case("Key Vault Contributor on an RBAC vault", fires=False,
             resource={"after": assignment("kv-contributor")}),
        Case("Secrets User: data, no grant rights", fires=False, resource={"after": assignment("secrets-user")}),
        Case("Owner removed", fires=False, resource={"before": assignment("owner"), "after": None}),
    ]


@rule(
    "KV-RBAC-02",
    title="Privileged role assigned over a protected vault",
    severity="high",
    mitre=("T1098.003",),
    kind="diff",
    remediation="remove_role_assignment",
    remediate_by_default=False,
    cases=_privileged_role_cases,
)
def privileged_role_assigned(ctx: Context) -> Iterator[Hit]:
    """Whoever may write role assignments over a vault may give anyone its data, themselves
    included: Owner, User Access Administrator, RBAC Administrator, Key Vault Data Access
    Administrator or a custom role with `roleAssignments/write`. On an access-policy vault writing
    the vault is enough (Contributor, Key Vault Contributor, any role with `vaults/write`). Such
    assignments are often legitimate, so the rule alerts and removes them only when it is told to
    (`rules: {KV-RBAC-02: {remediate: true}}`)."""
    state = _state(ctx, ASSIGNMENTS)
    if state is None or not _added(ctx, state) or state.role is None:
        return
    role = state.role
    vaults = [v for v in _protected(ctx, state)
              if role.grants_access or (role.writes_vaults and _access_policy_model(v))]
    if vaults:
        reason = "can assign roles" if role.grants_access else "can write an access-policy vault"
        yield Hit(evidence={**_evidence(state, vaults, role), "privilege": reason}, detail=role.name,
                  restore=_delete(state, role))


# --- KV-RBAC-03 ----------------------------------------------------------------------------------


def _assignment_cover_up_cases() -> list[Case]:
    from detectors.cases import NOW, assignment

    recent = {"recent_grants": {assignment("secrets-user")["id"].lower(): NOW}}
    return [
        Case("added and removed within the window", fires=True, history=recent,
             resource={"before": assignment("secrets-user"), "after": None}),
        Case("Owner added and removed", fires=True,
             history={"recent_grants": {assignment("owner")["id"].lower(): NOW}},
             resource={"before": assignment("owner"), "after": None}),
        Case("removed long after it was added", fires=False,
             resource={"before": assignment("secrets-user"), "after": None}),
        Case("added, still there", fires=False, history=recent, resource={"after": assignment("secrets-user")}),
        Case("removed, covering no protected vault", fires=False, history=recent,
             resource={"before": assignment("secrets-user"), "after": None, "vaults": []}),
    ]


@rule(
    "KV-RBAC-03",
    title="Role assignment over a protected vault added and removed again (cover-up)",
    severity="high",
    mitre=("T1098",),
    kind="diff + history",
    remediation=None,
    cases=_assignment_cover_up_cases,
)
def assignment_cover_up(ctx: Context) -> Iterator[Hit]:
    """An assignment that lives for minutes is how data is read without a standing trace: grant,
    read the secrets, remove the grant. Its removal within the grant window after it appeared
    (`history.grant_window`) is reported even though the access is already gone."""
    state = _state(ctx, ASSIGNMENTS)
    if state is None or state.before is None or state.after is not None:
        return
    added = ctx.history.recent_grants.get(state.change.key)
    vaults = _protected(ctx, state)
    if added is not None and vaults:
        yield Hit(evidence={**_evidence(state, vaults, state.role), "added": added.isoformat()})


# --- KV-RBAC-04 ----------------------------------------------------------------------------------


def _own_assignment_cases() -> list[Case]:
    from detectors.cases import SUBSCRIPTION_ID, assignment

    own = "5ca1ab1e-0000-4000-8000-00000000c0de"
    mine = assignment("rbac-admin", scope=SUBSCRIPTION_ID, principal=own)
    narrowed = {**mine, "properties": {**mine["properties"], "condition": "false", "conditionVersion": "2.0"}}
    policy = {"own_principal_ids": [own]}
    return [
        Case("own assignment deleted", fires=True, policy=policy, resource={"before": mine, "after": None}),
        Case("own assignment given a blocking condition", fires=True, policy=policy,
             resource={"before": mine, "after": narrowed}),
        Case("own assignment added", fires=False, policy=policy, resource={"after": mine}),
        Case("someone else's assignment deleted", fires=False, policy=policy,
             resource={"before": assignment("rbac-admin", scope=SUBSCRIPTION_ID), "after": None}),
        Case("own assignment unchanged", fires=False, policy=policy, resource={"before": mine, "after": mine}),
    ]


@rule(
    "KV-RBAC-04",
    title="kvguard's own role assignment removed or narrowed",
    severity="critical",
    mitre=("T1562.001",),
    kind="diff",
    remediation=None,
    cases=_own_assignment_cases,
)
def own_assignment_removed(ctx: Context) -> Iterator[Hit]:
    """Before tampering with a vault, an attacker who knows kvguard is watching takes away its
    rights: deletes its role assignment or gives it a condition that blocks it. Every later
    remediation would then fail quietly. kvguard cannot undo this with the rights it lost."""
    state = _state(ctx, ASSIGNMENTS)
    if state is None or state.before is None:
        return
    before = _properties(state.before)
    own = {i.lower() for i in ctx.policy.own_principal_ids}
    if str(before.get("principalId", "")).lower() not in own:
        return
    after = _properties(state.after)
    changed = [k for k in ("roleDefinitionId", "scope", "condition", "conditionVersion")
               if str(before.get(k) or "").lower() != str(after.get(k) or "").lower()]
    if state.after is None or changed:
        yield Hit(evidence={**_evidence(state, list(state.vaults), state.role),
                            "removed": state.after is None, "changed": changed if state.after is not None else []})


# --- KV-RBAC-05 ----------------------------------------------------------------------------------


def _custom_role_cases() -> list[Case]:
    from detectors.cases import custom_role

    definition = {"type": "Microsoft.Authorization/roleDefinitions", "action": "write"}
    reader = custom_role(actions=["*/read"])
    return [
        Case("gained secrets/getSecret", fires=True,
             resource={**definition, "before": reader,
                       "after": custom_role(actions=["*/read"],
                                            data_actions=["Microsoft.KeyVault/vaults/secrets/getSecret/action"])}),
        Case("gained roleAssignments/write", fires=True,
             resource={**definition, "before": reader,
                       "after": custom_role(actions=["*/read", "Microsoft.Authorization/roleAssignments/write"])}),
        Case("gained only control-plane reads", fires=False,
             resource={**definition, "before": reader,
                       "after": custom_role(actions=["*/read", "Microsoft.Web/*/read"])}),
        Case("assigned over no protected vault", fires=False,
             resource={**definition, "before": reader, "vaults": [],
                       "after": custom_role(data_actions=["Microsoft.KeyVault/vaults/*"])}),
        Case("first sight of the role", fires=False,
             resource={**definition, "after": custom_role(data_actions=["Microsoft.KeyVault/vaults/*"])}),
    ]


@rule(
    "KV-RBAC-05",
    title="Custom role assigned over a protected vault gained Key Vault data access or grant rights",
    severity="high",
    mitre=("T1098",),
    kind="diff",
    remediation=None,
    cases=_custom_role_cases,
)
def custom_role_widened(ctx: Context) -> Iterator[Hit]:
    """A custom role already assigned over a vault is widened once and every holder gains the new
    rights at once, with no new assignment to see. `ctx.resource.vaults` are the vaults the role's
    known assignments cover."""
    state = _state(ctx, DEFINITIONS)
    if state is None or state.before is None or state.after is None or _approved(ctx):
        return
    try:
        before, after = role_from_arm(state.before), role_from_arm(state.after)
    except ValueError:
        return
    gained = sorted(set(after.key_vault_data_actions) - set(before.key_vault_data_actions))
    grants = after.grants_access and not before.grants_access
    if gained or grants:
        yield Hit(evidence={"roleDefinitionId": state.change.id, "role": after.name, "gainedDataActions": gained,
                            "gainedGrantRights": grants, "vaults": [v.id for v in state.vaults]},
                  detail=after.name)
