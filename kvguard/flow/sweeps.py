"""What the reconcile timer runs beside the events: reconciliation (the changes Event Grid
dropped, judged through stand-in events) and the sweep rules (KV-LOG-02, KV-DEF-01: reads
beyond the changed resource).

Sweeps are judged per known vault by the reconcile timer, `kvguard baseline` and replay's
`reconcile: {}`, never per event. A sweep finding is kept open under the vault's sweep key
(apart from the vault's own findings, which a vault event settles), reported when it opens and
resolved when a later sweep no longer finds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from kvguard.actions import ActionResult
from kvguard.catalog import RULES
from kvguard.decision import decide, effective_mode
from kvguard.detection import Basis, Context, History, Rule, detect_all
from kvguard.events import Caller, VaultEvent
from kvguard.flow.acting import act_beside, alerts_for
from kvguard.flow.context import FlowContext
from kvguard.flow.findings import tell_resolved
from kvguard.flow.memory import baseline_config, known_vaults
from kvguard.flow.reasons import sweep_reason
from kvguard.flow.services import Services
from kvguard.ids import parse_vault_ref, vault_key
from kvguard.outcome import Outcome
from kvguard.ports import AuditRecord, Baseline, ConcurrencyError, PermanentError
from kvguard.resources import (
    LISTED_TYPES,
    SWEEP_TYPES,
    ResourceChange,
    Sweep,
    covers,
    is_vault_id,
    resource_type_of,
    same_resource,
)
from kvguard.risk import assess
from kvguard.vault import VaultConfig, diff

log = logging.getLogger("kvguard")
HandleEvent = Callable[[VaultEvent], Outcome]


def reconcile(services: Services, subscription_ids: Sequence[str], handle_event: HandleEvent) -> list[Outcome]:
    """Seed the baseline of every vault never seen, and judge (`handle_event`, as any event) every
    vault whose configuration differs from its baseline (a vault whose baseline says deleted has
    been recovered), then the resources beside them. One vault's failure does not stop the others."""
    outcomes = []
    established = {b.vault_id for b in known_vaults(services)}
    for subscription_id in subscription_ids:
        for vault in services.gateway.list_vaults(subscription_id):
            try:
                outcome = _reconcile_vault(services, vault, handle_event)
            except Exception:  # logged with its traceback; the next run tries this vault again
                log.exception("reconciliation of %s failed", vault.id)
                continue
            if outcome is not None:
                outcomes.append(outcome)
    return outcomes + _reconcile_resources(services, established, handle_event)


def _reconcile_vault(services: Services, vault: VaultConfig, handle_event: HandleEvent) -> Outcome | None:
    baseline = services.store.get_baseline(vault.id)
    if baseline is None:
        services.store.put_baseline(vault.id, dict(vault.raw), None, now=services.clock.now())
        return Outcome(None, "processed", "reconciliation: baseline seeded", vault.id)
    if baseline.deleted or not diff(baseline_config(services, baseline), vault).empty:
        return handle_event(_reconciliation_event(vault, baseline.etag))
    return None


def _reconcile_resources(services: Services, established: set[str], handle_event: HandleEvent) -> list[Outcome]:
    """Catch the resource changes Event Grid dropped (and the management-group ones it never
    delivers to a subscription topic): every resource listed at each known vault's scope, and
    every resource with a baseline, compared with its baseline. A resource that covers only
    vaults first seen by this reconciliation is seeded, not judged: that is first sight."""
    if services.resources is None:
        return []
    outcomes = []
    current: dict[str, Mapping[str, Any] | None] = {}
    for vault in known_vaults(services):
        for resource_type in LISTED_TYPES:
            try:
                listed = services.resources.list_at_scope(vault.vault_id, resource_type)
            except Exception:  # logged with its traceback; the next run lists again
                log.exception("listing %s at %s failed", resource_type, vault.vault_id)
                continue
            for doc in listed:
                current.setdefault(vault_key(str(doc["id"])), doc)
    stored = {vault_key(b.vault_id): b for b in services.store.list_baselines() if not is_vault_id(b.vault_id)}
    for key, kept in stored.items():
        if key not in current and not kept.deleted:
            current[key] = services.resources.get(kept.vault_id)
    for key, found in current.items():
        baseline = stored.get(key)
        resource_id = str(found["id"]) if found is not None else (baseline.vault_id if baseline else key)
        change = _reconciled_change(resource_id, found, baseline)
        if change is None:
            continue
        if baseline is None and found is not None and not any(
                covers(change.scope, v) for v in established):
            services.store.put_baseline(resource_id, dict(found), None, now=services.clock.now())
            continue
        try:
            outcomes.append(handle_event(_resource_reconciliation_event(change, baseline)))
        except Exception:  # logged with its traceback; the next run tries this resource again
            log.exception("reconciliation of %s failed", resource_id)
    return outcomes


def seed_resources(services: Services) -> int:
    """Record a baseline for every resource beside a known vault that has none yet (what
    `kvguard baseline` does after seeding the vaults), so a later delete is a diff against what
    was there. A type the gateway cannot list is skipped with a log line; returns how many."""
    if services.resources is None:
        return 0
    seeded = 0
    for vault in known_vaults(services):
        for resource_type in LISTED_TYPES:
            try:
                listed = services.resources.list_at_scope(vault.vault_id, resource_type)
            except PermanentError as error:
                log.warning("not seeding %s at %s: %s", resource_type, vault.vault_id, error)
                continue
            for doc in listed:
                if services.store.get_baseline(str(doc["id"])) is None:
                    try:
                        services.store.put_baseline(str(doc["id"]), dict(doc), None, now=services.clock.now())
                        seeded += 1
                    except ConcurrencyError:  # seeded meanwhile (a vault's lock is listed twice): it stands
                        continue
    return seeded


