"""Identity rules (KV-ID-*): who made the change, from where, when, and how often."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from kvguard.detection import Case, Context, Hit, rule
from kvguard.events import Caller

if TYPE_CHECKING:
    from kvguard.policy import ChangeWindow

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PIPELINE_APP = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"  # a deployment pipeline's application id
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def _applies(ctx: Context) -> bool:
    """Event rules judge every Key Vault event that names a vault, and every watched change to a
    resource covering one (a role assignment, a lock, …), failed attempts included."""
    return ctx.event.vault is not None or ctx.resource is not None


def _caller(caller: Caller) -> dict[str, Any]:
    """The caller's claims as evidence: only the ones the event carried."""
    fields = {
        "objectId": caller.object_id,
        "appId": caller.app_id,
        "principalId": caller.evidence_principal_id,
        "upn": caller.upn,
        "tenantId": caller.tenant_id,
        "idp": caller.idp,
        "ip": caller.ip,
    }
    return {name: value for name, value in fields.items() if value}


def _event(ctx: Context) -> dict[str, Any]:
    return {"operation": ctx.event.operation, "succeeded": ctx.event.succeeded}


def _unapproved_caller_cases() -> list[Case]:
    from detectors.cases import INTRUDER, OPERATOR

    return [
        Case("unknown caller", fires=True, policy={"approved_callers": [OPERATOR]},
             event={"caller": {"object_id": INTRUDER, "upn": "mallory@contoso.example"}}),
        Case("failed attempt on a deleted vault", fires=True, policy={"approved_callers": [OPERATOR]},
             before=None, after=None,
             event={"kind": "delete", "succeeded": False, "caller": {"object_id": INTRUDER}}),
        Case("approved caller, id in other case", fires=False, policy={"approved_callers": [OPERATOR.upper()]}),
        Case("approved by application id", fires=False, policy={"approved_callers": [PIPELINE_APP]},
             event={"caller": {"object_id": INTRUDER, "app_id": PIPELINE_APP}}),
        Case("no approved list configured", fires=False, event={"caller": {"object_id": INTRUDER}}),
    ]


@rule(
    "KV-ID-01",
    title="Change by a caller not on the approved list",
    severity="medium",
    mitre=("T1078.004",),
    kind="event",
    remediation=None,
    cases=_unapproved_caller_cases,
)
def unapproved_caller(ctx: Context) -> Iterator[Hit]:
    """When the organisation names the identities that may change vaults (its deployment
    pipelines), a change by anyone else is out of process. Object id, application id, evidence
    principal id and UPN are all compared, case-insensitively. Key Vault's own
    `VaultAccessPolicyChanged` carries no caller and is left to the ARM event of the same change."""
    approved = set(ctx.policy.approved_callers)
    if not approved or not _applies(ctx) or ctx.event.is_access_policy_changed:
        return
    ids = ctx.event.caller.ids()
    if ids & approved:
        return
    yield Hit(
        evidence={"caller": _caller(ctx.event.caller), "callerIds": sorted(ids), **_event(ctx)},
        detail=ctx.event.caller.describe(),
    )


def _vault_tenant(ctx: Context) -> str | None:
    for config in (ctx.after, ctx.before, *(ctx.resource.vaults if ctx.resource else ())):
        if config is not None and config.tenant_id:
            return config.tenant_id.lower()
    return ctx.event.tenant_id.lower() if ctx.event.tenant_id else None


def _foreign_idp(idp: str, home_tenant: str) -> bool:
    """Whether an `idp` claim names an issuer other than the home tenant's own (`live.com`,
    `https://sts.windows.net/<other tenant>/`)."""
    tenants = {t.lower() for t in _GUID.findall(idp)}
    return tenants != {home_tenant}


def _foreign_identity_cases() -> list[Case]:
    from detectors.cases import OTHER_TENANT, TENANT

    return [
        Case("caller of another tenant", fires=True, event={"caller": {"tenant_id": OTHER_TENANT}}),
        Case("guest account", fires=True, event={"caller": {"upn": "mallory_fabrikam.example#EXT#@contoso.example"}}),
        Case("personal Microsoft account", fires=True, event={"caller": {"idp": "live.com"}}),
        Case("issued by another tenant, on a deleted vault", fires=True, before=None, after=None,
             event={"kind": "delete", "caller": {"idp": f"https://sts.windows.net/{OTHER_TENANT}/"}}),
        Case("home tenant, id in other case", fires=False, event={"caller": {"tenant_id": TENANT.upper()}}),
        Case("issuer is the home tenant", fires=False,
             event={"caller": {"idp": f"https://sts.windows.net/{TENANT.upper()}/"}}),
        Case("'ext' in a member's UPN", fires=False, event={"caller": {"upn": "ext.ops#team@contoso.example"}}),
        Case("no tenant claim", fires=False, event={"caller": {"tenant_id": None}}),
    ]


