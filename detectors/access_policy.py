"""Access-policy rules (KV-AP-*): who can read the vault's secrets, keys and certificates."""

from __future__ import annotations

from collections.abc import Iterator

from detectors.cases import APP_TEAM, INTRUDER, grant, vault, with_grants
from kvguard.detection import Case, Context, Hit, rule

# Permissions that hand over secret material, or destroy it beyond recovery.
DATA_EXFILTRATION = {"secrets": {"get", "list", "all"}, "keys": {"decrypt", "unwrapkey", "all"}}
DESTRUCTIVE = "purge"


def _is_sensitive(permissions: dict[str, frozenset[str]]) -> bool:
    if any(DESTRUCTIVE in perms for perms in permissions.values()):
        return True
    return any(permissions.get(category, frozenset()) & names for category, names in DATA_EXFILTRATION.items())


@rule(
    "KV-AP-01",
    title="Access policy added for a new principal",
    severity="high",
    mitre=("T1098", "T1555.006"),
    kind="diff",
    remediation="revert_access_policy",
    cases=[
        Case("grant to an unknown principal", fires=True,
             before=vault(), after=with_grants(grant(INTRUDER, certificates=["list"]))),
        Case("secrets get to an unknown principal is critical", fires=True,
             before=vault(), after=with_grants(grant(INTRUDER, secrets=["Get"]))),
        Case("existing principal keeps its grant", fires=False, before=vault(), after=vault()),
        Case("existing principal, ids in other case", fires=False,
             before=vault(accessPolicies=[grant(APP_TEAM.upper(), secrets=["get"])]),
             after=vault(accessPolicies=[grant(APP_TEAM, secrets=["Get"])])),
        Case("first sight has no baseline to compare", fires=False,
             before=None, after=with_grants(grant(INTRUDER, secrets=["get"]))),
    ],
)
def new_principal(ctx: Context) -> Iterator[Hit]:
    """A principal the baseline did not know can now use the vault's data plane: the classic
    persistence step after a control-plane compromise. Critical when the grant can read secrets,
    decrypt/unwrap with keys, or purge."""
    if ctx.diff is None:
        return
    for entry in ctx.diff.added_policies:
        permissions = {c: p for c, p in entry.permissions.items() if p}
        yield Hit(
            evidence={
                "objectId": entry.principal.object_id,
                "applicationId": entry.principal.application_id,
                "tenantId": entry.principal.tenant_id,
                "permissions": {c: sorted(p) for c, p in permissions.items()},
            },
            severity="critical" if _is_sensitive(permissions) else None,
            detail=entry.principal.describe(),
        )