def sweep(services: Services) -> list[Outcome]:
    """One record for each known vault whose sweep findings opened or closed; one vault's
    failure does not stop the others."""
    if services.resources is None:
        return []
    rules = {rule_id: r for rule_id, r in RULES.items() if r.kind.basis is Basis.SWEEP}
    outcomes = []
    for baseline in known_vaults(services):
        try:
            outcome = _sweep_vault(services, baseline_config(services, baseline), rules)
        except Exception:  # logged with its traceback; the next sweep judges this vault again
            log.exception("sweep of %s failed", baseline.vault_id)
            continue
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


def sweep_key(vault_id: str) -> str:
    """Where a vault's sweep findings are kept open: beside the vault's own, never mixed with them."""
    return f"{vault_id}|sweep"


def _sweep_vault(services: Services, vault: VaultConfig, rules: Mapping[str, Rule]) -> Outcome | None:
    assert services.resources is not None
    now = services.clock.now()
    read = tuple(doc for t in SWEEP_TYPES for doc in services.resources.list_at_scope(vault.id, t))
    event = _sweep_event(vault, now)
    judged = Context(event=event, before=None, after=None, diff=None, policy=services.policy, history=History(),
                     now=now, sweep=Sweep(vault, read))
    findings = detect_all(judged, rules)
    key = sweep_key(vault.id)
    was_open = {f.rule for f in services.store.open_findings(key)}
    for finding in findings:
        services.store.open_finding(key, finding.rule, finding.to_json(), now)
    opened = [f for f in findings if f.rule not in was_open]
    closed = sorted(r for r in was_open - {f.rule for f in findings} if services.store.close_finding(key, r))
    if not opened and not closed:
        return None
    risk = assess(opened, event, vault, services.policy)
    decision = decide(policy=services.policy, event=event, vault=vault, vault_id=vault.id, vault_name=vault.name,
                      findings=opened, risk=risk.value, recent_remediations=0)
    context = FlowContext(event=event, now=now, findings=opened, risk=risk, decision=decision)
    actions = act_beside(services, context, alerts_for(services, context, vault.id, opened))
    resolutions = _resolve_sweep(services, vault, closed, now)
    outcome = Outcome(event.id, "processed", sweep_reason(opened, closed, risk, decision), vault.id, risk.value,
                      risk.severity, opened, actions, risk.explanation, resolutions, resource=vault.id)
    services.store.append_audit(AuditRecord(event.id, vault.id, now, outcome.to_audit()))
    return outcome


def _resolve_sweep(services: Services, vault: VaultConfig, closed: Sequence[str], now: datetime) -> list[ActionResult]:
    """The alert sinks hear of each sweep finding that closed (Defender: Healthy)."""
    if not closed or effective_mode(services.policy, vault) == "observe":
        return []
    return tell_resolved(services, [(vault.id, rule_id) for rule_id in closed], now, current=vault)


def _sweep_event(vault: VaultConfig, now: datetime) -> VaultEvent:
    """The stand-in event a sweep judges under: no caller, one id per vault and sweep time."""
    return VaultEvent(
        id=f"sweep:{vault.key}:{now.isoformat()}", event_type="kvguard.Sweep", schema="eventgrid",
        subject=vault.id, time=now, vault=parse_vault_ref(vault.id), operation="kvguard/sweep", kind="other",
        access_policy_action=None, status="Succeeded", succeeded=True, caller=Caller(), correlation_id=None,
        tenant_id=vault.tenant_id, raw={},
    )


def _reconciliation_event(vault: VaultConfig, baseline_etag: str) -> VaultEvent:
    """A stand-in for the event that never arrived: one id per vault and baseline version, so a
    reconciliation that is itself retried does not act twice."""
    return VaultEvent(
        id=f"reconcile:{vault.key}:{baseline_etag}", event_type="kvguard.Reconciliation", schema="eventgrid",
        subject=vault.id, time=None, vault=parse_vault_ref(vault.id), operation="Microsoft.KeyVault/vaults/write",
        kind="write", access_policy_action=None, status="Succeeded", succeeded=True, caller=Caller(),
        correlation_id=None, tenant_id=vault.tenant_id, raw={},
    )


def _reconciled_change(
    resource_id: str, current: Mapping[str, Any] | None, baseline: Baseline | None
) -> ResourceChange | None:
    """The change a reconciliation found for a resource, or None when it is as its baseline says."""
    known = None if baseline is None or baseline.deleted else baseline.config
    if same_resource(current, known):
        return None
    source = current if current is not None else known
    resource_type = resource_type_of(source) if source is not None else ""
    return ResourceChange(resource_id, resource_type, "write" if current is not None else "delete")


def _resource_reconciliation_event(change: ResourceChange, baseline: Baseline | None) -> VaultEvent:
    """A stand-in for the resource event that never arrived: one id per resource and baseline
    version, so a reconciliation that is itself retried does not act twice."""
    vault = parse_vault_ref(change.id)
    return VaultEvent(
        id=f"reconcile:{change.key}:{baseline.etag if baseline else 'new'}", event_type="kvguard.Reconciliation",
        schema="eventgrid", subject=change.id, time=None,
        vault=vault if vault is not None and vault.resource_group is not None else None,
        operation=change.operation, kind="other", access_policy_action=None, status="Succeeded", succeeded=True,
        caller=Caller(), correlation_id=None, tenant_id=None, raw={}, resource=change,
    )