@rule(
    "KV-ID-02",
    title="Change by an identity of another tenant or a guest",
    severity="high",
    mitre=("T1078.004",),
    kind="event",
    remediation=None,
    cases=_foreign_identity_cases,
)
def foreign_identity(ctx: Context) -> Iterator[Hit]:
    """Vault administrators belong to the vault's own tenant. A token of another tenant, a guest
    account (`#EXT#` in the UPN) or an identity authenticated by a foreign identity provider (the
    `idp` claim naming anything but the home tenant's issuer, e.g. `live.com`) means someone from
    outside the organisation changed the vault: a partner's compromised account, or a cross-tenant
    application."""
    if not _applies(ctx):
        return
    caller = ctx.event.caller
    home = _vault_tenant(ctx)
    reasons: list[str] = []
    if caller.tenant_id and home and caller.tenant_id.lower() != home:
        reasons.append("caller token issued by another tenant")
    if caller.upn and "#ext#" in caller.upn.lower():
        reasons.append("guest account (#EXT# in the UPN)")
    if caller.idp and _foreign_idp(caller.idp, home or (caller.tenant_id or "").lower()):
        reasons.append("authenticated by a foreign identity provider")
    if reasons:
        yield Hit(
            evidence={"caller": _caller(caller), "vaultTenantId": home, "reasons": reasons, **_event(ctx)},
            detail=caller.describe(),
        )


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client address as ARM reports it: plain, `1.2.3.4:port`, `[v6]:port` or IPv4-mapped IPv6."""
    value = text.strip()
    if value.startswith("[") and "]" in value:
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _outside_networks_cases() -> list[Case]:
    return [
        Case("public address", fires=True, policy={"allowed_networks": ["10.0.0.0/8"]},
             event={"caller": {"ip": "203.0.113.9"}}),
        Case("IPv6 caller, IPv4 networks only", fires=True, policy={"allowed_networks": ["10.0.0.0/8"]},
             event={"caller": {"ip": "2001:db8::7"}}),
        Case("address that does not parse", fires=True, policy={"allowed_networks": ["10.0.0.0/8"]},
             event={"caller": {"ip": "unknown"}}),
        Case("inside an allowed network", fires=False, policy={"allowed_networks": ["192.0.2.0/24", "10.0.0.0/8"]}),
        Case("caller without an address", fires=False, policy={"allowed_networks": ["10.0.0.0/8"]},
             event={"caller": {"ip": None}}),
        Case("no allowed networks configured", fires=False, event={"caller": {"ip": "203.0.113.9"}}),
    ]


@rule(
    "KV-ID-03",
    title="Change from outside the allowed networks",
    severity="medium",
    mitre=("T1078.004",),
    kind="event",
    remediation=None,
    cases=_outside_networks_cases,
)
def outside_networks(ctx: Context) -> Iterator[Hit]:
    """Administrators change vaults from the organisation's networks (offices, VPN, build agents).
    A change from anywhere else suggests stolen credentials used from the attacker's own
    infrastructure. An address that cannot be read is reported, not trusted."""
    if not ctx.policy.allowed_networks or not _applies(ctx) or not ctx.event.caller.ip:
        return
    raw = ctx.event.caller.ip
    evidence: dict[str, Any] = {"ip": raw, "allowedNetworks": list(ctx.policy.allowed_networks), **_event(ctx)}
    address = _address(raw)
    if address is None:
        yield Hit(evidence={**evidence, "problem": "not an IP address"}, detail=raw)
        return
    networks = [ipaddress.ip_network(n) for n in ctx.policy.allowed_networks]
    if not any(address.version == n.version and address in n for n in networks):
        yield Hit(evidence=evidence, detail=str(address))


def in_window(moment: datetime, window: ChangeWindow) -> bool:
    """Whether `moment` (timezone-aware; naive is taken as UTC) falls in `window`.

    The window opens at `start` on each listed day (in its own time zone) and closes at `end`,
    the end excluded. When `end <= start` it runs past midnight, and the hours after midnight
    belong to the day it opened on: a Friday 22:00-06:00 window covers Saturday 03:00."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(ZoneInfo(window.timezone))
    clock = local.time().replace(tzinfo=None)
    day = DAYS[local.weekday()]
    if window.start < window.end:
        return day in window.days and window.start <= clock < window.end
    opened_yesterday = DAYS[(local - timedelta(days=1)).weekday()]
    return (day in window.days and clock >= window.start) or (opened_yesterday in window.days and clock < window.end)


def _outside_change_window_cases() -> list[Case]:
    return [
        Case("saturday", fires=True,
             policy={"change_windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00",
                                         "timezone": "Europe/Berlin"}]},
             event={"time": datetime(2026, 11, 28, 10, 0, tzinfo=UTC)}),
        Case("after hours in the window's zone", fires=True,
             policy={"change_windows": [{"days": ["wed"], "start": "08:00", "end": "18:00",
                                         "timezone": "Europe/Berlin"}]},
             event={"time": datetime(2026, 11, 25, 17, 30, tzinfo=UTC)}),
        Case("working hours", fires=False,
             policy={"change_windows": [{"days": ["Monday", "Wed"], "start": "08:00", "end": "18:00",
                                         "timezone": "Europe/Berlin"}]}),
        Case("night window opened on friday", fires=False,
             policy={"change_windows": [{"days": ["fri"], "start": "22:00", "end": "06:00", "timezone": "UTC"}]},
             event={"time": datetime(2026, 11, 28, 3, 0, tzinfo=UTC)}),
        Case("no change windows configured", fires=False, event={"time": datetime(2026, 11, 28, 3, 0, tzinfo=UTC)}),
    ]


