"""Access-policy rules (KV-AP-*): who can read the vault's secrets, keys and certificates."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from kvguard.detection import Case, Context, Hit, newly_true, rule
from kvguard.intents import RevokePermissions
from kvguard.vault import PERMISSION_CATEGORIES, AccessPolicy, PermissionChange, Principal, VaultConfig, VaultDiff
from kvguard.vault_spec import FULL_SETS, PERMISSIONS

if TYPE_CHECKING:
    from kvguard.policy import Policy

# Permissions that hand over secret material, or destroy it beyond recovery (judged after `all`
# is expanded to its category's full set).
DATA_EXFILTRATION = {"secrets": {"get", "list"}, "keys": {"decrypt", "unwrapkey"}}
DESTRUCTIVE = "purge"
# Secrets get + list: enumerate every secret, then read each one.
SECRET_HARVEST = frozenset({"get", "list"})
# The customer-managed-key set (storage, SQL TDE, disk encryption): normal, not over-broad.
CMK_KEYS = ["get", "wrapKey", "unwrapKey"]


def _is_sensitive(entry: AccessPolicy) -> bool:
    if any(DESTRUCTIVE in entry.effective(category) for category in PERMISSION_CATEGORIES):
        return True
    return any(entry.effective(category) & names for category, names in DATA_EXFILTRATION.items())


def _new_principal_cases() -> list[Case]:
    from detectors.cases import APP_TEAM, INTRUDER, TENANT, grant, vault, with_grants

    return [
        Case("grant to an unknown principal", fires=True,
             before=vault(), after=with_grants(grant(INTRUDER, certificates=["list"])),
             restore=(RevokePermissions(Principal(INTRUDER, None, TENANT), {"certificates": frozenset({"list"})}),)),
        Case("secrets get to an unknown principal is critical", fires=True,
             before=vault(), after=with_grants(grant(INTRUDER, secrets=["Get"]))),
        Case("existing principal keeps its grant", fires=False, before=vault(), after=vault()),
        Case("existing principal, ids in other case", fires=False,
             before=vault(accessPolicies=[grant(APP_TEAM.upper(), secrets=["get"])]),
             after=vault(accessPolicies=[grant(APP_TEAM, secrets=["Get"])])),
        Case("first sight has no baseline to compare", fires=False,
             before=None, after=with_grants(grant(INTRUDER, secrets=["get"]))),
    ]


@rule(
    "KV-AP-01",
    title="Access policy added for a new principal",
    severity="high",
    mitre=("T1098", "T1555.006"),
    kind="diff",
    remediation="revert_access_policy",
    cases=_new_principal_cases,
    diff_fields=("added_policies",),
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
            severity="critical" if _is_sensitive(entry) else None,
            detail=entry.principal.describe(),
            restore=(RevokePermissions(entry.principal, {c: entry.effective(c) for c in permissions}),),
        )


def _permissions(config: VaultConfig | None, principal_key: str, category: str) -> list[str]:
    entry = config.policy_for(principal_key) if config is not None else None
    return sorted(entry.get(category)) if entry is not None else []


def _permissions_widened_cases() -> list[Case]:
    from detectors.cases import APP_TEAM, INTRUDER, TENANT, grant, vault, with_grants

    return [
        Case("app team gains secrets list", fires=True,
             before=vault(), after=vault(accessPolicies=[grant(APP_TEAM, secrets=["get", "list"], keys=CMK_KEYS)]),
             restore=(RevokePermissions(Principal(APP_TEAM, None, TENANT), {"secrets": frozenset({"list"})}),)),
        Case("app team gains certificate rights it never had", fires=True,
             before=vault(),
             after=vault(accessPolicies=[grant(APP_TEAM, secrets=["get"], keys=CMK_KEYS, certificates=["Import"])])),
        Case("same permissions in other case", fires=False,
             before=vault(), after=vault(accessPolicies=[grant(APP_TEAM.upper(), secrets=["GET"],
                                                               keys=["Get", "WrapKey", "UnwrapKey"])])),
        Case("permissions narrowed", fires=False,
             before=vault(), after=vault(accessPolicies=[grant(APP_TEAM, keys=CMK_KEYS)])),
        Case("a new principal is KV-AP-01's, not a widening", fires=False,
             before=vault(), after=with_grants(grant(INTRUDER, secrets=["get", "list"]))),
        Case("first sight has no baseline to compare", fires=False,
             before=None, after=vault(accessPolicies=[grant(APP_TEAM, secrets=["all"])])),
        Case("subset widened to all", fires=True,
             before=vault(), after=vault(accessPolicies=[grant(APP_TEAM, secrets=["get"], keys=["All"])])),
        Case("all narrowed to the customer-managed-key set", fires=False,
             before=vault(accessPolicies=[grant(APP_TEAM, secrets=["all"], keys=["all"])]), after=vault()),
        Case("all replaced by the explicit full list", fires=False,
             before=vault(accessPolicies=[grant(APP_TEAM, keys=["all"], storage=["all"])]),
             after=vault(accessPolicies=[grant(APP_TEAM, keys=[p.upper() for p in PERMISSIONS["keys"]],
                                               storage=list(PERMISSIONS["storage"]))])),
    ]


@rule(
    "KV-AP-02",
    title="Permissions widened for an existing principal",
    severity="high",
    mitre=("T1098",),
    kind="diff",
    remediation="revert_access_policy",
    cases=_permissions_widened_cases,
    diff_fields=("permission_changes",),
)
def permissions_widened(ctx: Context) -> Iterator[Hit]:
    """A principal the team already trusted for one thing can now do more: quieter than a new
    principal, and just as good for an intruder who controls that identity (a workload's managed
    identity, a shared service principal). One hit per principal and permission category."""
    if ctx.diff is None:
        return
    for change in ctx.diff.widened:
        key = change.principal.key
        yield Hit(
            evidence={
                "objectId": change.principal.object_id,
                "applicationId": change.principal.application_id,
                "category": change.category,
                "added": sorted(change.added),
                "before": _permissions(ctx.before, key, change.category),
                "after": _permissions(ctx.after, key, change.category),
            },
            detail=f"{change.principal.describe()}, {change.category}",
            restore=(RevokePermissions(change.principal, {change.category: change.added}),),
        )


class _ByList:
    """Answers of a pure function of an access-policy list (and of one value beside it), by the
    list: kvguard.vault shares one parsed tuple between all configurations of one list content,
    so a vault whose tags change is not judged entry by entry again. Keyed by the tuple's id, the
    tuple kept beside the answer so that the id stays its own; bounded by the entries the kept
    tuples hold (keeping a tuple keeps its parsed entries), the oldest let go first. The count
    held is kept as answers come and go: summing it on every new list cost a tenth of a replay
    over 200 vaults."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._answers: dict[tuple[int, Hashable], tuple[tuple[AccessPolicy, ...], dict[str, dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def answer(self, entries: tuple[AccessPolicy, ...], beside: Hashable,
               compute: Callable[[tuple[AccessPolicy, ...]], dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
        key = (id(entries), beside)
        known = self._answers.get(key)
        if known is not None and known[0] is entries:
            return known[1]
        found = compute(entries)
        if len(entries) > self.limit:
            return found
        with self._lock:
            replaced = self._answers.pop(key, None)
            if replaced is not None:
                self.held -= len(replaced[0])
            while self._answers and self.held + len(entries) > self.limit:
                self.held -= len(self._answers.pop(next(iter(self._answers)))[0])
            self._answers[key] = (entries, found)
            self.held += len(entries)
        return found

    def __len__(self) -> int:
        return len(self._answers)


_ANSWERED_ENTRIES = 8_192
_over_broad_by_list = _ByList(_ANSWERED_ENTRIES)


def _over_broad(config: VaultConfig, policy: Policy) -> dict[str, dict[str, Any]]:
    return _over_broad_by_list.answer(config.access_policies, None, _over_broad_entries)


def _over_broad_entries(entries: tuple[AccessPolicy, ...]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for entry in entries:
        verdict = _over_broad_by_entry.answer(entry)
        if verdict is not None:
            found[entry.principal.key] = verdict
    return found


def _over_broad_entry(entry: AccessPolicy) -> dict[str, Any] | None:
    """Why one entry is over-broad, or None."""
    reasons = []
    full: set[str] = set()
    for category in PERMISSION_CATEGORIES:
        names = entry.permissions.get(category)
        if names:  # entries hold two or three of the four categories
            granted = entry.effective(category)
            if granted >= FULL_SETS[category]:  # `all`, or every permission spelled out
                full.add(category)
                reasons.append(f"{category}: all")
            elif DESTRUCTIVE in granted:
                reasons.append(f"{category}: {DESTRUCTIVE}")
    if "secrets" not in full and SECRET_HARVEST.issubset(entry.effective("secrets")):
        reasons.append("secrets: get + list")
    if not reasons:
        return None
    return {
        "objectId": entry.principal.object_id,
        "applicationId": entry.principal.application_id,
        "reasons": reasons,
        "permissions": {c: sorted(p) for c, p in entry.permissions.items() if p},
    }


class _ByEntry:
    """Answers of a pure function of one access-policy entry, by the entry: kvguard.vault shares
    one parsed entry between every list that holds its content, so a list of 1,024 entries that
    changed in one is judged again in that one only. Keyed by the entry's id, the entry kept beside
    its answer so that the id stays its own; at most `limit` entries, the oldest let go first."""

    def __init__(self, limit: int, compute: Callable[[AccessPolicy], dict[str, Any] | None]) -> None:
        self.limit = limit
        self._compute = compute
        self._answers: dict[int, tuple[AccessPolicy, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def answer(self, entry: AccessPolicy) -> dict[str, Any] | None:
        known = self._answers.get(id(entry))
        if known is not None and known[0] is entry:
            return known[1]
        found = self._compute(entry)
        with self._lock:
            self._answers.pop(id(entry), None)
            self._answers[id(entry)] = (entry, found)
            while len(self._answers) > self.limit:
                del self._answers[next(iter(self._answers))]
        return found

    def __len__(self) -> int:
        return len(self._answers)


_over_broad_by_entry = _ByEntry(_ANSWERED_ENTRIES, _over_broad_entry)


def _over_broad_grant_cases() -> list[Case]:
    from detectors.cases import APP_TEAM, OPERATOR, grant, vault, with_grants

    return [
        Case("secrets get and list together", fires=True,
             before=vault(), after=with_grants(grant(OPERATOR, secrets=["Get", "List"]))),
        Case("keys all on a new vault", fires=True, before=None, after=with_grants(grant(OPERATOR, keys=["All"]))),
        Case("purge on certificates", fires=True,
             before=vault(), after=with_grants(grant(OPERATOR, certificates=["get", "Purge"]))),
        Case("customer-managed-key set", fires=False,
             before=None, after=vault(accessPolicies=[grant(APP_TEAM, keys=["Get", "WrapKey", "UnwrapKey"])])),
        Case("get and list in different categories", fires=False,
             before=vault(), after=with_grants(grant(OPERATOR, secrets=["get"], certificates=["list"]))),
        Case("over-broad grant already in the baseline", fires=False,
             before=with_grants(grant(OPERATOR, secrets=["all"])),
             after=with_grants(grant(OPERATOR.upper(), secrets=["All"]))),
        Case("every certificate permission spelled out is all", fires=True,
             before=None, after=with_grants(grant(OPERATOR, certificates=list(PERMISSIONS["certificates"])))),
        Case("all in the baseline spelled out in full", fires=False,
             before=with_grants(grant(OPERATOR, keys=["all"])),
             after=with_grants(grant(OPERATOR, keys=list(PERMISSIONS["keys"])))),
    ]


@rule(
    "KV-AP-03",
    title="Over-broad access policy",
    severity="medium",
    mitre=("T1555.006",),
    kind="posture",
    cases=_over_broad_grant_cases,
)
def over_broad_grant(ctx: Context) -> Iterable[Hit]:
    """Some grants are too wide whoever holds them: `all` in a category, `purge` (destroys material
    beyond recovery), or secrets get together with list (enumerate, then read, every secret).
    Judged on the vault as it is, once per principal when the grant first appears."""
    return newly_true(ctx, _over_broad)


_foreign_by_list = _ByList(_ANSWERED_ENTRIES)


def _foreign(config: VaultConfig, policy: Policy) -> dict[str, dict[str, Any]]:
    vault_tenant = config.tenant_id
    return _foreign_by_list.answer(config.access_policies, vault_tenant,
                                   lambda entries: _foreign_entries(entries, vault_tenant))


def _foreign_entries(entries: tuple[AccessPolicy, ...], vault_tenant: str | None) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for entry in entries:
        principal = entry.principal
        reasons = []
        if principal.tenant_id and vault_tenant and principal.tenant_id != vault_tenant:
            reasons.append("other tenant")
        if principal.application_id:
            reasons.append("compound identity")
        if reasons:
            found[principal.key] = {
                "objectId": principal.object_id,
                "applicationId": principal.application_id,
                "tenantId": principal.tenant_id,
                "vaultTenantId": vault_tenant,
                "reasons": reasons,
            }
    return found


def _foreign_principal_cases() -> list[Case]:
    from detectors.cases import INTRUDER, OPERATOR, OTHER_TENANT, TENANT, grant, vault, with_grants

    return [
        Case("principal of another tenant", fires=True,
             before=vault(), after=with_grants(grant(INTRUDER, tenant=OTHER_TENANT, secrets=["get"]))),
        Case("compound identity (user via application)", fires=True,
             before=vault(), after=with_grants(grant(OPERATOR, application_id=INTRUDER, secrets=["get"]))),
        Case("foreign grant on a new vault", fires=True,
             before=None, after=with_grants(grant(INTRUDER, tenant=OTHER_TENANT, keys=["get"]))),
        Case("same tenant in upper case", fires=False,
             before=vault(), after=with_grants(grant(OPERATOR, tenant=TENANT.upper(), secrets=["get"]))),
        Case("foreign grant already in the baseline", fires=False,
             before=with_grants(grant(INTRUDER, tenant=OTHER_TENANT, secrets=["get"])),
             after=with_grants(grant(INTRUDER, tenant=OTHER_TENANT, secrets=["get", "list"]))),
        Case("compound identity removed", fires=False,
             before=with_grants(grant(OPERATOR, application_id=INTRUDER, secrets=["get"])), after=vault()),
    ]


@rule(
    "KV-AP-04",
    title="Access granted to a foreign tenant or compound identity",
    severity="high",
    mitre=("T1098.001",),
    kind="posture",
    cases=_foreign_principal_cases,
)
def foreign_principal(ctx: Context) -> Iterable[Hit]:
    """A principal homed in another tenant answers to another organisation's admins, and a compound
    identity (user + application) is a rarely used form that hides who really holds access: both
    are classic ways to keep a foothold that the vault's own tenant cannot revoke or review."""
    return newly_true(ctx, _foreign)


def _revoked(change: VaultDiff) -> list[str]:
    """What a diff took away, as marks: its own revoke marks, plus a permission mark for every
    permission of a removed principal, so that "widened, then the principal removed" pairs too."""
    dropped = VaultDiff(permission_changes=tuple(
        PermissionChange(entry.principal, category, frozenset(), entry.get(category))
        for entry in change.removed_policies for category in PERMISSION_CATEGORIES if entry.get(category)
    ))
    return list(dict.fromkeys([*change.revoke_marks(), *dropped.revoke_marks()]))


def _cover_up_cases() -> list[Case]:
    from detectors.cases import INTRUDER, NOW, OPERATOR, grant, granted_marks, vault, with_grants

    # The cover-up cases: INTRUDER was granted secrets get at _GRANT_TIME (4 minutes before NOW), and
    # OPERATOR's existing grant was widened to secrets list at the same time.
    _GRANT_TIME = NOW - timedelta(minutes=4)
    _COVERED = with_grants(grant(OPERATOR, secrets=["get"]))
    _INTRUDED = with_grants(grant(OPERATOR, secrets=["get", "list"]), grant(INTRUDER, secrets=["get"]))
    _RECENT_GRANTS = granted_marks(_COVERED, _INTRUDED, _GRANT_TIME)

    return [
        Case("principal removed 4 minutes after it was added", fires=True,
             before=_INTRUDED, after=with_grants(grant(OPERATOR, secrets=["get", "list"])),
             history={"recent_grants": _RECENT_GRANTS}),
        Case("widened principal removed altogether", fires=True,
             before=_INTRUDED, after=with_grants(grant(INTRUDER, secrets=["get"])),
             history={"recent_grants": _RECENT_GRANTS}),
        Case("added permission taken back", fires=True,
             before=_INTRUDED, after=with_grants(grant(OPERATOR, secrets=["Get"]), grant(INTRUDER, secrets=["get"])),
             history={"recent_grants": _RECENT_GRANTS}),
        Case("widened to all, then narrowed back", fires=True,
             before=with_grants(grant(OPERATOR, keys=["all"])), after=with_grants(grant(OPERATOR, keys=["get"])),
             history={"recent_grants": granted_marks(with_grants(grant(OPERATOR, keys=["get"])),
                                                     with_grants(grant(OPERATOR, keys=["All"])), _GRANT_TIME)}),
        Case("all spelled out in full is no removal", fires=False,
             before=with_grants(grant(OPERATOR, keys=["all"])),
             after=with_grants(grant(OPERATOR, keys=list(PERMISSIONS["keys"]))),
             history={"recent_grants": granted_marks(with_grants(grant(OPERATOR, keys=["get"])),
                                                     with_grants(grant(OPERATOR, keys=["All"])), _GRANT_TIME)}),
        Case("grant older than the window", fires=False,
             before=_INTRUDED, after=_COVERED, history={"recent_grants": _RECENT_GRANTS},
             policy={"history": {"grant_window": "PT3M"}}),
        Case("removal of a long-standing grant", fires=False,
             before=_INTRUDED, after=vault(accessPolicies=_INTRUDED["properties"]["accessPolicies"][1:]),
             history={"recent_grants": _RECENT_GRANTS}),
        Case("recent grant still in place", fires=False,
             before=_INTRUDED, after=_INTRUDED, history={"recent_grants": _RECENT_GRANTS}),
        Case("first sight has no baseline to compare", fires=False,
             before=None, after=vault(), history={"recent_grants": _RECENT_GRANTS}),
    ]


@rule(
    "KV-AP-05",
    title="Grant added and removed again (cover-up)",
    severity="high",
    mitre=("T1098", "T1555"),
    kind="diff + history",
    cases=_cover_up_cases,
    diff_fields=("removed_policies", "permission_changes"),
)
def cover_up(ctx: Context) -> Iterator[Hit]:
    """Access granted and taken away again within minutes is rarely a mistake being fixed: it is how
    an intruder reads what they came for and then leaves the configuration as it was, so that a
    scheduled comparison finds nothing. Paired by the marks the pipeline recorded for each grant."""
    if ctx.diff is None:
        return
    window = ctx.policy.history.grant_window
    by_principal: dict[str, dict[str, datetime]] = {}
    for mark in _revoked(ctx.diff):
        granted = ctx.history.recent_grants.get(mark)
        if granted is not None and ctx.now - granted <= window:
            principal_key = mark.split(":", 2)[1]
            by_principal.setdefault(principal_key, {})[mark] = granted
    for principal_key, marks in by_principal.items():
        object_id, _, application_id = principal_key.partition("|")
        yield Hit(
            evidence={
                "objectId": object_id,
                "applicationId": application_id or None,
                "marks": sorted(marks),
                "granted": {mark: at.isoformat() for mark, at in sorted(marks.items())},
                "removed": ctx.now.isoformat(),
                "windowSeconds": int(window.total_seconds()),
            },
            detail=object_id,
        )
