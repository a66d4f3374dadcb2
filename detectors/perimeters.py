"""Network Security Perimeter rules (KV-NSP-*): the network path to a vault opened at its perimeter.

A vault whose `publicNetworkAccess` is `SecuredByPerimeter` answers only what its perimeter's
profile admits, and an `Enforced` association makes the perimeter's rules win over the vault's own
firewall. An inbound access rule that gains an address range or a subscription, or an association
moved to `Learning`, `Transition` or `Audit` (or deleted), opens the way to the secrets without a
single change to the vault's `networkAcls`.
"""

from __future__ import annotations

from collections.abc import Iterator

from kvguard.detection import Case, Context, Hit, rule
from kvguard.intents import RemoveRuleSources
from kvguard.perimeters import (
    ACCESS_RULES_TYPE,
    ASSOCIATIONS_TYPE,
    ENFORCED,
    SECURED_BY_PERIMETER,
    access_mode,
    inbound_sources,
    outside,
    perimeter_ref,
)

ASSOCIATION_REFUSED = "an association's access mode is set back by the perimeter's owner: alert only"


def _perimeter_opened_cases() -> list[Case]:
    from detectors.cases import FOREIGN_SUBSCRIPTION, access_rule, perimeter_association, vault

    secured = [vault(publicNetworkAccess="SecuredByPerimeter")]
    rule_id = access_rule()["id"]

    def on_rule(before: object, after: object, **extra: object) -> dict[str, object]:
        return {"type": ACCESS_RULES_TYPE, "id": rule_id, "before": before, "after": after, "vaults": secured,
                **extra}

    def on_association(before: object, after: object, vaults: object = secured) -> dict[str, object]:
        return {"type": ASSOCIATIONS_TYPE, "id": perimeter_association()["id"], "before": before, "after": after,
                "vaults": vaults}

    return [
        Case("address range added to an inbound rule", fires=True,
             resource=on_rule(access_rule(), access_rule(("10.20.0.0/16", "0.0.0.0/0"))),
             restore=(RemoveRuleSources(rule_id, ("0.0.0.0/0",), ()),)),
        Case("foreign subscription added to an inbound rule", fires=True,
             resource=on_rule(access_rule(), access_rule(subscriptions=(FOREIGN_SUBSCRIPTION,))),
             restore=(RemoveRuleSources(rule_id, (), (FOREIGN_SUBSCRIPTION,)),)),
        Case("new inbound rule on the vault's profile", fires=True,
             resource=on_rule(None, access_rule(("203.0.113.0/24",)))),
        Case("outbound rule turned inbound", fires=True,
             resource=on_rule(access_rule(direction="Outbound"), access_rule())),
        Case("association moved from Enforced to Learning", fires=True,
             resource=on_association(perimeter_association(), perimeter_association("Learning")),
             restore=(RemoveRuleSources(perimeter_association()["id"], (), (), ASSOCIATION_REFUSED),)),
        Case("association deleted", fires=True, resource=on_association(perimeter_association(), None)),
        Case("near miss: range added inside allowed_perimeter_sources", fires=False,
             resource=on_rule(access_rule(), access_rule(("10.20.0.0/16", "10.30.4.0/24"))),
             policy={"allowed_perimeter_sources": ["10.30.0.0/16"]}),
        Case("near miss: allowed subscription added", fires=False,
             resource=on_rule(access_rule(), access_rule(subscriptions=(FOREIGN_SUBSCRIPTION,))),
             policy={"allowed_perimeter_sources": [f"/subscriptions/{FOREIGN_SUBSCRIPTION}"]}),
        Case("near miss: a source removed", fires=False,
             resource=on_rule(access_rule(("10.20.0.0/16", "10.21.0.0/16")), access_rule())),
        Case("near miss: same range spelled differently", fires=False,
             resource=on_rule(access_rule(("10.20.0.0/16",)), access_rule(("10.20.1.1/16",)))),
        Case("near miss: outbound rule gains a range", fires=False,
             resource=on_rule(access_rule(direction="Outbound"), access_rule(("0.0.0.0/0",), direction="Outbound"))),
        Case("near miss: association moved from Learning to Enforced", fires=False,
             resource=on_association(perimeter_association("Learning"), perimeter_association())),
        Case("near miss: association left Enforced on a vault not SecuredByPerimeter", fires=False,
             resource=on_association(perimeter_association(), perimeter_association("Learning"),
                                     [vault(publicNetworkAccess="Disabled")])),
    ]


@rule(
    "KV-NSP-01",
    title="Network Security Perimeter opened for a vault",
    severity="high",
    mitre=("T1562.007",),
    kind="diff",
    remediation="remove_perimeter_rule_source",
    remediate_by_default=False,
    cases=_perimeter_opened_cases,
)
def perimeter_opened(ctx: Context) -> Iterator[Hit]:
    """An access rule of a profile a protected vault is associated with gained an inbound source
    (address prefix or subscription) outside `allowed_perimeter_sources`; or the vault's
    association left `Enforced` (to `Learning`, `Transition` or `Audit`) or was deleted while the
    vault's `publicNetworkAccess` is `SecuredByPerimeter`. The added sources can be taken out of
    the rule again (opt-in: it needs the perimeter's `accessRules/write`); an association's mode
    is alert only."""
    state = ctx.resource
    if state is None:
        return
    ref = perimeter_ref(state.change.id)
    kind = state.change.type.lower()
    if kind == ACCESS_RULES_TYPE.lower() and state.after is not None and ref is not None:
        added = inbound_sources(state.after) - inbound_sources(state.before)
        gained = outside(added, ctx.policy.allowed_perimeter_sources)
        if gained:
            prefixes, subscriptions = tuple(sorted(gained.prefixes)), tuple(sorted(gained.subscriptions))
            yield Hit(evidence={"accessRule": state.change.id, "perimeter": ref.perimeter, "profile": ref.profile,
                                "addedPrefixes": list(prefixes), "addedSubscriptions": list(subscriptions),
                                "vaults": state.vault_ids},
                      detail="inbound sources added outside allowed_perimeter_sources",
                      restore=(RemoveRuleSources(state.change.id, prefixes, subscriptions),))
    elif kind == ASSOCIATIONS_TYPE.lower() and str(access_mode(state.before)).lower() == ENFORCED:
        if state.after is not None and str(access_mode(state.after)).lower() == ENFORCED:
            return
        secured = [v.id for v in state.vaults if v.public_network_access == SECURED_BY_PERIMETER]
        if not secured:
            return
        yield Hit(evidence={"association": state.change.id, "before": access_mode(state.before),
                            "after": access_mode(state.after), "vaults": secured},
                  detail="association deleted" if state.after is None
                  else f"association moved from Enforced to {access_mode(state.after)}",
                  restore=(RemoveRuleSources(state.change.id, (), (), ASSOCIATION_REFUSED),))
