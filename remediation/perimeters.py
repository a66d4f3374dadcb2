"""remove_perimeter_rule_source: take the inbound sources a perimeter access rule gained back out.

The plan names the rule and the sources that were added; the runner re-reads the rule just before
writing and PUTs it with only those sources taken out of what it then admits, so a source someone
added meanwhile, and every other property, stays as it is. Nothing to write when the sources are
gone already, or the rule is.
"""

from __future__ import annotations

from kvguard.intents import RemoveRuleSources
from kvguard.perimeters import ACCESS_RULES_TYPE
from remediation.base import Operation, PlanInput, handler


@handler("remove_perimeter_rule_source", kind="remediation",
         permission="Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/write",
         accepts=(RemoveRuleSources,))
def remove_perimeter_rule_source(data: PlanInput) -> list[Operation]:
    """PUT the access rule back without the sources the finding saw added (KV-NSP-01, opt-in:
    `rules: {KV-NSP-01: {remediate: true}}` and the perimeter's `accessRules/write`)."""
    state = data.resource
    if state is None or state.after is None:
        return []
    operations = []
    for _, intent in data.restores(RemoveRuleSources):
        if intent.refused or not (intent.prefixes or intent.subscriptions):
            continue
        removed = [*intent.prefixes, *(f"/subscriptions/{s}" for s in intent.subscriptions)]
        operations.append(Operation(
            handler="remove_perimeter_rule_source", kind="remove_rule_sources", vault_id=intent.rule_id,
            description=f"take {', '.join(removed)} out of access rule {intent.rule_id.rsplit('/', 1)[-1]}",
            target={"type": ACCESS_RULES_TYPE, "addressPrefixes": list(intent.prefixes),
                    "subscriptions": list(intent.subscriptions)},
            before=dict(state.after), rules=tuple(data.rules)))
    return operations
