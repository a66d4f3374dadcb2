"""kvguard's own writes and its own deployment: an own-identity event is `self` only when the
ledger of own writes holds its write (the loop guard); a change to kvguard's own deployment
(KV-SELF-02) is alerted in every mode and never remediated."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from kvguard.catalog import RULES
from kvguard.decision import Decision
from kvguard.deployment import (
    DEPLOYMENT_RULES,
    EVENT_SUBSCRIPTION_DELETE,
    EVENT_SUBSCRIPTION_WRITE,
    Delivery,
    changed_own_resource,
    delivery_of,
    deployed_operations,
    event_subscription_problems,
    is_deployment_operation,
    is_event_subscription,
)
from kvguard.detection import Context, History, detect_all
from kvguard.events import Caller, VaultEvent
from kvguard.flow.acting import act
from kvguard.flow.claims import complete
from kvguard.flow.context import EventContext
from kvguard.flow.findings import tell_resolved
from kvguard.flow.reasons import ALWAYS_FOR_OWN_DEPLOYMENT, own_deployment_reason
from kvguard.flow.services import Services
from kvguard.ids import vault_key
from kvguard.outcome import Outcome
from kvguard.ports import AuditRecord, TransientError
from kvguard.risk import assess

log = logging.getLogger("kvguard")
OWN_RESOURCES = ("own-resources", "ids")  # the marks that remember kvguard's own resource ids
REMEMBER_SINCE = timedelta(days=3650)  # every mark of them (each is renewed daily)
# An own write is made within minutes of its ledger entry: the entry is noted right before the
# request, and the SDK's retries of a throttled one give up well inside this.
OWN_WRITE_WINDOW = timedelta(minutes=10)
CLOCK_SKEW = timedelta(minutes=5)  # between ARM's event times and this host's clock


def own_write(services: Services, event: VaultEvent) -> str | None:
    """The own identity that made this event's write when the ledger holds it (never acted on),
    else None: an own-identity write kvguard did not plan is processed like anyone's (KV-SELF-01)."""
    own = event.caller.ids() & set(services.policy.own_principal_ids)
    return sorted(own)[0] if own and planned(services, event) else None


def planned(services: Services, event: VaultEvent) -> bool:
    """Whether the ledger holds the write behind this own-identity event: the event carries, as its
    client request id, the nonce kvguard sent with that write, for the same resource and operation,
    noted within minutes before the write's time. A state look-up, never an ARM read, so a
    recognised own write costs no GET. The window is taken from the event's time (when ARM made the
    write), not from its delivery, so a dead letter redriven days later still finds its entry, and
    an event from before kvguard planned a write never takes that write's entry. A correlation id
    never matches: any caller can send one, or copy it from an earlier write of kvguard's. A
    resource beside a vault is noted under its own id."""
    written = event.resource.id if event.resource is not None else event.vault.id if event.vault else None
    if event.operation is None or written is None or not event.client_request_id:
        return False
    since, until = ledger_window(event.time or services.clock.now())
    return services.store.match_own_write(written, event.operation, event.client_request_id,
                                          since=since, until=until)


def ledger_window(made: datetime) -> tuple[datetime, datetime]:
    """The times a ledger entry for a write made at `made` may have; an event time at the edge of
    what a datetime can hold (year 1, year 9999) is clamped there, never an overflow."""
    earliest, latest = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    since = made - OWN_WRITE_WINDOW if made - earliest > OWN_WRITE_WINDOW else earliest
    until = made + CLOCK_SKEW if latest - made > CLOCK_SKEW else latest
    return since, until


def own_resource(services: Services, event: VaultEvent) -> str | None:
    """The own resource a deployment change concerns, or None: the resource itself or one it
    contains (deleting a system topic deletes kvguard's event subscription on it). The ids are
    the policy's and those remembered in the state store (`own_resource_ids`)."""
    if event.vault is not None or not is_deployment_operation(event.operation):
        return None
    return changed_own_resource(event.subject, event.operation, own_resource_ids(services))


def remember_own_resources(services: Services) -> list[str]:
    """Note the policy's own resource ids in the state store (a mark per id, renewed once a day so
    retention never forgets one) and give back every id remembered: clearing
    `KVGUARD_OWN_RESOURCE_IDS` and restarting the app leaves the ids it had judged, so the very
    change that cleared the setting is still judged. Called when the app is built and by the
    reconcile timer."""
    today = services.clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
    marks = services.store.marks_since(*OWN_RESOURCES, today - REMEMBER_SINCE)
    remembered = [member for member, _ in marks]
    renewed_today = {member for member, at in marks if at >= today}
    for resource_id in sorted({*services.policy.own_resource_ids, *remembered} - renewed_today):
        services.store.add_mark(*OWN_RESOURCES, resource_id, today)
    return own_resource_ids(services, remembered)


