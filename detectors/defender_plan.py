"""Defender plan rules (KV-DEF-*): Defender for Key Vault off for a protected subscription.

Defender for Key Vault is what notices unusual secret reads from a Tor exit or a new country;
switching it off (the subscription's `KeyVaults` pricing back to Free) is how an intruder makes
the data-plane part of an attack invisible.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from detectors.coverage import defender_plan_gap
from kvguard.detection import Case, Context, Hit, rule
from kvguard.ids import subscription_of
from kvguard.intents import RestoreResource

PRICINGS = "microsoft.security/pricings"
PLAN_NAME = "keyvaults"


def is_key_vaults_plan(doc: Mapping[str, Any]) -> bool:
    return str(doc.get("id", "")).rstrip("/").lower().endswith(f"/pricings/{PLAN_NAME}")


def plan_tier(doc: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """The plan's (pricingTier, subPlan), as ARM spells them."""
    properties = (doc or {}).get("properties") or {}
    tier, sub_plan = properties.get("pricingTier"), properties.get("subPlan")
    return (str(tier) if tier is not None else None, str(sub_plan) if sub_plan is not None else None)


def _plan_off_cases() -> list[Case]:
    from detectors.cases import FOREIGN_SUBSCRIPTION, pricing

    return [
        Case("plan on Free", fires=True, sweep=(pricing("Free", None),)),
        Case("near miss: plan Standard", fires=False, sweep=(pricing(),)),
        Case("near miss: plan Standard with another sub-plan", fires=False,
             sweep=(pricing(sub_plan="PerTransaction"),)),
        Case("near miss: another subscription's plan off", fires=False,
             sweep=(pricing("Free", None, subscription=FOREIGN_SUBSCRIPTION),)),
        Case("near miss: the plan could not be read", fires=False, sweep=()),
    ]


@rule(
    "KV-DEF-01",
    title="Defender for Key Vault is off",
    severity="medium",
    mitre=("T1562.001",),
    kind="sweep",
    cases=_plan_off_cases,
)
def plan_off(ctx: Context) -> Iterator[Hit]:
    """The `KeyVaults` pricing of a protected vault's subscription is not Standard, so Defender
    for Key Vault watches none of its data-plane access. Judged by a sweep; a plan kvguard could
    not read is not judged."""
    if ctx.sweep is None:
        return
    subscription = subscription_of(ctx.sweep.vault.id)
    for doc in ctx.sweep.of_type("Microsoft.Security/pricings"):
        if not is_key_vaults_plan(doc) or subscription_of(str(doc.get("id", ""))) != subscription:
            continue
        gap = defender_plan_gap(doc)
        if gap is not None:
            yield Hit(evidence={"vault": ctx.sweep.vault.id, **gap})


def _plan_switched_off_cases() -> list[Case]:
    from detectors.cases import pricing

    return [
        Case("Standard switched to Free", fires=True, before=pricing(), after=pricing("Free", None),
             restore=(RestoreResource(pricing()["id"], "Microsoft.Security/pricings", pricing()["properties"]),)),
        Case("sub-plan changed: low at most", fires=True, before=pricing(), after=pricing(sub_plan="PerTransaction")),
        Case("near miss: switched on", fires=False, before=pricing("Free", None), after=pricing()),
        Case("near miss: first sight of a Free plan (KV-DEF-01's)", fires=False, before=None,
             after=pricing("Free", None)),
        Case("near miss: nothing changed", fires=False, before=pricing(), after=pricing()),
    ]


@rule(
    "KV-DEF-02",
    title="Defender for Key Vault switched off",
    severity="critical",
    mitre=("T1562.001",),
    kind="diff",
    remediation="restore_defender_plan",
    remediate_by_default=False,
    cases=_plan_switched_off_cases,
)
def plan_switched_off(ctx: Context) -> Iterator[Hit]:
    """The `KeyVaults` pricing went from Standard to another tier: critical, an intruder switching
    off the alarm. A Standard plan whose sub-plan changed is still on, so it is low. Setting it
    back needs Security Admin, so its remediation is opt-in."""
    state = ctx.resource
    if state is None or state.change.type.lower() != PRICINGS or state.before is None \
            or not is_key_vaults_plan(state.before):
        return
    (was, was_sub), (now, now_sub) = plan_tier(state.before), plan_tier(state.after)
    if str(was).lower() != "standard":
        return
    evidence = {"pricing": state.change.id, "before": {"pricingTier": was, "subPlan": was_sub},
                "after": {"pricingTier": now, "subPlan": now_sub}}
    if str(now).lower() != "standard":
        yield Hit(evidence=evidence, detail=f"pricingTier {was} -> {now}", restore=RestoreResource.baseline_of(state))
    elif str(now_sub).lower() != str(was_sub).lower():
        yield Hit(evidence=evidence, severity="low", detail=f"sub-plan {was_sub} -> {now_sub}",
                  restore=RestoreResource.baseline_of(state))
