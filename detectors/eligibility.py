"""PIM eligibility (KV-PIM-01): a principal made eligible for a role over a protected vault.

An eligible principal holds no role assignment until it activates one, so KV-RBAC-01 and KV-RBAC-02
see nothing the day it is made eligible; on the day it activates, the assignment appears and it
may already be reading. The request that made it eligible (`roleEligibilityScheduleRequests`,
`requestType` AdminAssign, AdminUpdate or AdminExtend) is the moment to see it, judged by the same
role table as an assignment (`kvguard.roles`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from detectors.rbac import _access_policy_model, _approved, _protected
from kvguard.detection import Case, Context, Hit, rule

ELIGIBILITY_REQUESTS = "microsoft.authorization/roleeligibilityschedulerequests"
# The request types that make (or keep) a principal eligible; removals and self-service
# activations (SelfActivate: an assignment, judged by KV-RBAC-*) are not.
MAKES_ELIGIBLE = {"adminassign", "adminupdate", "adminextend"}
# Request states in which no eligibility came of it.
NOTHING_CAME_OF_IT = {"denied", "canceled", "failed", "revoked", "timedout", "invalid", "adminremoved"}


def _properties(doc: Mapping[str, Any] | None) -> Mapping[str, Any]:
    properties = (doc or {}).get("properties")
    return properties if isinstance(properties, Mapping) else {}


def _same_grant(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> bool:
    """Whether the baseline's copy already made the same principal eligible for the same role,
    for as long (a request re-read unchanged, or only its status moved on)."""
    if before is None:
        return False
    keys = ("principalId", "roleDefinitionId", "requestType", "scheduleInfo")
    was, now = _properties(before), _properties(after)
    return all(str(was.get(k) or "").lower() == str(now.get(k) or "").lower() for k in keys)


def _eligibility_cases() -> list[Case]:
    from detectors.cases import OPERATOR, RESOURCE_GROUP_ID, SUBSCRIPTION_ID, custom_role, eligibility_request, vault

    eligibility = {"type": "Microsoft.Authorization/roleEligibilityScheduleRequests"}
    return [
        Case("eligible for Secrets User on the vault", fires=True,
             resource={**eligibility, "after": eligibility_request("secrets-user")}),
        Case("eligible for Crypto User on the resource group", fires=True,
             resource={**eligibility, "after": eligibility_request("crypto-user", scope=RESOURCE_GROUP_ID)}),
        Case("eligibility extended", fires=True,
             resource={**eligibility, "after": eligibility_request("kv-admin", request_type="AdminExtend")}),
        Case("eligible for Owner on the subscription", fires=True,
             resource={**eligibility, "after": eligibility_request("owner", scope=SUBSCRIPTION_ID)}),
        Case("eligible for a custom role with secrets/*", fires=True,
             resource={**eligibility, "after": eligibility_request("custom"),
                       "role": custom_role(data_actions=["Microsoft.KeyVault/vaults/secrets/*"])}),
        Case("eligible for Contributor on an access-policy vault", fires=True,
             resource={**eligibility, "after": eligibility_request("contributor"),
                       "vaults": [vault(enableRbacAuthorization=False)]}),
        Case("near miss: eligible for Reader", fires=False,
             resource={**eligibility, "after": eligibility_request("reader")}),
        Case("near miss: Contributor on an RBAC vault", fires=False,
             resource={**eligibility, "after": eligibility_request("contributor")}),
        Case("near miss: eligibility removed", fires=False,
             resource={**eligibility, "after": eligibility_request("secrets-user", request_type="AdminRemove")}),
        Case("near miss: request denied", fires=False,
             resource={**eligibility, "after": eligibility_request("secrets-user", status="Denied")}),
        Case("near miss: approved caller", fires=False, policy={"approved_callers": [OPERATOR]},
             resource={**eligibility, "after": eligibility_request("secrets-user")}),
        Case("near miss: covers no protected vault", fires=False,
             resource={**eligibility, "after": eligibility_request("secrets-user"), "vaults": []}),
        Case("near miss: inherited scope not protected", fires=False, policy={"protect_inherited_scopes": False},
             resource={**eligibility, "after": eligibility_request("secrets-user", scope=RESOURCE_GROUP_ID)}),
        Case("near miss: already in the baseline, only its status moved on", fires=False,
             resource={**eligibility, "before": eligibility_request("secrets-user", status="PendingProvisioning"),
                       "after": eligibility_request("secrets-user")}),
    ]


@rule(
    "KV-PIM-01",
    title="Principal made eligible for a Key Vault data or privileged role over a protected vault",
    severity="high",
    mitre=("T1098.003",),
    kind="diff",
    remediation=None,
    cases=_eligibility_cases,
)
def made_eligible(ctx: Context) -> Iterator[Hit]:
    """A request that makes a principal eligible for a role with Key Vault data actions, or for a
    privileged role (KV-RBAC-02's: one that can assign roles, or write an access-policy vault),
    over a protected vault, by a caller not in `approved_callers`. Critical for the roles that make
    KV-RBAC-01 critical (reading secret values, decrypting, unwrapping, releasing keys). kvguard
    does not cancel eligibility: alert-only."""
    state = ctx.resource
    if state is None or state.change.type.lower() != ELIGIBILITY_REQUESTS or state.after is None:
        return
    properties = _properties(state.after)
    if (str(properties.get("requestType") or "").lower() not in MAKES_ELIGIBLE
            or str(properties.get("status") or "").lower() in NOTHING_CAME_OF_IT
            or _approved(ctx) or state.role is None or _same_grant(state.before, state.after)):
        return
    role = state.role
    data = role.key_vault_data_actions
    vaults = [v for v in _protected(ctx, state)
              if data or role.grants_access or (role.writes_vaults and _access_policy_model(v))]
    if not vaults:
        return
    privilege = "Key Vault data access" if data else "can assign roles" if role.grants_access else \
        "can write an access-policy vault"
    yield Hit(evidence={"requestId": state.change.id, "principalId": properties.get("principalId"),
                        "principalType": properties.get("principalType"),
                        "roleDefinitionId": properties.get("roleDefinitionId"), "role": role.name,
                        "requestType": properties.get("requestType"), "status": properties.get("status"),
                        "schedule": properties.get("scheduleInfo"), "scope": state.change.scope,
                        "vaults": [v.id for v in vaults], "privilege": privilege, "dataActions": data},
              severity="critical" if role.reads_secret_values else None, detail=role.name)
