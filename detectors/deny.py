"""Deny settings (KV-DENY-01): a deny assignment, or a deployment stack's deny settings, that takes
from kvguard's identity an action one of its handlers needs.

A deny beats every role: once one covers a vault for kvguard's identity, each later revert of that
vault fails with 403, however the vault is tampered with. An attacker who knows kvguard is watching
disarms it this way first, so the deny is reported on its own event, before any revert is tried.
The actions weighed are those the remediation handlers the policy can run declare
(`ResourceState.rights`); `kvguard doctor` weighs the same ones with the same functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from fnmatch import fnmatchcase
from typing import Any

from kvguard.detection import Case, Context, Hit, rule
from kvguard.ids import vault_key
from kvguard.resources import MANAGEMENT_GROUP_PREFIX, covers, scope_of
from kvguard.roles import Role

DENY_ASSIGNMENTS = "microsoft.authorization/denyassignments"
STACKS = "microsoft.resources/deploymentstacks"
DENY_SETTINGS = (DENY_ASSIGNMENTS, STACKS)
EVERYONE = "00000000-0000-0000-0000-000000000000"  # the system-defined principal "Everyone"
# The verbs each deny-settings mode of a stack denies on the resources it manages.
STACK_DENIED_VERBS = {"denydelete": ("delete",), "denywriteanddelete": ("write", "delete")}
# What a stack's resource entry says when no deny stands on that resource.
NO_DENY = {"none", "notsupported", "inapplicable", "removedbysystem"}
# What a stack manages over a vault: the vault, or a role assignment, diagnostic setting or lock
# whose scope covers it (DESIGN.md).
OVER_A_VAULT = ("microsoft.authorization/roleassignments", "microsoft.insights/diagnosticsettings",
                "microsoft.authorization/locks")


def _properties(doc: Mapping[str, Any] | None) -> Mapping[str, Any]:
    properties = (doc or {}).get("properties")
    return properties if isinstance(properties, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def arm_type(resource_id: str) -> str:
    """The ARM type a resource id names (after its last `/providers/`: the namespace and every
    type segment), e.g. `Microsoft.KeyVault/vaults/privateEndpointConnections`."""
    text = resource_id.strip().rstrip("/")
    at = text.lower().rfind("/providers/")
    segments = text[at + len("/providers/"):].split("/") if at >= 0 else []
    return "/".join([segments[0], *segments[1::2]]) if segments else ""


def _action_type(action: str) -> str:
    """The resource type an action is on (`…/vaults/write` → `…/vaults`; an extension action
    `Microsoft.KeyVault/vaults/providers/Microsoft.Insights/diagnosticSettings/write` → the
    extension's type; `…/purge/action` drops both)."""
    head = action.rsplit("/providers/", 1)[-1].split("/")
    return "/".join(head[:-2] if head[-1].lower() == "action" else head[:-1])


def _reaches(scope: str, vault_id: str, child_scopes: bool) -> bool:
    """Whether a deny at `scope` applies to actions on the vault: the vault lies at or under it
    (under it only when it applies to child scopes)."""
    scope_key, key = vault_key(scope), vault_key(vault_id)
    if key == scope_key:
        return True
    return child_scopes and (scope_key.startswith(MANAGEMENT_GROUP_PREFIX) or key.startswith(scope_key + "/"))


def _ids(principals: Iterable[Any]) -> set[str]:
    return {str(p.get("id") if isinstance(p, Mapping) else p).lower() for p in principals}


def deny_assignment_blocks(doc: Mapping[str, Any] | None, vault_id: str, rights: Mapping[str, str],
                           own_ids: Iterable[str]) -> dict[str, str]:
    """The rights (handler → action) a deny assignment takes from kvguard's identity on the vault:
    it reaches the vault (`doNotApplyToChildScopes` respected), names Everyone or one of kvguard's
    identities and does not exclude it (`excludePrincipals`), and some permission block denies the
    action (`actions` minus `notActions`, Azure's wildcards)."""
    if doc is None:
        return {}
    properties = _properties(doc)
    scope = str(properties.get("scope") or scope_of(str(doc.get("id", ""))))
    if not _reaches(scope, vault_id, not properties.get("doNotApplyToChildScopes")):
        return {}
    own = {i.lower() for i in own_ids}
    named = _ids(_list(properties.get("principals")))
    if not (EVERYONE in named or own & named) or own & _ids(_list(properties.get("excludePrincipals"))):
        return {}
    blocks = [Role(id="", name="", actions=tuple(_list(b.get("actions"))),
                   not_actions=tuple(_list(b.get("notActions"))))
              for b in _list(properties.get("permissions")) if isinstance(b, Mapping)]
    return {handler: action for handler, action in rights.items() if any(b.allows_action(action) for b in blocks)}


def _managed_over(doc: Mapping[str, Any], vault_id: str) -> list[str]:
    """The resources a stack manages with a deny standing on them that are the vault or over it."""
    found = []
    for entry in _list(_properties(doc).get("resources")):
        if not isinstance(entry, Mapping) or str(entry.get("denyStatus") or "").lower() in NO_DENY:
            continue
        resource_id = str(entry.get("id") or "")
        kind = arm_type(resource_id).lower()
        if (kind == "microsoft.keyvault/vaults" and vault_key(resource_id) == vault_key(vault_id)) or (
                kind in OVER_A_VAULT and covers(scope_of(resource_id), vault_id)):
            found.append(resource_id)
    return found


def stack_blocks(doc: Mapping[str, Any] | None, vault_id: str, rights: Mapping[str, str],
                 own_ids: Iterable[str]) -> dict[str, str]:
    """The rights a deployment stack's deny settings take from kvguard's identity: the verbs of its
    mode (`denyDelete`: deletes; `denyWriteAndDelete`: writes and deletes) on the resources it
    manages over the vault, and on their child scopes with `applyToChildScopes`, unless kvguard's
    identity is among `excludedPrincipals` or the action among `excludedActions`."""
    if doc is None:
        return {}
    settings = _properties(doc).get("denySettings")
    settings = settings if isinstance(settings, Mapping) else {}
    verbs = STACK_DENIED_VERBS.get(str(settings.get("mode") or "").lower())
    if verbs is None or {i.lower() for i in own_ids} & _ids(_list(settings.get("excludedPrincipals"))):
        return {}
    excluded = [str(a).lower() for a in _list(settings.get("excludedActions"))]
    children = bool(settings.get("applyToChildScopes"))
    managed = [arm_type(r).lower() for r in _managed_over(doc, vault_id)]
    blocked = {}
    for handler, action in rights.items():
        lowered = action.lower()
        if lowered.rsplit("/", 1)[-1] not in verbs or any(fnmatchcase(lowered, e) for e in excluded):
            continue
        if any(_action_type(lowered) == kind or (children and lowered.startswith(kind + "/")) for kind in managed):
            blocked[handler] = action
    return blocked


def covers_vault(doc: Mapping[str, Any], vault_id: str) -> bool:
    """Whether a deny setting (its ARM JSON) stands over the vault at all, whatever it denies: a
    deny assignment that reaches it, a stack with deny settings on the vault or on something over it."""
    kind = str(doc.get("type") or arm_type(str(doc.get("id", "")))).lower()
    properties = _properties(doc)
    if kind == DENY_ASSIGNMENTS:
        scope = str(properties.get("scope") or scope_of(str(doc.get("id", ""))))
        return _reaches(scope, vault_id, not properties.get("doNotApplyToChildScopes"))
    settings = properties.get("denySettings")
    mode = str(settings.get("mode") or "").lower() if isinstance(settings, Mapping) else ""
    return kind == STACKS and mode in STACK_DENIED_VERBS and bool(_managed_over(doc, vault_id))


def deny_blocks(doc: Mapping[str, Any] | None, vault_id: str, rights: Mapping[str, str],
                own_ids: Iterable[str]) -> dict[str, str]:
    """The rights a deny setting of either kind (its ARM JSON) takes from kvguard on the vault."""
    if doc is None:
        return {}
    kind = str(doc.get("type") or arm_type(str(doc.get("id", "")))).lower()
    judge = stack_blocks if kind == STACKS else deny_assignment_blocks if kind == DENY_ASSIGNMENTS else None
    return judge(doc, vault_id, rights, own_ids) if judge is not None else {}


# --- KV-DENY-01 ----------------------------------------------------------------------------------


def _deny_cases() -> list[Case]:
    from detectors.cases import (
        KVGUARD_IDENTITY,
        OPERATOR,
        RESOURCE_GROUP_ID,
        SUBSCRIPTION_ID,
        VAULT_ID,
        assignment,
        deny_assignment,
        stack,
    )

    own = {"own_principal_ids": [KVGUARD_IDENTITY]}
    deny = {"type": "Microsoft.Authorization/denyAssignments"}
    stacks = {"type": "Microsoft.Resources/deploymentStacks"}
    return [
        Case("deny of every write for Everyone on the resource group", fires=True, policy=own,
             resource={**deny, "after": deny_assignment(["*/write"])}),
        Case("deny naming kvguard's identity on the vault", fires=True, policy=own,
             resource={**deny, "after": deny_assignment(["Microsoft.KeyVault/vaults/*"], scope=VAULT_ID,
                                                         principals=[KVGUARD_IDENTITY])}),
        Case("deny of role assignment deletes on the subscription", fires=True, policy=own,
             resource={**deny, "after": deny_assignment(["Microsoft.Authorization/roleAssignments/delete"],
                                                         scope=SUBSCRIPTION_ID)}),
        Case("deny widened from reads to writes", fires=True, policy=own,
             resource={**deny, "before": deny_assignment(["*/read"]), "after": deny_assignment(["*"])}),
        Case("stack denyWriteAndDelete over the vault", fires=True, policy=own,
             resource={**stacks, "after": stack("denyWriteAndDelete")}),
        Case("stack denyDelete over a role assignment on the vault", fires=True, policy=own,
             resource={**stacks, "after": stack("denyDelete", managed=[assignment("secrets-user")["id"]])}),
        Case("stack's deny settings switched on", fires=True, policy=own,
             resource={**stacks, "before": stack("none"), "after": stack("denyWriteAndDelete")}),
        Case("near miss: kvguard's identity excluded", fires=False, policy=own,
             resource={**deny, "after": deny_assignment(["*"], exclude=[KVGUARD_IDENTITY])}),
        Case("near miss: the writes kvguard makes taken out by notActions", fires=False, policy=own,
             resource={**deny, "after": deny_assignment(["*"], not_actions=["Microsoft.KeyVault/*",
                                                                            "Microsoft.Insights/*",
                                                                            "Microsoft.Authorization/*"])}),
        Case("near miss: another principal denied", fires=False, policy=own,
             resource={**deny, "after": deny_assignment(["*"], principals=[OPERATOR])}),
        Case("near miss: only reads denied", fires=False, policy=own,
             resource={**deny, "after": deny_assignment(["*/read"])}),
        Case("near miss: resource group only, not its children", fires=False, policy=own,
             resource={**deny, "after": deny_assignment(["*"], scope=RESOURCE_GROUP_ID, child_scopes=False)}),
        Case("near miss: deny removed", fires=False, policy=own,
             resource={**deny, "before": deny_assignment(["*"]), "after": None}),
        Case("near miss: stack denyDelete over the vault (kvguard deletes nothing there)", fires=False,
             policy=own, resource={**stacks, "after": stack("denyDelete")}),
        Case("near miss: stack excludes kvguard's identity", fires=False, policy=own,
             resource={**stacks, "after": stack("denyWriteAndDelete", excluded_principals=[KVGUARD_IDENTITY])}),
        Case("near miss: stack excludes the actions kvguard needs", fires=False, policy=own,
             resource={**stacks, "after": stack("denyWriteAndDelete", excluded_actions=[
                 "Microsoft.KeyVault/vaults/write", "Microsoft.KeyVault/vaults/accessPolicies/write",
                 "Microsoft.KeyVault/vaults/privateEndpointConnections/write",
                 "Microsoft.KeyVault/vaults/providers/Microsoft.Insights/diagnosticSettings/write"],
                 child_scopes=True)}),
        Case("near miss: stack without deny settings", fires=False, policy=own,
             resource={**stacks, "after": stack("none")}),
        Case("near miss: already in the baseline", fires=False, policy=own,
             resource={**deny, "before": deny_assignment(["*/write"]), "after": deny_assignment(["*/write"])}),
    ]


@rule(
    "KV-DENY-01",
    title="Deny setting over a protected vault takes an action kvguard's remediation needs",
    severity="critical",
    mitre=("T1562.001",),
    kind="diff",
    remediation=None,
    cases=_deny_cases,
)
def deny_disarms_kvguard(ctx: Context) -> Iterator[Hit]:
    """A deny assignment, or a deployment stack's `denySettings` (`denyWriteAndDelete`, or
    `denyDelete` where kvguard deletes), that covers a protected vault and denies kvguard's
    identity an action one of its handlers needs: every later revert there fails with 403. Only
    what the baseline's copy did not already take counts; kvguard cannot lift a deny, so this is
    alert-only."""
    state = ctx.resource
    if state is None or state.change.type.lower() not in DENY_SETTINGS or state.after is None:
        return
    own = ctx.policy.own_principal_ids
    vaults, blocked = [], {}
    for vault in state.vaults:
        taken = {h: a for h, a in deny_blocks(state.after, vault.id, state.rights, own).items()
                 if h not in deny_blocks(state.before, vault.id, state.rights, own)}
        if taken:
            vaults.append(vault.id)
            blocked.update(taken)
    if vaults:
        kind = "deployment stack" if state.change.type.lower() == STACKS else "deny assignment"
        taken_rights = [{"handler": h, "action": a} for h, a in sorted(blocked.items())]
        yield Hit(evidence={"denySetting": state.change.id, "kind": kind, "scope": state.change.scope,
                            "vaults": vaults, "blocked": taken_rights},
                  detail=f"{kind} blocks {', '.join(sorted(blocked))}")