@rule(
    "KV-ID-04",
    title="Change outside the change windows",
    severity="low",
    mitre=("T1078.004",),
    kind="event",
    remediation=None,
    cases=_outside_change_window_cases,
)
def outside_change_window(ctx: Context) -> Iterator[Hit]:
    """Where changes are only made in agreed windows, a change outside all of them is either an
    emergency or someone who hopes nobody is watching. Each window is judged in its own time zone,
    daylight saving included; the time is the event's (the moment of the change)."""
    windows = ctx.policy.change_windows
    if not windows or not _applies(ctx):
        return
    moment = ctx.event.time or ctx.now
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if any(in_window(moment, w) for w in windows):
        return
    yield Hit(evidence={
        "time": moment.astimezone(UTC).isoformat(),
        "windows": [
            {
                "days": list(w.days),
                "start": w.start.isoformat(timespec="minutes"),
                "end": w.end.isoformat(timespec="minutes"),
                "timezone": w.timezone,
                "localTime": moment.astimezone(ZoneInfo(w.timezone)).strftime("%a %H:%M"),
            }
            for w in windows
        ],
        "caller": _caller(ctx.event.caller),
        **_event(ctx),
    })


def _first_change_by_caller_cases() -> list[Case]:
    from detectors.cases import INTRUDER

    return [
        Case("caller never seen on this vault", fires=True, history={"caller_seen_before": False},
             event={"caller": {"object_id": INTRUDER}}),
        Case("failed first attempt by an application", fires=True, history={"caller_seen_before": False},
             event={"succeeded": False, "caller": {"object_id": None, "upn": None, "app_id": INTRUDER}}),
        Case("caller seen before", fires=False, history={"caller_seen_before": True}),
        Case("event names no caller", fires=False, history={"caller_seen_before": False},
             event={"caller": {"object_id": None, "upn": None, "tenant_id": None, "ip": None}}),
    ]


@rule(
    "KV-ID-05",
    title="First change to this vault by this caller",
    severity="low",
    mitre=("T1078.004",),
    kind="event + history",
    remediation=None,
    cases=_first_change_by_caller_cases,
)
def first_change_by_caller(ctx: Context) -> Iterator[Hit]:
    """Most vaults are changed by the same few identities. A new one is worth a look: a new team
    member, a new pipeline, or an attacker's foothold. Low on its own; it adds weight to others."""
    caller = ctx.event.caller
    if not _applies(ctx) or ctx.history.caller_seen_before or caller.id is None:
        return
    yield Hit(evidence={"callerId": caller.id, "caller": _caller(caller), **_event(ctx)}, detail=caller.describe())


def _burst_cases() -> list[Case]:
    return [
        Case("five vaults in the window", fires=True, history={"caller_vaults": 5}),
        Case("five failures in the window", fires=True, history={"caller_failures": 5},
             event={"succeeded": False}),
        Case("failures at a lower failure threshold", fires=True,
             policy={"history": {"failure_threshold": 3}}, history={"caller_failures": 3}),
        Case("four vaults", fires=False, history={"caller_vaults": 4, "caller_failures": 4}),
        Case("failures below a higher failure threshold", fires=False,
             policy={"history": {"failure_threshold": 10}}, history={"caller_failures": 6}),
    ]


@rule(
    "KV-ID-06",
    title="One caller changing many vaults, or failing repeatedly",
    severity="high",
    mitre=("T1098", "T1526"),
    kind="event + history",
    remediation=None,
    cases=_burst_cases,
)
def burst(ctx: Context) -> Iterator[Hit]:
    """One identity touching many vaults within minutes is enumeration or a scripted takeover
    (granting itself access everywhere); many failed attempts are someone probing what their
    stolen credentials may do. The pipeline counts within the burst window, this vault included."""
    caller = ctx.event.caller
    if not _applies(ctx) or caller.id is None:
        return
    history = ctx.policy.history
    failure_threshold = history.failure_threshold or history.burst_threshold
    reasons: list[str] = []
    if ctx.history.caller_vaults >= history.burst_threshold:
        reasons.append(f"changed {ctx.history.caller_vaults} vaults")
    if ctx.history.caller_failures >= failure_threshold:
        reasons.append(f"failed {ctx.history.caller_failures} times")
    if not reasons:
        return
    yield Hit(
        evidence={
            "callerId": caller.id,
            "caller": _caller(caller),
            "vaults": ctx.history.caller_vaults,
            "failures": ctx.history.caller_failures,
            "vaultThreshold": history.burst_threshold,
            "failureThreshold": failure_threshold,
            "windowMinutes": history.burst_window.total_seconds() / 60,
            "reasons": reasons,
            **_event(ctx),
        },
        detail=" and ".join(reasons),
    )

