"""Event feed rules (KV-EG-*): a vault's own events sent somewhere its owners do not control.

Key Vault's events name every secret, key and certificate and each new version as it is made: an
event subscription on the vault's system topic (or on the vault itself) to a foreign webhook is a
live inventory of what to steal, and of when a rotated secret is fresh.
"""

from __future__ import annotations

from collections.abc import Iterator

from kvguard.detection import Case, Context, Hit, rule
from kvguard.event_feeds import EVENT_SUBSCRIPTION_TYPES, allowed_destination, destination
from kvguard.ids import subscription_of
from kvguard.intents import DeleteResource

REPOINTED_REFUSED = ("re-pointed, not added: deleting it would remove what the baseline had, and its old "
                     "webhook URL is never returned to put back (alert only)")


def _feed_cases() -> list[Case]:
    from detectors.cases import (
        FOREIGN_SUBSCRIPTION,
        KVGUARD_IDENTITY,
        SOC_HOOK,
        SUBSCRIPTION,
        event_subscription,
    )

    foreign_hub = (f"/subscriptions/{FOREIGN_SUBSCRIPTION}/resourceGroups/rg-x/providers/"
                   "Microsoft.EventHub/namespaces/ns-x/eventhubs/feed")
    own_hub = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-soc/providers/"
               "Microsoft.EventHub/namespaces/ns/eventhubs/kv")
    added = event_subscription()
    return [
        Case("subscription to a foreign webhook added on the vault's system topic", fires=True, before=None,
             after=added,
             restore=(DeleteResource(added["id"], added["type"], "collector.attacker.example"),)),
        Case("subscription on the vault itself to an event hub in another subscription", fires=True, before=None,
             after=event_subscription(resource=foreign_hub, on_vault=True)),
        Case("the SOC's subscription re-pointed to a foreign webhook", fires=True,
             before=event_subscription(SOC_HOOK), after=event_subscription(),
             restore=(DeleteResource(added["id"], added["type"], "collector.attacker.example", REPOINTED_REFUSED),),
             policy={"allowed_event_destinations": ["hooks.soc.contoso.example"]}),
        Case("near miss: webhook host in allowed_event_destinations", fires=False, before=None,
             after=event_subscription(SOC_HOOK), policy={"allowed_event_destinations": [SOC_HOOK]}),
        Case("near miss: event hub in the vault's own subscription", fires=False, before=None,
             after=event_subscription(resource=own_hub)),
        Case("near miss: only the filter changed", fires=False, before=event_subscription(),
             after=event_subscription(filter_types=("Microsoft.KeyVault.SecretNewVersionCreated",))),
        Case("near miss: a subscription deleted", fires=False, before=event_subscription(), after=None),
        Case("near miss: written by kvguard's own identity", fires=False, before=None, after=added,
             event={"caller": {"object_id": KVGUARD_IDENTITY}},
             policy={"own_principal_ids": [KVGUARD_IDENTITY]}),
    ]


@rule(
    "KV-EG-01",
    title="Vault events sent to a foreign destination",
    severity="medium",
    mitre=("T1020",),
    kind="diff",
    remediation="remove_event_subscription",
    remediate_by_default=False,
    cases=_feed_cases,
)
def events_sent_away(ctx: Context) -> Iterator[Hit]:
    """An event subscription on a protected vault's events (on a system topic whose source is the
    vault, or on the vault itself) was added, or re-pointed, by someone other than kvguard, to a
    destination outside `allowed_event_destinations`: a webhook host not listed, or a resource
    outside the vault's subscription. An added one can be deleted again (opt-in: it needs
    `eventSubscriptions/delete`); a re-pointed one is alert only."""
    state = ctx.resource
    if state is None or state.change.type.lower() not in EVENT_SUBSCRIPTION_TYPES or state.after is None:
        return
    if ctx.event.caller.ids() & set(ctx.policy.own_principal_ids):
        return
    found, was = destination(state.after), destination(state.before)
    if found is None or (state.before is not None and found == was):
        return
    foreign = [v for v in state.vaults if not allowed_destination(found, ctx.policy.allowed_event_destinations,
                                                                  subscription_of(v.id))]
    if not foreign:
        return
    refused = REPOINTED_REFUSED if state.before is not None else ""
    evidence = {"eventSubscription": state.change.id, "destination": found.to_json(),
                "before": was.to_json() if was is not None else None, "vaults": [v.id for v in foreign]}
    if refused:
        evidence["restoreRefused"] = refused
    yield Hit(evidence=evidence, detail="re-pointed" if state.before is not None else "added",
              restore=(DeleteResource(state.change.id, state.change.type, found.value, refused),))