def own_resource_ids(services: Services, remembered: list[str] | None = None) -> list[str]:
    """The policy's own resource ids, then those only the state store remembers."""
    if remembered is None:
        remembered = [member for member, _ in services.store.marks_since(
            *OWN_RESOURCES, services.clock.now() - REMEMBER_SINCE)]
    known = {vault_key(i) for i in services.policy.own_resource_ids}
    extra = sorted({vault_key(i): i for i in remembered if vault_key(i) not in known}.values())
    return [*services.policy.own_resource_ids, *extra]


def handle_own_deployment(services: Services, event: VaultEvent, resource_id: str) -> Outcome:
    """Claimed like a vault event (fenced by an owner token, no transaction held while alerting)."""
    now = services.clock.now()
    owner = uuid.uuid4().hex
    claim = services.store.claim(event.id, now, services.lease, owner)
    if claim == "duplicate":
        return Outcome(event.id, "duplicate", "event already processed", resource=resource_id)
    if claim == "in_progress":
        raise TransientError(f"event {event.id} is being processed by another instance")
    try:
        outcome = _judge_own_deployment(services, event, resource_id, now)
        complete(services, event, owner)
    except BaseException:
        services.store.release(event.id, owner)
        raise
    return outcome


def _judge_own_deployment(services: Services, event: VaultEvent, resource_id: str, now: datetime) -> Outcome:
    """A change to kvguard's own deployment is alerted in every mode, at every threshold: the
    mode (KVGUARD_MODE) may be the very setting that was changed. Nothing is remediated."""
    policy = services.policy.model_copy(update={"own_resource_ids": own_resource_ids(services)})
    judged = Context(event=event, before=None, after=None, diff=None, policy=policy, history=History(), now=now)
    context = EventContext(event=event, now=now, vault_id=resource_id)
    context.findings = detect_all(judged, {rule_id: RULES[rule_id] for rule_id in DEPLOYMENT_RULES})
    context.risk = assess(context.findings, event, None, services.policy)
    context.decision = Decision(services.policy.mode, bool(context.findings),
                                ALWAYS_FOR_OWN_DEPLOYMENT if context.findings else "no finding", False,
                                "kvguard's own deployment is never remediated", False)
    context.actions = act(services, context)
    for finding in context.findings:
        services.store.open_finding(resource_id, finding.rule, finding.to_json(), now)
    risk = context.risk
    outcome = Outcome(event.id, "processed", own_deployment_reason(context), None, risk.value, risk.severity,
                      context.findings, context.actions, risk.explanation, resource=resource_id)
    services.store.append_audit(AuditRecord(event.id, resource_id, now, outcome.to_audit()))
    return outcome


def check_own_deployment(services: Services, handle_event: Callable[[VaultEvent], Outcome]) -> list[Outcome]:
    """The reconcile timer's check that each of kvguard's event subscriptions exists and passes
    everything kvguard needs: its deletion may be the last event it ever delivered. A problem is
    raised once while it lasts (the open KV-SELF-02 finding says which); a subscription found
    right again closes the finding. `handle_event` judges the change found, as any event."""
    if services.deployment is None:
        return []
    outcomes = []
    ids = remember_own_resources(services)
    delivery = delivery_of(ids)
    for resource_id in filter(is_event_subscription, ids):
        try:
            problems = event_subscription_problems(services.deployment.get_event_subscription(resource_id), delivery,
                                                   deployed_operations(resource_id, ids))
        except Exception:  # logged with its traceback; the next run checks again
            log.exception("check of event subscription %s failed", resource_id)
            continue
        open_now = {f.rule: f.finding for f in services.store.open_findings(resource_id)}
        if not problems:
            if "KV-SELF-02" in open_now and services.store.close_finding(resource_id, "KV-SELF-02"):
                resolved = tell_resolved(services, [(resource_id, "KV-SELF-02")], services.clock.now())
                outcomes.append(Outcome(None, "processed", "reconciliation: event subscription as deployed again",
                                        resolutions=resolved, resource=resource_id))
            continue
        if (open_now.get("KV-SELF-02") or {}).get("evidence", {}).get("found") == problems:
            continue  # already raised, still the same
        outcomes.append(handle_event(_deployment_check_event(resource_id, problems, services.clock.now())))
    return outcomes


def _deployment_check_event(resource_id: str, problems: list[str], now: datetime) -> VaultEvent:
    """A stand-in for the change the reconcile check found: a deletion when the subscription is
    gone, a write otherwise; what was found rides along for the finding's evidence."""
    missing = problems == event_subscription_problems(None, Delivery(), ())
    return VaultEvent(
        id=f"reconcile:{vault_key(resource_id)}:{now.isoformat()}", event_type="kvguard.Reconciliation",
        schema="eventgrid", subject=resource_id, time=now, vault=None,
        operation=EVENT_SUBSCRIPTION_DELETE if missing else EVENT_SUBSCRIPTION_WRITE, kind="other",
        access_policy_action=None, status="Succeeded", succeeded=True, caller=Caller(), correlation_id=None,
        tenant_id=None, raw={"reconciliation": problems},
    )
