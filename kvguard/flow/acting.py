"""Acting on a decision: each remediation written ahead (its intent), then the alerts sent side by
side while the remediation is applied, every alert's delivery started before a write starts;
what an earlier attempt wrote ahead is confirmed or carried on; a secondary sink's failure waits
in the outbox."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from kvguard import writeahead
from kvguard.actions import ActionResult, WrittenFor, merged, skipped
from kvguard.catalog import HANDLERS, alert_handlers
from kvguard.decision import Decision, remediable
from kvguard.detection import Finding
from kvguard.flow.claims import hold, scope
from kvguard.flow.context import Earlier, EventContext, FlowContext
from kvguard.flow.pools import LazyPool
from kvguard.flow.services import Services
from kvguard.ids import vault_key
from kvguard.intents import DeleteResource, RemoveRuleSources, RestoreResource
from kvguard.ports import Alert, OwnWrite, TransientError, answers_in_process
from kvguard.resources import ResourceState
from kvguard.vault import VaultConfig
from remediation.base import Operation, PlanInput

if TYPE_CHECKING:
    from concurrent.futures import Future

log = logging.getLogger("kvguard")
# The alert sinks' calls wait on the network: this many go out side by side (the sinks of one
# delivery, and of the deliveries a worker handles at once).
ALERT_THREADS = 8
_alerting = LazyPool(ALERT_THREADS, "kvguard-alert")  # the alert sinks' calls
# Sinks whose failure must not hold back the answer: their alerts wait in the outbox instead.
SECONDARY_SINKS = frozenset({"notify_webhook"})
# The intents that can say why their undo must not be written (the handler then plans nothing).
REFUSABLE = (RestoreResource, RemoveRuleSources, DeleteResource)

def remediated(actions: Sequence[ActionResult]) -> bool:
    return any(a.status == "applied" and HANDLERS[a.handler].kind == "remediation" for a in actions)


def remediation_failed(actions: Sequence[ActionResult]) -> bool:
    return any(a.status == "failed" and HANDLERS[a.handler].kind == "remediation" for a in actions)


def remediated_rules(actions: Sequence[ActionResult]) -> set[str]:
    return {r for a in actions if a.status == "applied" and HANDLERS[a.handler].kind == "remediation"
            for r in a.rules}


def final_state(actions: Sequence[ActionResult], after: VaultConfig | None) -> VaultConfig | None:
    """The vault after the remediation: as the last vault write answered (the gateway reads it back
    once after a targeted access-policy write, a PATCH answers with it), else as it was read (an
    earlier attempt's write confirmed on retry, a write beside the vault): never read again."""
    states = [a.state for a in actions if a.state is not None and HANDLERS[a.handler].kind == "remediation"]
    return states[-1] if states else after


def by_remediation(findings: Sequence[Finding]) -> dict[str, list[Finding]]:
    """The findings each remediation handler answers, in the order they fired."""
    by_handler: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        if finding.remediation:
            by_handler[finding.remediation].append(finding)
    return by_handler


def earlier_attempt(services: Services, context: EventContext) -> Earlier:
    """What an earlier attempt on this vault wrote ahead and could not record (kvguard writes a
    vault only under its lease, so nobody else of kvguard's made those writes): operations
    whose planned state the vault is already in are `applied` ("confirmed on retry") and bring
    back the findings they answered (the vault no longer shows them); when it was this same
    event, the alerts that attempt sent are not sent again."""
    event = context.event
    answered: dict[str, ActionResult] = {}
    findings: list[Finding] = []
    sent: list[ActionResult] = []
    alerted: frozenset[tuple[str, str]] = frozenset()
    operations: dict[str, list[Operation]] = {}
    events: set[str] = set()
    stale: list[str] = []
    for action in context.pending:
        written_by = str(action.intent.get("event_id"))
        if services.store.audited(written_by, event.vault.id if event.vault else None,
                                  writeahead.attempt_of(action.intent)):
            stale.append(action.handler)  # recorded already; only its intent was left behind
            continue
        events.add(written_by)
        if not sent and (sent := writeahead.alert_results_of(action.intent)):
            alerted = frozenset(writeahead.finding_key(f) for f in writeahead.findings_of(action.intent))
        operations[action.handler] = writeahead.operations_of(action.intent)
        result = services.runner.confirm(action.handler, operations[action.handler], context.after)
        if result is not None:
            answered[action.handler] = result
            findings.extend(writeahead.findings_of(action.intent))
    same_event = event.id in events
    return Earlier((*operations, *stale), answered, findings, sent if same_event else [], operations,
                   alerted if same_event else frozenset())


def alerts_for(services: Services, context: FlowContext, vault_id: str, findings: Sequence[Finding]) -> list[Alert]:
    """One alert per finding, raised on `vault_id`, scored with the context's risk, naming the
    handler that will revert it when the decision is to remediate."""
    event, risk, decision = context.event, context.risk, context.decision
    allowed = {f.rule for f in remediable(findings, services.policy, vault_id)}
    return [
        Alert(
            vault_id=vault_id,
            rule=f.rule,
            title=f.title,
            severity=f.severity,
            score=f.score,
            risk=risk.value,
            evidence=f.evidence,
            mitre=f.mitre,
            event_id=event.id,
            caller=event.caller.describe(),
            time=event.time or services.clock.now(),
            explanation=risk.explanation,
            revert=_revert_of(f, decision) if f.rule in allowed else None,
        )
        for f in findings
    ]


def _revert_of(finding: Finding, decision: Decision | None) -> str | None:
    if decision is None or not decision.remediate or not finding.remediation:
        return None
    return f"{finding.remediation} (dry run: planned only)" if decision.dry_run else finding.remediation


def act(services: Services, context: EventContext) -> list[ActionResult]:
    """Remediation written ahead (its intents), then the alerts sent side by side and each
    remediation applied while they are on their way; the answer once every sink and every write
    has answered. Every alert's delivery has started before a remediation's write starts, and
    neither waits for the other: a sink that fails does not hold back or cancel the revert, nor
    the reverse. A joined finding (another report of a change already alerted) raises no alert
    again, but is remediated as any."""
    if not context.findings:
        return []
    decision, earlier, joined = context.decided, context.earlier, context.joined
    earlier_sent = earlier.alerts if decision.alert else []
    # An earlier attempt of this event sent the alerts of the findings it had: not again; a
    # finding it did not have (a grant made since) is alerted now.
    fresh = [f for f in context.listed if writeahead.finding_key(f) not in earlier.alerted] if earlier_sent \
        else context.listed
    alerts = alerts_for(services, context, context.vault_id, fresh)
    ready: dict[str, ActionResult] = {}
    planned: list[tuple[str, list[Operation]]] = []
    if not (earlier_sent and not fresh):
        for handler_id in alert_handlers():
            if handler_id not in services.sinks:
                continue
            if not decision.alert:
                ready[handler_id] = skipped(handler_id, decision.alert_reason)
            elif not fresh:
                ready[handler_id] = skipped(handler_id, "already raised: the change joins its open finding",
                                            sorted({f.rule for f in joined}))
            else:
                planned.append((handler_id, HANDLERS[handler_id].plan(
                    PlanInput(fresh, context.before, context.after, alerts))))
    remediations = {handler_id: _planned_remediation(services, context, handler_id, handler_findings)
                    for handler_id, handler_findings in by_remediation(context.findings).items()}
    written = _write_ahead(services, context, remediations, list(earlier.alerts))  # handler: its ledger entries
    sending = send(services, planned, context.after)
    sending.wait_started()
    reverted = {handler_id: _remediated(services, context, handler_id, plan, written.get(handler_id, ()))
                for handler_id, plan in remediations.items()}
    answers = sending.answered()
    lost = next((r for r in reverted.values() if r.transient), None)
    try:
        alerted = settled(services, planned, answers)
    except TransientError as error:
        # Nothing is recorded: a redelivery sends the alerts again and confirms what the writes did.
        raise TransientError(f"{lost.handler}: {lost.detail}") if lost is not None else error from None
    sent = with_earlier(earlier_sent, [ready.get(handler_id) or alerted[handler_id] for handler_id in alert_handlers()
                                       if handler_id in ready or handler_id in alerted])
    if lost is not None:
        # The intents stay; they now name the alerts sent, so a redelivery does not send them again.
        _write_ahead(services, context, {h: remediations[h] for h in written}, sent, noting=False)
        raise TransientError(f"{lost.handler}: {lost.detail}")
    results = list(sent)
    for handler_id, result in reverted.items():
        confirmed = earlier.answered.get(handler_id)
        results.append(merged(confirmed, result) if confirmed is not None else result)
    return results


def with_earlier(earlier: Sequence[ActionResult], now: Sequence[ActionResult]) -> list[ActionResult]:
    """Each alert handler's result: what an earlier attempt of the event sent, with what this one
    sent on top (a finding the earlier one did not have)."""
    added = {result.handler: result for result in now}
    return [*(merged(result, added.pop(result.handler)) if result.handler in added else result for result in earlier),
            *added.values()]


def _planned_remediation(
    services: Services, context: EventContext, handler_id: str, handler_findings: Sequence[Finding]
) -> ActionResult | list[Operation]:
    """A remediation handler's operations, or why it does nothing."""
    decision = context.decided
    rules = sorted({f.rule for f in handler_findings})
    allowed = remediable(context.findings, services.policy, context.vault_id)
    mine = [f for f in handler_findings if f in allowed]
    refused = _refused(handler_id, decision, mine, rules)
    if refused is not None:
        return refused
    operations = HANDLERS[handler_id].plan(PlanInput(mine, context.before, context.after))
    if not operations:
        return skipped(handler_id, "nothing to restore: no baseline value to go back to", rules)
    return operations


def _write_ahead(
    services: Services, context: EventContext, remediations: Mapping[str, ActionResult | list[Operation]],
    alerted: Sequence[ActionResult], *, noting: bool = True,
) -> dict[str, tuple[OwnWrite, ...]]:
    """The intent of every remediation that will write (none in dry run), under this attempt's
    claim, with the ledger entries its writes will carry (one write where the store can); the
    handlers written for, with their entries (none when not `noting`: the intents are written
    again after the writes were made). An intent keeps what an earlier attempt intended too, so a
    retry after this one still accounts for all of it, and names the alerts `alerted` already.
    An earlier attempt's intent this one will not add to is taken over as it is: this attempt's
    record accounts for it, and the intent must name this attempt for a later one to know that."""
    event = context.event
    writing = {h: plan for h, plan in remediations.items() if isinstance(plan, list)}
    taken_over: dict[str, list[Operation]] = {h: [] for h in context.earlier.operations if h not in writing}
    if context.decided.dry_run or not (writing or taken_over):
        return {}
    with services.store.batch():  # the claims' renewal and the intents in one write where the store can
        hold(services, event, context.owner)
        for handler_id, operations in {**writing, **taken_over}.items():
            intended = context.earlier.operations.get(handler_id, [])
            recorded = writeahead.intent(event.id, context.findings, [*intended, *operations], alerted, context.owner)
            services.store.begin_action(scope(event), handler_id, recorded, services.clock.now())
        noted = {handler_id: tuple(services.runner.note_ahead(operations, WrittenFor(event.id, context.owner))
                                   if noting else ())
                 for handler_id, operations in writing.items()}
        for entry in (entry for entries in noted.values() for entry in entries):
            services.store.record_own_write(entry)
    return noted


def _remediated(
    services: Services, context: EventContext, handler_id: str, plan: ActionResult | list[Operation],
    noted: Sequence[OwnWrite] = (),
) -> ActionResult:
    """Apply a remediation's operations (only plan them in dry run). A transient failure is
    returned as it is: the caller raises it once the alerts have answered, and the intent stays
    for a redelivery to confirm what landed and make the rest."""
    if isinstance(plan, ActionResult):
        return plan
    return services.runner.run(handler_id, plan, dry_run=context.decided.dry_run, current=context.after,
                               written_for=WrittenFor(context.event.id, context.owner, tuple(noted)))


def _refused(handler_id: str, decision: Decision, mine: Sequence[Finding], rules: list[str]) -> ActionResult | None:
    """Why a remediation handler does not run at all, the same for a vault's change and a
    resource's: the decision holds remediation back, or none of its findings' rules is opted in."""
    if not decision.remediate:
        return skipped(handler_id, decision.remediate_reason, rules)
    if not mine:
        return skipped(handler_id, "opt-in only: enable with rules.<id>.remediate: true", rules)
    return None


def act_beside(
    services: Services, context: FlowContext, alerts: Sequence[Alert], resource: ResourceState | None = None
) -> list[ActionResult]:
    """`act` for a resource beside the vaults and for a sweep: `alerts` go to every vault the
    change covers, first; then each remediation handler re-reads the resource and PUTs it back
    (noted in the ledger of own writes by the runner). No write-ahead intent is kept: a
    redelivery re-plans from the resource as it then is, which the PUT's idempotency makes safe."""
    if not context.findings:
        return []
    findings, decision = context.findings, context.decided
    results: list[ActionResult] = []
    configured = [handler_id for handler_id in alert_handlers() if handler_id in services.sinks]
    if decision.alert:
        # Answered before any remediation: no intent is written ahead here, and a redelivery
        # after the revert would find nothing left to alert on.
        results.extend(deliver_all(services, [
            (handler_id, HANDLERS[handler_id].plan(PlanInput(findings, None, None, alerts)))
            for handler_id in configured], None))
    else:
        results.extend(skipped(handler_id, decision.alert_reason) for handler_id in configured)
    # A resource inside one vault (a Managed HSM's private endpoint connection) is remediated as that vault allows.
    inside = resource.vault_ids[0] if resource is not None and len(resource.vaults) == 1 else None
    allowed = remediable(findings, services.policy, inside)
    for handler_id, handler_findings in by_remediation(findings).items():
        rules = sorted({f.rule for f in handler_findings})
        mine = [f for f in handler_findings if f in allowed]
        refused = _refused(handler_id, decision, mine, rules)
        if refused is not None:
            results.append(refused)
            continue
        operations = HANDLERS[handler_id].plan(PlanInput(mine, None, None, resource=resource))
        if not operations:
            refusals = [i.refused for f in mine for i in f.restore if isinstance(i, REFUSABLE) and i.refused]
            results.append(skipped(handler_id, refusals[0] if refusals else
                                   "nothing to undo: the baseline has what the change left", rules))
            continue
        result = services.runner.run(handler_id, operations, dry_run=decision.dry_run, current=None,
                                     written_for=WrittenFor(context.event.id))
        if result.transient:
            # Alerts are idempotent: a redelivery raises them again harmlessly and retries this.
            raise TransientError(f"{handler_id}: {result.detail}")
        results.append(result)
    return results


class Sending:
    """Alert handlers' operations on their way, each handler's in one call of the alerting pool
    (a sink that takes a batch gets them in one request), side by side.

    When every sink planned answers in this process (it says so with a true `answers_in_process`,
    as the simulated world's do), there is nothing to wait on side by side: each is called here,
    in the order planned, and its answer (or what it raised) is kept for `answered`, as the pool
    would keep it. Handing each call to a thread costs more than the call itself."""

    def __init__(self, services: Services, planned: Sequence[tuple[str, Sequence[Operation]]],
                 current: VaultConfig | None) -> None:
        self._started = [threading.Event() for _ in planned]
        if all(answers_in_process(services.sinks.get(handler_id)) for handler_id, _ in planned):
            self._answers = [_called(services, started, handler_id, operations, current)
                             for started, (handler_id, operations) in zip(self._started, planned, strict=True)]
            return
        self._answers = [
            _alerting().submit(_send, services, started, handler_id, operations, current)
            for started, (handler_id, operations) in zip(self._started, planned, strict=True)
        ]

    def wait_started(self) -> None:
        """Return once every handler's delivery has begun (its request is on its way)."""
        for started in self._started:
            started.wait()

    def answered(self) -> list[ActionResult]:
        """Every handler's result, in the order planned, once all have answered."""
        return [answer.result() for answer in self._answers]


def send(services: Services, planned: Sequence[tuple[str, Sequence[Operation]]],
         current: VaultConfig | None) -> Sending:
    """Start delivering every alert handler's operations at once."""
    return Sending(services, planned, current)


def _send(services: Services, started: threading.Event, handler_id: str, operations: Sequence[Operation],
          current: VaultConfig | None) -> ActionResult:
    started.set()
    return services.runner.run(handler_id, operations, dry_run=False, current=current)


def _called(services: Services, started: threading.Event, handler_id: str, operations: Sequence[Operation],
            current: VaultConfig | None) -> Future[ActionResult]:
    """`_send` on this thread, its answer kept as the pool's future would keep it."""
    from concurrent.futures import Future

    answer: Future[ActionResult] = Future()
    try:
        answer.set_result(_send(services, started, handler_id, operations, current))
    except BaseException as error:  # raised from `answered`, as the pool would raise it
        answer.set_exception(error)
    return answer


def settled(services: Services, planned: Sequence[tuple[str, Sequence[Operation]]],
            answers: Sequence[ActionResult]) -> dict[str, ActionResult]:
    """Each alert handler's result. A transient failure of Defender or the topic raises before
    anything is queued (nothing is recorded yet, so a redelivery sends every alert again); one of
    a secondary sink goes to the outbox, retried by `flush_outbox`, and is reported failed."""
    for (handler_id, _), result in zip(planned, answers, strict=True):
        if result.transient and handler_id not in SECONDARY_SINKS:
            raise TransientError(f"{handler_id}: {result.detail}")
    return {handler_id: _queued_if_failed(services, handler_id, operations, result)
            for (handler_id, operations), result in zip(planned, answers, strict=True)}


def deliver_all(services: Services, planned: Sequence[tuple[str, Sequence[Operation]]],
                current: VaultConfig | None) -> list[ActionResult]:
    """Every alert handler's operations side by side, answered (see `settled`), in the order planned."""
    results = settled(services, planned, send(services, planned, current).answered())
    return [results[handler_id] for handler_id, _ in planned]


def _queued_if_failed(
    services: Services, handler_id: str, operations: Sequence[Operation], result: ActionResult
) -> ActionResult:
    if not result.transient:
        return result
    delivered = len(result.after or ())
    for op in operations[delivered:]:
        assert isinstance(op.target, Alert)
        key = "|".join((handler_id, op.kind, vault_key(op.vault_id), op.target.rule, op.target.event_id))
        services.store.put_outbox(key, {"handler": handler_id, "kind": op.kind,
                                        "alert": writeahead.alert_json(op.target)}, services.clock.now())
    return replace(result, detail=f"{result.detail}; queued in the outbox for retry", transient=False)


def flush_outbox(services: Services) -> int:
    """Deliver what secondary sinks could not take earlier; the number delivered. What fails
    again stays for the next run (retention drops it in the end)."""
    delivered = 0
    for queued in services.store.list_outbox():
        sink = services.sinks.get(str(queued.item["handler"]))
        if sink is None:
            services.store.drop_outbox(queued.key)  # the sink is no longer configured
            continue
        alert = writeahead.alert_of(queued.item["alert"])
        try:
            if queued.item["kind"] == "resolve":
                sink.resolve(alert.vault_id, alert.rule)
            else:
                sink.raise_alert(alert)
        except Exception:  # logged with its traceback; it stays queued
            log.exception("outbox delivery %s failed", queued.key)
            continue
        services.store.drop_outbox(queued.key)
        delivered += 1
    return delivered
