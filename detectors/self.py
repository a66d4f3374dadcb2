"""Self rules (KV-SELF-*): kvguard's own identity and deployment, watched like anyone else's.

Whoever can run code as kvguard's identity can write every vault it guards, and whoever can edit
its event subscription or app settings can switch it off. These rules make both visible.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kvguard.deployment import (
    APP_CONFIG_WRITE,
    APP_DELETE,
    APP_STOP,
    APP_WRITE,
    EVENT_SUBSCRIPTION_DELETE,
    EVENT_SUBSCRIPTION_WRITE,
    SYSTEM_TOPIC_DELETE,
    changed_own_resource,
)
from kvguard.detection import Case, Context, Hit, rule
from kvguard.events import Caller


def _caller(caller: Caller) -> dict[str, Any]:
    fields = {"objectId": caller.object_id, "appId": caller.app_id, "principalId": caller.evidence_principal_id,
              "upn": caller.upn, "ip": caller.ip}
    return {name: value for name, value in fields.items() if value}


def _unplanned_own_write_cases() -> list[Case]:
    from detectors.cases import KVGUARD_IDENTITY

    return [
        Case("own identity, no planned write", fires=True, policy={"own_principal_ids": [KVGUARD_IDENTITY]},
             event={"kind": "access_policy", "caller": {"object_id": KVGUARD_IDENTITY, "upn": None}}),
        Case("own identity by application id, other case", fires=True,
             policy={"own_principal_ids": [KVGUARD_IDENTITY]},
             event={"caller": {"object_id": None, "upn": None, "app_id": KVGUARD_IDENTITY.upper()}}),
        Case("failed attempt by the own identity", fires=True, policy={"own_principal_ids": [KVGUARD_IDENTITY]},
             event={"succeeded": False, "caller": {"object_id": KVGUARD_IDENTITY, "upn": None}}),
        Case("someone else's write", fires=False, policy={"own_principal_ids": [KVGUARD_IDENTITY]}),
        Case("no own identity configured", fires=False,
             event={"caller": {"object_id": KVGUARD_IDENTITY, "upn": None}}),
    ]


@rule(
    "KV-SELF-01",
    title="Write by kvguard's identity that kvguard did not plan",
    severity="critical",
    mitre=("T1078.004",),
    kind="event",
    cases=_unplanned_own_write_cases,
)
def unplanned_own_write(ctx: Context) -> Iterator[Hit]:
    """kvguard's identity may write every vault it guards, access policies included, so it could
    grant itself or anyone the secrets. Its own writes are noted in a ledger before they are made
    and never reach the detectors; an event of that identity that does reach them matched no
    planned write: someone else is running code as kvguard (a changed deployment, a resource the
    identity is attached to)."""
    own = ctx.event.caller.ids() & set(ctx.policy.own_principal_ids)
    if not own or ctx.event.vault is None:
        return
    yield Hit(evidence={
        "ownIdentity": sorted(own)[0],
        "caller": _caller(ctx.event.caller),
        "operation": ctx.event.operation,
        "succeeded": ctx.event.succeeded,
        "vaultId": ctx.event.vault.id,
        "eventId": ctx.event.id,
        "correlationId": ctx.event.correlation_id,
    })


def _own_deployment_changed_cases() -> list[Case]:
    from detectors.cases import (
        APP_CONFIG_WRITE_ID,
        EVENT_SUBSCRIPTION_ID,
        FUNCTION_APP_ID,
        OPERATOR,
        OWN_DEPLOYMENT,
    )

    return [
        Case("event subscription deleted", fires=True, policy=OWN_DEPLOYMENT, before=None, after=None,
             event={"vault_id": EVENT_SUBSCRIPTION_ID, "operation": EVENT_SUBSCRIPTION_DELETE, "kind": "other"}),
        Case("event subscription filter edited", fires=True, policy=OWN_DEPLOYMENT, before=None, after=None,
             event={"vault_id": EVENT_SUBSCRIPTION_ID.upper(), "operation": EVENT_SUBSCRIPTION_WRITE,
                    "kind": "other"}),
        Case("app settings changed", fires=True, policy=OWN_DEPLOYMENT, before=None, after=None,
             event={"vault_id": APP_CONFIG_WRITE_ID, "operation": APP_CONFIG_WRITE, "kind": "other"}),
        Case("function app written (its settings ride along)", fires=True, policy=OWN_DEPLOYMENT, before=None,
             after=None, event={"vault_id": FUNCTION_APP_ID, "operation": APP_WRITE, "kind": "other"}),
        Case("function app stopped", fires=True, policy=OWN_DEPLOYMENT, before=None, after=None,
             event={"vault_id": FUNCTION_APP_ID, "operation": APP_STOP, "kind": "other"}),
        Case("function app deleted", fires=True, policy=OWN_DEPLOYMENT, before=None, after=None,
             event={"vault_id": FUNCTION_APP_ID, "operation": APP_DELETE, "kind": "other"}),
        Case("system topic carrying the subscription deleted", fires=True, policy=OWN_DEPLOYMENT, before=None,
             after=None, event={"vault_id": EVENT_SUBSCRIPTION_ID.split("/eventSubscriptions/")[0],
                                "operation": SYSTEM_TOPIC_DELETE, "kind": "other"}),
        Case("found missing by the reconcile check", fires=True, policy=OWN_DEPLOYMENT, before=None, after=None,
             event={"vault_id": EVENT_SUBSCRIPTION_ID, "operation": EVENT_SUBSCRIPTION_DELETE, "kind": "other",
                    "event_type": "kvguard.Reconciliation", "caller": {"object_id": None, "upn": None}}),
        Case("changed by an approved caller", fires=False, before=None, after=None,
             policy={**OWN_DEPLOYMENT, "approved_callers": [OPERATOR]},
             event={"vault_id": APP_CONFIG_WRITE_ID, "operation": APP_CONFIG_WRITE, "kind": "other"}),
        Case("another app's settings", fires=False, policy=OWN_DEPLOYMENT, before=None, after=None,
             event={"vault_id": FUNCTION_APP_ID + "-other/config/appsettings", "operation": APP_CONFIG_WRITE,
                    "kind": "other"}),
        Case("another system topic deleted", fires=False, policy=OWN_DEPLOYMENT, before=None, after=None,
             event={"vault_id": EVENT_SUBSCRIPTION_ID.split("/systemTopics/")[0] + "/systemTopics/evgst-other",
                    "operation": SYSTEM_TOPIC_DELETE, "kind": "other"}),
        Case("another app stopped", fires=False, policy=OWN_DEPLOYMENT, before=None, after=None,
             event={"vault_id": FUNCTION_APP_ID + "-other", "operation": APP_STOP, "kind": "other"}),
        Case("failed attempt changed nothing", fires=False, policy=OWN_DEPLOYMENT, before=None, after=None,
             event={"vault_id": EVENT_SUBSCRIPTION_ID, "operation": EVENT_SUBSCRIPTION_DELETE, "kind": "other",
                    "succeeded": False}),
        Case("no own deployment configured", fires=False, before=None, after=None,
             event={"vault_id": EVENT_SUBSCRIPTION_ID, "operation": EVENT_SUBSCRIPTION_DELETE, "kind": "other"}),
    ]


@rule(
    "KV-SELF-02",
    title="kvguard's own deployment changed",
    severity="critical",
    mitre=("T1562.001",),
    kind="diff",
    cases=_own_deployment_changed_cases,
)
def own_deployment_changed(ctx: Context) -> Iterator[Hit]:
    """Deleting kvguard's event subscription (or the system topic it is on) or editing it makes
    kvguard blind, and an app settings change can switch it to observe mode or point it elsewhere;
    stopping or deleting the app silences it: the quiet ways to disarm it before tampering with
    vaults. Only an approved caller (the deployment pipeline) may do that.
    The deletion may be the last event the subscription delivers, so the reconcile timer also
    checks that the subscription exists with its filter."""
    event = ctx.event
    owned = changed_own_resource(event.subject, event.operation, ctx.policy.own_resource_ids)
    if owned is None or not event.succeeded:
        return
    if event.caller.ids() & set(ctx.policy.approved_callers):
        return
    evidence: dict[str, Any] = {
        "resource": owned,
        "changed": event.subject,
        "operation": event.operation,
        "caller": _caller(event.caller) or None,
        "eventId": event.id,
    }
    found = event.raw.get("reconciliation") if event.event_type == "kvguard.Reconciliation" else None
    if found is not None:
        evidence["found"] = found
    yield Hit(evidence=evidence, detail=event.caller.describe() if event.caller.ids() else "found by reconciliation")
