"""The findings' lifecycle: what an event found once suppressions and the blast radius are
applied, which findings join an open one, opening and refreshing them, and closing the ones
that no longer hold, with the alert sinks told (Defender: Healthy)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from kvguard.actions import ActionResult
from kvguard.blast_radius import enrich
from kvguard.catalog import RULES, alert_handlers
from kvguard.detection import Closing, Context, Finding, Rule, detect_all
from kvguard.flow.acting import deliver_all, remediated_rules, send
from kvguard.flow.context import EventContext, ResourceContext
from kvguard.flow.memory import baseline_config
from kvguard.flow.services import Services
from kvguard.ports import Alert, Baseline
from kvguard.resources import same_resource
from kvguard.suppression import suppress, suppress_covering
from kvguard.vault import VaultConfig
from remediation.base import Operation


def detected(services: Services, context: EventContext, judged: Context) -> tuple[list[Finding], list[str]]:
    """Every rule's findings on what `judged` shows, less the suppressed ones (and the notes saying
    which), each grant enriched with its blast radius when the Activity Log is read, plus what an
    earlier attempt remediated and the vault therefore no longer shows."""
    event, now = context.event, context.now
    assert event.vault is not None
    vault_id = event.vault.id  # as the event names it, before the record's spelling is known
    found, suppressed = suppress(detect_all(judged, RULES), vault_id, event.vault.name, services.policy, now)
    if services.activity_log is not None:
        found = enrich(found, [vault_id], event.time or now, services.clock.now(), services.activity_log)
    # One change is one finding: what the vault still shows and an earlier attempt also found is
    # listed once. A finding of the same rule about another change (another principal's grant)
    # is a change of its own, and the earlier attempt's alert for it may never have gone out.
    if not context.earlier.findings:
        return found, suppressed
    shown = {(f.rule, _evidence_key(f.evidence)) for f in found}
    return found + [f for f in context.earlier.findings if (f.rule, _evidence_key(f.evidence)) not in shown], suppressed


def detected_beside(services: Services, context: ResourceContext, judged: Context) -> tuple[list[Finding], list[str]]:
    """Every rule's findings on a resource beside the vaults, as for a vault: a broader scope's
    findings name the vaults it covers; suppressions hold back those whose every covered vault
    they match (and the notes say which); each grant gets the blast radius of its principal in
    the vaults it covers."""
    state, now = context.state, context.now
    found = detect_all(judged, RULES)
    if context.vault_id is None:  # a broader scope: the findings name the vaults it covers
        found = [replace(f, evidence={**f.evidence, "vaults": state.vault_ids}) for f in found]
    found, suppressed = suppress_covering(found, state.vaults, services.policy, now)
    if services.activity_log is not None:
        found = enrich(found, state.vault_ids, context.event.time or now, services.clock.now(), services.activity_log)
    return found, suppressed


def joined(services: Services, context: EventContext) -> list[Finding]:
    """Findings that repeat an open one (same rule, same evidence) where this event or the one
    that raised it named no caller: one change reported by Key Vault's VaultAccessPolicyChanged
    (in either schema) and by the ARM event is one finding and one alert; the other reports join
    it (not listed as findings of their own). The event naming the caller still decides
    remediation and the baseline. Read before the findings are refreshed."""
    if not context.findings:
        return []
    open_now = open_before(services, context)
    caller_named = bool(context.event.caller.ids())
    return [
        f for f in context.findings
        if (record := open_now.get(f.rule)) is not None
        and record.get("evidence") == _jsonable(f.evidence)
        and not (caller_named and record.get("callerNamed", True))
    ]


def open_before(services: Services, context: EventContext) -> dict[str, Mapping[str, Any]]:
    """The vault's open findings before this event's, by rule: read once per event, as nothing
    writes them before the event's record (the vault's lease is held until then)."""
    if context.open_before is None:
        context.open_before = {f.rule: f.finding for f in services.store.open_findings(context.vault_id)}
    return context.open_before


def opened(services: Services, context: EventContext) -> dict[str, Mapping[str, Any]]:
    """Every open finding of the vault once this event's are opened (or refreshed), as records
    to write. A diff finding keeps the baseline it was found against (the first one, on
    refresh), so it can be closed later when the vault is back to that state, remediated or not."""
    baseline, before = context.baseline, context.before
    open_now = dict(open_before(services, context))
    caller_named = bool(context.event.caller.ids())
    for finding in context.findings:
        record = finding.to_json()
        record["callerNamed"] = caller_named or bool(open_now.get(finding.rule, {}).get("callerNamed"))
        if RULES[finding.rule].kind.closing is Closing.BACK_TO_BASELINE and baseline is not None \
                and before is not None:
            kept = open_now.get(finding.rule, {}).get("baseline")
            record["baseline"] = kept or {"etag": baseline.etag, "config": dict(before.raw)}
        open_now[finding.rule] = record
    return open_now


def resolve(services: Services, context: EventContext) -> tuple[list[str], list[ActionResult]]:
    """The open findings (`context.opened`) that no longer hold, and the alert sinks told they are
    resolved (Defender: Healthy), the sinks side by side; closing them in the store is the
    caller's, with the event's other records. Remediated findings close; a posture finding closes when its condition
    is gone from the final state; a diff finding when the vault is back to the baseline it was
    found against; an event finding when the latest change to a vault that still exists no
    longer fires it (event rules judge the latest change)."""
    event, now, final = context.event, context.now, context.moved_to
    fixed = remediated_rules(context.actions)
    firing = {
        f.rule for f in context.findings
        if f.rule not in fixed
        # a remediation may also have ended a posture condition that fired with the change
        and not (fixed and RULES[f.rule].kind.closing is Closing.CONDITION_GONE and final is not None
                 and not RULES[f.rule].fires(event=event, before=None, after=final, policy=services.policy, now=now))
    }
    resolved = [
        rule_id for rule_id, record in context.opened.items()
        if rule_id in RULES and rule_id not in firing
        and (rule_id in fixed or _no_longer_holds(services, context, RULES[rule_id], record))
    ]
    if not resolved or context.decided.mode == "observe":
        return resolved, []
    closed = [(context.vault_id, rule_id) for rule_id in resolved]
    return resolved, deliver_all(services, [
        (handler_id, resolve_operations(handler_id, closed, event.id, now))
        for handler_id in alert_handlers() if handler_id in services.sinks
    ], final)


def _no_longer_holds(services: Services, context: EventContext, rule: Rule, record: Mapping[str, Any]) -> bool:
    """Judged on the vault as it moved to (None: gone, or its compared state did not move). A
    record is read (the store decodes it when it is first read) only for a diff finding of a vault
    whose compared state moved: only then can the baseline it was found against close it. The
    others close by their rule and the final state alone."""
    final = context.moved_to
    found_against = None
    wanted = rule.kind.closing is Closing.BACK_TO_BASELINE and final is not None
    stored = record.get("baseline") if wanted else None
    if final is not None and isinstance(stored, Mapping) and "config" in stored:
        found_against = baseline_config(
            services, Baseline(vault_id=final.id, config=stored["config"], etag=str(stored.get("etag")))
        )
    return rule.closes(event=context.event, final=final, found_against=found_against, policy=services.policy,
                       now=context.now)


def resolve_operations(
    handler_id: str, closed: Iterable[tuple[str, str]], event_id: str, now: datetime
) -> list[Operation]:
    """One `resolve` operation per (vault or resource id, rule) that closed."""
    return [
        Operation(handler_id, "resolve", vault_id, f"resolved {rule_id}",
                  Alert(vault_id, rule_id, "", "low", 0, 0, {}, (), event_id, None, now), rules=(rule_id,))
        for vault_id, rule_id in closed
    ]


def tell_resolved(
    services: Services, closed: Sequence[tuple[str, str]], now: datetime, current: VaultConfig | None = None
) -> list[ActionResult]:
    """Every configured alert sink hears of each (vault or resource id, rule) that closed outside a
    vault event (a sweep, a resource, kvguard's own deployment), the sinks side by side."""
    return send(services, [(handler_id, resolve_operations(handler_id, closed, "", now))
                           for handler_id in alert_handlers() if handler_id in services.sinks], current).answered()


def settle_resource_findings(services: Services, context: ResourceContext) -> list[ActionResult]:
    """Open a finding per rule that fired, under the resource's id (with the vaults it covers and,
    for a diff rule, the resource as the baseline had it), and close the ones that no longer
    hold: remediated, an event rule's finding once a later change no longer fires it, a diff
    rule's once the resource is back as the baseline had it. The alert sinks hear of each
    closed finding once per covered vault."""
    change, state, now = context.change, context.state, context.now
    fixed = remediated_rules(context.actions)
    open_now = {f.rule: f.finding for f in services.store.open_findings(change.id)}
    firing = {f.rule for f in context.findings} - fixed
    for finding in context.findings:
        if finding.rule in fixed:
            continue
        record: dict[str, Any] = {**finding.to_json(), "vaults": state.vault_ids}
        if RULES[finding.rule].kind.closing is Closing.BACK_TO_BASELINE:
            record["baseline"] = open_now.get(finding.rule, {}).get("baseline", {"config": state.before})
        services.store.open_finding(change.id, finding.rule, record, now)
        open_now[finding.rule] = record
    closed = []
    for rule_id, kept in open_now.items():
        if rule_id not in RULES or rule_id in firing:
            continue
        closing = RULES[rule_id].kind.closing
        gone = (rule_id in fixed
                or closing is Closing.LATEST_CHANGE
                or (closing is Closing.BACK_TO_BASELINE
                    and same_resource(context.final, (kept.get("baseline") or {}).get("config"))))
        if gone and services.store.close_finding(change.id, rule_id):
            closed.append((rule_id, kept.get("vaults") or state.vault_ids))
    # A finding remediated by this event was never opened, but its alerts went out: resolve them.
    closed += [(rule_id, state.vault_ids) for rule_id in sorted(fixed - set(open_now))]
    if not closed or context.decided.mode == "observe":
        return []
    return tell_resolved(services, [(str(vault), rule_id) for rule_id, vaults in closed for vault in vaults], now)


def _jsonable(evidence: Mapping[str, Any]) -> Any:
    """Evidence as the state store gives it back (JSON: tuples become lists)."""
    return json.loads(json.dumps(dict(evidence), default=str))


def _evidence_key(evidence: Mapping[str, Any]) -> str:
    """A finding's evidence as comparable text: the same once it went through an intent's JSON."""
    return json.dumps(dict(evidence), sort_keys=True, default=str)
