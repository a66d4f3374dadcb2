"""Steering-tag rules (KV-TAG-*): someone tried to steer kvguard through a vault's tags.

The tags `kvguard-mode` and `criticality` steer kvguard itself. kvguard already reads them from
the accepted baseline and accepts a move only from a caller who may make it (see the README,
"Rules that keep kvguard honest"); this rule reports the attempt that guard held back.
"""

from __future__ import annotations

from collections.abc import Iterator

from kvguard.detection import Case, Context, Hit, rule
from kvguard.vault import STEERING_TAGS, VaultConfig


def moved_steering_tags(before: VaultConfig, after: VaultConfig) -> dict[str, dict[str, str | None]]:
    """The steering tags whose value differs (values compared trimmed and case-insensitively)."""
    moved = {}
    for name in STEERING_TAGS:
        was, now = before.tag(name), after.tag(name)
        if (was or "").strip().lower() != (now or "").strip().lower():
            moved[name] = {"before": was, "after": now}
    return moved


def _steering_tag_moved_cases() -> list[Case]:
    from detectors.cases import APP_TEAM, INTRUDER, vault

    approved = {"approved_callers": [APP_TEAM]}
    return [
        Case("kvguard-mode set to observe by an unapproved caller", fires=True,
             before=vault(), after=vault(tags={"kvguard-mode": "observe"}),
             event={"caller": {"object_id": INTRUDER}}, policy=approved),
        Case("criticality lowered by an unapproved caller", fires=True,
             before=vault(tags={"criticality": "high"}), after=vault(tags={"criticality": "low"}),
             event={"caller": {"object_id": INTRUDER}}, policy=approved),
        Case("near miss: kvguard-mode moved by an approved caller", fires=False,
             before=vault(), after=vault(tags={"kvguard-mode": "observe"}),
             event={"caller": {"object_id": APP_TEAM}}, policy=approved),
        Case("kvguard-mode set to observe while no approved callers are configured", fires=True,
             before=vault(), after=vault(tags={"kvguard-mode": "observe"}), event={"caller": {"object_id": INTRUDER}}),
        Case("near miss: another tag changed", fires=False, before=vault(), after=vault(tags={"owner": "payments"}),
             event={"caller": {"object_id": INTRUDER}}, policy=approved),
        Case("near miss: only the spelling of the value changed", fires=False,
             before=vault(tags={"kvguard-mode": "remediate"}), after=vault(tags={"kvguard-mode": "Remediate"}),
             event={"caller": {"object_id": INTRUDER}}, policy=approved),
        Case("near miss: a failed write", fires=False, before=vault(), after=vault(tags={"kvguard-mode": "observe"}),
             event={"caller": {"object_id": INTRUDER}, "succeeded": False}, policy=approved),
    ]


@rule(
    "KV-TAG-01",
    title="Steering tag moved by a caller who may not move it",
    severity="medium",
    mitre=("T1562.001",),
    kind="diff",
    cases=_steering_tag_moved_cases,
)
def steering_tag_moved(ctx: Context) -> Iterator[Hit]:
    """A `kvguard-mode` or `criticality` tag changed by a caller who is not approved (with no
    approved callers configured, by anyone): an attempt to switch kvguard to observe or to lower a
    vault's weight. kvguard keeps steering by the baseline's tags and never accepts the move; this
    is the record that someone tried (medium: alerted at the default threshold, so a move is never
    silent). A failed write or an event naming no caller moved nothing of its own: the event naming
    the caller decides."""
    if ctx.before is None or ctx.after is None:
        return
    caller = ctx.event.caller.ids()
    if not ctx.event.succeeded or not caller or caller & set(ctx.policy.approved_callers):
        return
    moved = moved_steering_tags(ctx.before, ctx.after)
    if moved:
        yield Hit(evidence={"tags": moved, "caller": ctx.event.caller.describe(), "callerId": ctx.event.caller.id})
