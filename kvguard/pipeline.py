"""handle(event) -> Outcome: the one place where the steps of an event's flow are put in order
(README, "How one event flows").

parse → filter → claim → read → compare → detect → score → decide → act → record.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from kvguard import writeahead
from kvguard.actions import ActionResult, ActionRunner, merged, skipped
from kvguard.blast_radius import ActivityLog, enrich
from kvguard.catalog import HANDLERS, RULES, alert_handlers
from kvguard.decision import STEERING_TAGS, Decision, decide, effective_mode, may_retag, remediable, unattributed
from kvguard.deployment import (
    DEPLOYMENT_RULES,
    EVENT_SUBSCRIPTION_DELETE,
    EVENT_SUBSCRIPTION_WRITE,
    event_subscription_problems,
    is_deployment_operation,
    is_event_subscription,
)
from kvguard.detection import Basis, Closing, Context, Finding, History, Rule, detect_all
from kvguard.events import Caller, Rejected, VaultEvent, parse
from kvguard.ids import owning_id, parse_vault_ref, vault_key
from kvguard.outcome import Outcome
from kvguard.policy import Policy
from kvguard.ports import (
    Alert,
    AlertSink,
    AuditRecord,
    Baseline,
    Clock,
    ConcurrencyError,
    DeploymentReader,
    MarkQuery,
    PermanentError,
    RejectedPayload,
    ResourceGateway,
    StateStore,
    TransientError,
    VaultGateway,
)
from kvguard.resources import (
    RESOURCE_TYPES,
    SWEEP_TYPES,
    ResourceChange,
    ResourceState,
    Sweep,
    covers,
    is_vault_id,
    resource_type_of,
    scope_of,
)
from kvguard.risk import Risk, assess
from kvguard.roles import Role, builtin_role, role_from_arm, role_guid
from kvguard.suppression import suppress, with_notes
from kvguard.vault import VaultConfig, VaultDiff, diff, footprint
from remediation.base import Operation, PlanInput

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
log = logging.getLogger("kvguard")
PARSED_BASELINE_BYTES = 16_000_000  # parsed baselines kept in memory, by ETag, up to this estimate of their size
ROLE_ASSIGNMENTS = "microsoft.authorization/roleassignments"
ROLE_DEFINITIONS = "microsoft.authorization/roledefinitions"
# Sinks whose failure must not hold back the answer: their alerts wait in the outbox instead.
SECONDARY_SINKS = frozenset({"notify_webhook"})
RETENTION = timedelta(days=90)


class _Earlier(NamedTuple):
    """What an earlier attempt on this vault wrote ahead (see `Pipeline._earlier_attempt`)."""

    intended: tuple[str, ...]
    answered: dict[str, ActionResult]
    findings: list[Finding]
    alerts: list[ActionResult]
    operations: dict[str, list[Operation]]
OWN_WRITE_WINDOW = timedelta(hours=24)  # an own write's event is within a day of the ledger entry
CLOCK_SKEW = timedelta(minutes=5)  # between ARM's event times and this host's clock


NOTHING_EARLIER = _Earlier((), {}, [], [], {})


class _Recall(NamedTuple):
    """What the state store remembered for one event: the rules' History, and whether this
    caller's change of this vault is already counted in the burst window."""

    history: History
    vault_marked: bool


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class Pipeline:
    """One pipeline per process; every piece of state it depends on lives in the StateStore."""

    def __init__(
        self,
        *,
        gateway: VaultGateway,
        store: StateStore,
        policy: Policy,
        sinks: Mapping[str, AlertSink] | None = None,
        clock: Clock | None = None,
        lease: timedelta = timedelta(minutes=5),
        resources: ResourceGateway | None = None,
        retention: timedelta = RETENTION,
        activity_log: ActivityLog | None = None,
        deployment: DeploymentReader | None = None,
    ) -> None:
        """`resources` reads and writes the resources beside the vaults (none: their changes are
        ignored, with that reason); `deployment` reads kvguard's own event subscriptions for the
        reconcile check (none: no check)."""
        self.gateway = gateway
        self.resources = resources
        self.store = store
        self.policy = policy
        self.sinks = dict(sinks or {})
        self.clock = clock or SystemClock()
        self.lease = lease
        self.retention = retention
        self.activity_log = activity_log
        self.deployment = deployment
        self.runner = ActionRunner(gateway, self.sinks, ledger=store, now=lambda: self.clock.now(),
                                   resources=resources)
        self._parsed: OrderedDict[str, VaultConfig] = OrderedDict()
        self._parsed_bytes = 0

    # --- parse --------------------------------------------------------------------------------

    def handle(self, raw: Any) -> list[Outcome]:
        """Every event of one delivery. Bad input and permanent failures are recorded and reported,
        never raised; TransientError is raised (after releasing the claim) so the delivery is retried."""
        outcomes = []
        for item in parse(raw):
            if isinstance(item, Rejected):
                self.store.record_rejected(RejectedPayload(item.reason, item.raw, self.clock.now(), item.event_id))
                outcomes.append(Outcome(item.event_id, "rejected", item.reason))
            else:
                outcomes.append(replace(self.handle_event(item), event=item, finished=self.clock.now()))
        return outcomes

    # --- filter, claim ------------------------------------------------------------------------

    def handle_event(self, event: VaultEvent) -> Outcome:
        """Claim, then read, decide and act with no state-store transaction open (other workers
        go on meanwhile), then record in one short batch guarded by the claim (the end of `_process`)."""
        own_resource = self._own_resource(event)
        if own_resource is not None:
            return self._handle_own_deployment(event, own_resource)
        if event.resource is not None:
            return self._handle_resource(event, event.resource)
        passed = self._filter(event)
        if passed is not None:
            return passed
        now = self.clock.now()
        owner = uuid.uuid4().hex  # fences this attempt's claim: a takeover makes its writes fail
        claim = self.store.claim(event.id, now, self.lease, owner)
        if claim == "duplicate":
            return Outcome(event.id, "duplicate", "event already processed", self._known_id(event))
        if claim == "in_progress":
            raise TransientError(f"event {event.id} is being processed by another instance")
        try:
            with self._vault_held(event, now, owner):
                return self._process_or_reject(event, now, owner)
        except BaseException:
            self.store.release(event.id, owner)
            raise

    @contextmanager
    def _vault_held(self, event: VaultEvent, now: datetime, owner: str) -> Iterator[None]:
        """One event per vault at a time across every instance: two events of one vault processed
        side by side would both read the change and both revert it. The vault is leased like an
        event (same store, same fence) and let go of with the event's completion (every way out of
        `_process_or_reject` that returns completes the event with `releasing` its lease), or at
        once when the attempt fails."""
        lock = _vault_lock(event)
        if self.store.claim(lock, now, self.lease, owner) != "claimed":
            raise TransientError(f"vault of event {event.id} is being processed by another instance")
        try:
            yield
        except BaseException:
            self.store.release(lock, owner)
            raise

    def _process_or_reject(self, event: VaultEvent, now: datetime, owner: str) -> Outcome:
        """`_process`, with a failure no redelivery can cure (see `kvguard.adapters.azure_clients`)
        recorded like a rejected payload (the reason and the raw event) and reported `rejected`, so
        the claim completes and Event Grid does not retry it for 24 hours only to dead-letter it
        with nothing recorded."""
        try:
            return self._process(event, now, owner)
        except PermanentError as error:
            reason = f"permanent failure: {error}"
            raw = json.dumps(event.raw, default=str)
            with self.store.batch():
                self._hold(event, owner)
                self.store.record_rejected(RejectedPayload(reason, raw, self.clock.now(), event.id))
                if not self.store.complete(event.id, self.clock.now(), owner, releasing=(_vault_lock(event),)):
                    raise TransientError(f"event {event.id}: the claim was taken over by another instance") from None
            return Outcome(event.id, "rejected", reason, self._known_id(event))

    def reconcile(self, subscription_ids: Sequence[str]) -> list[Outcome]:
        """Catch what Event Grid dropped: seed the baseline of every vault never seen, and run the
        pipeline on every vault whose configuration differs from its baseline (a vault whose
        baseline says deleted has been recovered). One vault's failure does not stop the others."""
        outcomes = []
        established = {b.vault_id for b in self._known_vaults()}
        for subscription_id in subscription_ids:
            for vault in self.gateway.list_vaults(subscription_id):
                try:
                    outcome = self._reconcile_vault(vault)
                except Exception:  # logged with its traceback; the next run tries this vault again
                    log.exception("reconciliation of %s failed", vault.id)
                    continue
                if outcome is not None:
                    outcomes.append(outcome)
        outcomes += self._reconcile_resources(established)
        outcomes += self.sweep()
        outcomes += self.check_own_deployment()
        return outcomes

    def _reconcile_vault(self, vault: VaultConfig) -> Outcome | None:
        baseline = self.store.get_baseline(vault.id)
        if baseline is None:
            self.store.put_baseline(vault.id, dict(vault.raw), None, now=self.clock.now())
            return Outcome(None, "processed", "reconciliation: baseline seeded", vault.id)
        if baseline.deleted or not diff(self._baseline_config(baseline), vault).empty:
            return self.handle_event(_reconciliation_event(vault, baseline.etag))
        return None

    def _filter(self, event: VaultEvent) -> Outcome | None:
        if event.vault is None:
            if event.event_type.lower().startswith("microsoft.keyvault."):
                reason = f"event type {event.event_type} is not a vault configuration change"
                return Outcome(event.id, "ignored", reason)
            what = f"operation {event.operation}" if event.operation else f"event type {event.event_type}"
            return Outcome(event.id, "ignored", f"{what} does not concern a Key Vault")
        if event.kind == "other":
            return Outcome(event.id, "ignored", f"operation {event.operation} is not a vault change kvguard handles",
                           self._known_id(event))
        own = event.caller.ids() & set(self.policy.own_principal_ids)
        if own and self._planned(event):
            return Outcome(event.id, "self", f"own write by {sorted(own)[0]}: never acted on", self._known_id(event))
        return None  # an own-identity write kvguard did not plan is processed like anyone's (KV-SELF-01)

    def _planned(self, event: VaultEvent, resource_id: str | None = None) -> bool:
        """Whether the ledger holds the write behind this own-identity event: a state look-up,
        never an ARM read, so a recognised own write costs no GET. The window is taken from the
        event's time (when ARM made the write), not from its delivery, so a dead letter redriven
        days later still finds its entry, and an event from before kvguard planned a write never
        takes that write's entry. A resource beside a vault is noted under its own id."""
        written = event.resource.id if event.resource is not None else event.vault.id if event.vault else None
        if event.operation is None or written is None:
            return False
        since, until = _ledger_window(event.time or self.clock.now())
        return self.store.match_own_write(written, event.operation, event.id, event.correlation_id, since, until)

    # --- kvguard's own deployment (KV-SELF-02) --------------------------------------------------

    def _own_resource(self, event: VaultEvent) -> str | None:
        """The own resource (policy `own_resource_ids`) a deployment change concerns, or None."""
        if event.vault is not None or not is_deployment_operation(event.operation):
            return None
        return owning_id(event.subject, self.policy.own_resource_ids)

    def _handle_own_deployment(self, event: VaultEvent, resource_id: str) -> Outcome:
        """Claimed like a vault event (fenced by an owner token, no transaction held while alerting)."""
        now = self.clock.now()
        owner = uuid.uuid4().hex
        claim = self.store.claim(event.id, now, self.lease, owner)
        if claim == "duplicate":
            return Outcome(event.id, "duplicate", "event already processed", resource=resource_id)
        if claim == "in_progress":
            raise TransientError(f"event {event.id} is being processed by another instance")
        try:
            outcome = self._judge_own_deployment(event, resource_id, now)
            if not self.store.complete(event.id, self.clock.now(), owner):
                raise TransientError(f"event {event.id}: the claim was taken over by another instance")
        except BaseException:
            self.store.release(event.id, owner)
            raise
        return outcome

    def _judge_own_deployment(self, event: VaultEvent, resource_id: str, now: datetime) -> Outcome:
        """A change to kvguard's own deployment is alerted in every mode, at every threshold: the
        mode (KVGUARD_MODE) may be the very setting that was changed. Nothing is remediated."""
        context = Context(event=event, before=None, after=None, diff=None, policy=self.policy, history=History(),
                          now=now)
        findings = detect_all(context, {rule_id: RULES[rule_id] for rule_id in DEPLOYMENT_RULES})
        risk = assess(findings, event, None, self.policy)
        always = "always, for a change to kvguard's own deployment"
        decision = Decision(self.policy.mode, bool(findings), always if findings else "no finding", False,
                            "kvguard's own deployment is never remediated", False)
        actions = self._act(event, "", resource_id, findings, risk, decision, None, None, NOTHING_EARLIER)
        for finding in findings:
            self.store.open_finding(resource_id, finding.rule, finding.to_json(), now)
        if findings:
            reason = f"{len(findings)} finding(s); risk {risk.value}: {', '.join(risk.explanation)}; alert: {always}"
        elif not event.succeeded:
            reason = "no finding: the change to kvguard's own deployment failed"
        else:
            reason = "no finding: kvguard's own deployment changed by an approved caller"
        outcome = Outcome(event.id, "processed", reason, None, risk.value, risk.severity, findings, actions,
                          risk.explanation, resource=resource_id)
        self.store.append_audit(AuditRecord(event.id, resource_id, now, outcome.to_audit()))
        return outcome

    def check_own_deployment(self) -> list[Outcome]:
        """The reconcile timer's check that each of kvguard's event subscriptions exists and passes
        everything kvguard needs: its deletion may be the last event it ever delivered. A problem is
        raised once while it lasts (the open KV-SELF-02 finding says which); a subscription found
        right again closes the finding."""
        if self.deployment is None:
            return []
        outcomes = []
        for resource_id in filter(is_event_subscription, self.policy.own_resource_ids):
            try:
                problems = event_subscription_problems(self.deployment.get_event_subscription(resource_id))
            except Exception:  # logged with its traceback; the next run checks again
                log.exception("check of event subscription %s failed", resource_id)
                continue
            open_now = {f.rule: f.finding for f in self.store.open_findings(resource_id)}
            if not problems:
                if "KV-SELF-02" in open_now and self.store.close_finding(resource_id, "KV-SELF-02"):
                    resolved = self._resolve_own_deployment(resource_id)
                    outcomes.append(Outcome(None, "processed", "reconciliation: event subscription as deployed again",
                                            resolutions=resolved, resource=resource_id))
                continue
            if (open_now.get("KV-SELF-02") or {}).get("evidence", {}).get("found") == problems:
                continue  # already raised, still the same
            outcomes.append(self.handle_event(_deployment_check_event(resource_id, problems, self.clock.now())))
        return outcomes

    def _resolve_own_deployment(self, resource_id: str) -> list[ActionResult]:
        now = self.clock.now()
        return [
            self.runner.run(handler_id, [Operation(handler_id, "resolve", resource_id, "resolved KV-SELF-02",
                                                   Alert(resource_id, "KV-SELF-02", "", "low", 0, 0, {}, (), "",
                                                         None, now), rules=("KV-SELF-02",))],
                            dry_run=False, current=None)
            for handler_id in alert_handlers() if handler_id in self.sinks
        ]

    # --- read, compare, detect, score, decide, act, record ---------------------------------------

    def _process(self, event: VaultEvent, now: datetime, owner: str) -> Outcome:
        assert event.vault is not None
        vault_id = event.vault.id
        after = self.gateway.get(vault_id) if event.kind != "purge" else None
        baseline = self.store.get_baseline(vault_id)
        # A deleted vault's baseline is what a recovery brings back: compared against, so that an
        # unchanged recovered vault raises no posture finding again.
        before = self._baseline_config(baseline) if baseline else None
        change = diff(before, after) if before is not None and after is not None else None
        recall = self._history(event, now)
        context = Context(
            event=event,
            before=before,
            after=after,
            diff=change,
            policy=self.policy,
            history=recall.history,
            now=now,
            baseline_deleted=bool(baseline and baseline.deleted),
        )
        earlier = self._earlier_attempt(event, after)
        detected, suppressed = suppress(detect_all(context, RULES), vault_id, event.vault.name, self.policy, now)
        if self.activity_log is not None:
            detected = enrich(detected, vault_id, event.time or now, self.clock.now(), self.activity_log)
        findings = detected + [f for f in earlier.findings if f.rule not in {d.rule for d in detected}]
        current = after or before
        steering = before or after  # the accepted baseline's tags steer, not the change's
        display_id = current.id if current is not None else self._known_id(event)
        risk = assess(findings, event, steering, self.policy)
        decision = decide(
            policy=self.policy,
            event=event,
            vault=steering,
            vault_id=display_id,
            vault_name=current.name if current is not None else event.vault.name,
            findings=findings,
            risk=risk.value,
            recent_remediations=self._recent_remediations(display_id, steering, findings, now),
        )
        # Read before the findings are refreshed: which findings repeat an open one (see _joined).
        joined = self._joined(event, display_id, findings)
        actions = self._act(event, owner, display_id, findings, risk, decision, before, after, earlier, joined)
        remediated = any(a.status == "applied" and HANDLERS[a.handler].kind == "remediation" for a in actions)
        failed = any(a.status == "failed" and HANDLERS[a.handler].kind == "remediation" for a in actions)
        final = self.gateway.get(vault_id) if remediated else after
        # A grant made while kvguard was reverting shows in `final` but was never judged: the
        # baseline stays, so the grant's own event (or the next one) sees it as the change it is.
        failed = failed or (remediated and _granted_meanwhile(after, final))
        opened = self._open(display_id, findings, baseline, before, event)
        # Posture and diff findings can only stop being true when the compared state moved.
        moved = remediated or before is None or (change is not None and not change.empty)
        resolved, resolutions = self._resolve(event, display_id, final if moved else None, findings, actions,
                                              decision, opened, now)
        # The record shows the findings it lists, and their risk: a joined report (already alerted)
        # still drives the decision above, but is not scored again in the record.
        listed = [f for f in findings if f not in joined]
        shown = assess(listed, event, steering, self.policy) if joined else risk
        outcome = Outcome(
            event.id,
            "processed",
            with_notes(_reason(event, before, after, findings, risk, decision, joined), suppressed),
            display_id,
            shown.value,
            shown.severity,
            listed,
            actions,
            shown.explanation,
            resolutions,
        )
        with self.store.batch():
            self._hold(event, owner)
            for finding in findings:
                if finding.rule not in resolved:
                    self.store.open_finding(display_id, finding.rule, opened[finding.rule], now)
            for rule_id in resolved:
                self.store.close_finding(display_id, rule_id)
            self._record(event, now, display_id, baseline, before, final, change, remediated, failed,
                         recall)
            self.store.append_audit(AuditRecord(event.id, display_id, now, outcome.to_audit()))
            ran = {a.handler for a in actions
                   if a.status in ("applied", "failed") and HANDLERS[a.handler].kind == "remediation"}
            for handler_id in sorted(ran | set(earlier.intended)):
                self.store.finish_action(_scope(event), handler_id)
            if not self.store.complete(event.id, self.clock.now(), owner, releasing=(_vault_lock(event),)):
                raise TransientError(f"event {event.id}: the claim was taken over by another instance")
        return outcome

    def _hold(self, event: VaultEvent, owner: str) -> None:
        """Renew this attempt's claim, or stop: an attempt whose lease another instance took over
        must not act or record (that instance does, and a raise makes Event Grid check again)."""
        now = self.clock.now()
        if not self.store.renew_each((event.id, _vault_lock(event)), owner, now, self.lease):
            raise TransientError(f"event {event.id}: the claim was taken over by another instance")

    def _earlier_attempt(self, event: VaultEvent, after: VaultConfig | None) -> _Earlier:
        """What an earlier attempt on this vault wrote ahead and could not record (kvguard writes a
        vault only under its lease, so nobody else of kvguard's made those writes): operations
        whose planned state the vault is already in are `applied` ("confirmed on retry") and bring
        back the findings they answered (the vault no longer shows them); when it was this same
        event, the alerts that attempt sent are not sent again."""
        answered: dict[str, ActionResult] = {}
        findings: list[Finding] = []
        sent: list[ActionResult] = []
        operations: dict[str, list[Operation]] = {}
        events: set[str] = set()
        stale: list[str] = []
        for action in self.store.pending_actions(_scope(event)):
            written_by = str(action.intent.get("event_id"))
            if self.store.audited(written_by, event.vault.id if event.vault else None):
                stale.append(action.handler)  # recorded already; only its intent was left behind
                continue
            events.add(written_by)
            sent = sent or writeahead.alert_results_of(action.intent)
            operations[action.handler] = writeahead.operations_of(action.intent)
            result = self.runner.confirm(action.handler, operations[action.handler], after)
            if result is not None:
                answered[action.handler] = result
                findings.extend(writeahead.findings_of(action.intent))
        return _Earlier((*operations, *stale), answered, findings, sent if event.id in events else [], operations)

    def _open(
        self, vault_id: str, findings: Sequence[Finding], baseline: Baseline | None, before: VaultConfig | None,
        event: VaultEvent,
    ) -> dict[str, Mapping[str, Any]]:
        """Every open finding of the vault once this event's are opened (or refreshed), as records
        to write. A diff finding keeps the baseline it was found against (the first one, on
        refresh), so it can be closed later when the vault is back to that state, remediated or not."""
        open_now = {f.rule: f.finding for f in self.store.open_findings(vault_id)}
        for finding in findings:
            record = finding.to_json()
            record["callerNamed"] = bool(event.caller.ids()) or bool(open_now.get(finding.rule, {}).get("callerNamed"))
            if RULES[finding.rule].kind.closing is Closing.BACK_TO_BASELINE and baseline is not None \
                    and before is not None:
                kept = open_now.get(finding.rule, {}).get("baseline")
                record["baseline"] = kept or {"etag": baseline.etag, "config": dict(before.raw)}
            open_now[finding.rule] = record
        return open_now

    def _known_id(self, event: VaultEvent) -> str:
        """The vault id to report, spelled as ARM spells it when kvguard has seen the vault (events
        write `resourcegroups`, GET returns `resourceGroups`). A purge names
        `…/locations/{l}/deletedVaults/{name}`, which has no resource group: the deleted vault's
        baseline, found by subscription and name, gives the id."""
        assert event.vault is not None
        if event.kind == "purge":
            for baseline in self.store.list_baselines():
                ref = parse_vault_ref(baseline.vault_id)
                if (baseline.deleted and ref is not None and ref.name.lower() == event.vault.name.lower()
                        and ref.subscription_id.lower() == event.vault.subscription_id.lower()):
                    return baseline.vault_id
            return event.vault.id
        known = self.store.get_baseline(event.vault.id)
        return known.vault_id if known is not None else event.vault.id

    def _history_key(self, event: VaultEvent) -> str:
        """The vault that history marks are kept under. A purge names the deleted vault's
        `locations/…/deletedVaults/{name}` id: its marks belong to the vault it was, so that the
        caller who deleted it is no first-time caller when they purge it."""
        assert event.vault is not None
        return vault_key(self._known_id(event)) if event.kind == "purge" else event.vault.key

    def _baseline_config(self, baseline: Baseline) -> VaultConfig:
        """The parsed baseline; an ETag names one content, so a parse is reused while it matches."""
        cached = self._parsed.get(baseline.etag)
        if cached is None:
            cached = VaultConfig.from_arm(baseline.config)
            self._remember(baseline.etag, cached)
        else:
            self._parsed.move_to_end(baseline.etag)
        return cached

    def _remember(self, etag: str, config: VaultConfig) -> None:
        """Bounded by the estimated bytes the parsed baselines hold (vault.footprint), not by
        their number: open findings keep the baselines they were found against, many per vault."""
        replaced = self._parsed.pop(etag, None)
        if replaced is not None:
            self._parsed_bytes -= footprint(replaced)
        self._parsed[etag] = config
        self._parsed_bytes += footprint(config)
        while self._parsed_bytes > PARSED_BASELINE_BYTES and len(self._parsed) > 1:
            self._parsed_bytes -= footprint(self._parsed.popitem(last=False)[1])  # the least recently used

    def _recent_remediations(
        self, vault_id: str, vault: VaultConfig | None, findings: Sequence[Finding], now: datetime
    ) -> int:
        """The circuit breaker's count; only a change that could be remediated needs it."""
        if not findings or effective_mode(self.policy, vault) != "remediate":
            return 0
        since = now - self.policy.circuit_breaker.window
        return len(self.store.marks_since("remediations", vault_key(vault_id), since))

    def _history(self, event: VaultEvent, now: datetime, key: str | None = None) -> _Recall:
        """`key` names what the change is counted under when it is not the event's vault."""
        window = self.policy.history
        caller = event.caller.id
        vault = key or self._history_key(event)
        queries = [MarkQuery("grants", vault, now - window.grant_window)]
        if caller is not None:
            queries += [MarkQuery("caller_vaults", caller, now - window.burst_window),
                        MarkQuery("caller_failures", caller, now - window.burst_window),
                        MarkQuery("caller_writes", f"{vault}|{caller}", EPOCH)]
        grants, *by_caller = self.store.marks_since_each(queries)
        if caller is None:
            return _Recall(History(recent_grants=dict(grants)), vault_marked=False)
        caller_vaults, caller_failures, caller_writes = by_caller
        vaults = {m for m, _ in caller_vaults}
        marked = vault in vaults
        failures = len(caller_failures)
        if event.succeeded:
            vaults.add(vault)
        else:
            failures += 1
        history = History(
            caller_seen_before=bool(caller_writes),
            caller_vaults=len(vaults),
            caller_failures=failures,
            recent_grants=dict(grants),
        )
        return _Recall(history, marked)

    def _alerts(self, event: VaultEvent, vault_id: str, findings: Sequence[Finding], risk: Risk) -> list[Alert]:
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
                time=event.time or self.clock.now(),
                explanation=risk.explanation,
            )
            for f in findings
        ]

    def _joined(self, event: VaultEvent, vault_id: str, findings: Sequence[Finding]) -> list[Finding]:
        """Findings that repeat an open one (same rule, same evidence) where this event or the one
        that raised it named no caller: one change reported by Key Vault's VaultAccessPolicyChanged
        (in either schema) and by the ARM event is one finding and one alert; the other reports join
        it (not listed as findings of their own). The event naming the caller still decides
        remediation and the baseline."""
        if not findings:
            return []
        open_now = {f.rule: f.finding for f in self.store.open_findings(vault_id)}
        caller_named = bool(event.caller.ids())
        return [
            f for f in findings
            if (record := open_now.get(f.rule)) is not None
            and record.get("evidence") == _jsonable(f.evidence)
            and not (caller_named and record.get("callerNamed", True))
        ]

    def _act(
        self,
        event: VaultEvent,
        owner: str,
        vault_id: str,
        findings: Sequence[Finding],
        risk: Risk,
        decision: Decision,
        before: VaultConfig | None,
        after: VaultConfig | None,
        earlier: _Earlier,
        joined: Sequence[Finding] = (),
        alerts: Sequence[Alert] | None = None,
        resource: ResourceState | None = None,
    ) -> list[ActionResult]:
        """Alerts first; remediation only after every alert went out, each one written ahead
        (its intent) before it is applied. A secondary sink that fails does not hold it back. A
        joined finding (another report of a change already alerted) raises no alert again, but is
        remediated as any."""
        if not findings:
            return []
        results: list[ActionResult] = []
        fresh = [f for f in findings if f not in joined]
        alerts = self._alerts(event, vault_id, fresh, risk)
        if earlier.alerts and decision.alert:
            results.extend(earlier.alerts)  # an earlier attempt sent them: not again
        else:
            for handler_id in alert_handlers():
                if handler_id not in self.sinks:
                    continue
                if not decision.alert:
                    results.append(skipped(handler_id, decision.alert_reason))
                    continue
                if not fresh:
                    results.append(skipped(handler_id, "already raised: the change joins its open finding",
                                           sorted({f.rule for f in joined})))
                    continue
                operations = HANDLERS[handler_id].plan(PlanInput(fresh, before, after, alerts))
                results.append(self._deliver(handler_id, operations, after))
        alerted = list(results)
        allowed = remediable(findings, self.policy)
        for handler_id, handler_findings in _by_remediation(findings).items():
            rules = sorted({f.rule for f in handler_findings})
            mine = [f for f in handler_findings if f in allowed]
            result = self._remediate(event, owner, handler_id, rules, mine, findings, decision, before, after,
                                     alerted, earlier.operations.get(handler_id, []))
            confirmed = earlier.answered.get(handler_id)
            results.append(merged(confirmed, result) if confirmed is not None else result)
        return results

    def _remediate(
        self, event: VaultEvent, owner: str, handler_id: str, rules: Sequence[str], mine: Sequence[Finding],
        findings: Sequence[Finding], decision: Decision, before: VaultConfig | None, after: VaultConfig | None,
        alerted: Sequence[ActionResult], intended: Sequence[Operation],
    ) -> ActionResult:
        """Plan, write ahead, apply. The intent keeps what an earlier attempt intended too, so a
        retry after this one still accounts for all of it."""
        if not decision.remediate:
            return skipped(handler_id, decision.remediate_reason, rules)
        if not mine:
            return skipped(handler_id, "opt-in only: enable with rules.<id>.remediate: true", rules)
        operations = HANDLERS[handler_id].plan(PlanInput(mine, before, after))
        if not operations:
            return skipped(handler_id, "nothing to restore: no baseline value to go back to", rules)
        if not decision.dry_run:
            self._hold(event, owner)
            recorded = writeahead.intent(event.id, findings, [*intended, *operations], alerted)
            self.store.begin_action(_scope(event), handler_id, recorded, self.clock.now())
        result = self.runner.run(handler_id, operations, dry_run=decision.dry_run, current=after)
        if result.transient:
            # The intent stays: a redelivery confirms what landed and makes the rest.
            raise TransientError(f"{handler_id}: {result.detail}")
        return result

    def _deliver(self, handler_id: str, operations: Sequence[Operation], current: VaultConfig | None) -> ActionResult:
        """Run an alert handler's operations. A transient failure of Defender or the topic raises
        (nothing is recorded yet, so a redelivery starts over); one of a secondary sink goes to the
        outbox, retried by `flush_outbox`, and is reported failed."""
        result = self.runner.run(handler_id, operations, dry_run=False, current=current)
        if not result.transient:
            return result
        if handler_id not in SECONDARY_SINKS:
            raise TransientError(f"{handler_id}: {result.detail}")
        delivered = len(result.after or ())
        for op in operations[delivered:]:
            assert isinstance(op.target, Alert)
            key = "|".join((handler_id, op.kind, vault_key(op.vault_id), op.target.rule, op.target.event_id))
            self.store.put_outbox(key, {"handler": handler_id, "kind": op.kind,
                                        "alert": writeahead.alert_json(op.target)}, self.clock.now())
        return replace(result, detail=f"{result.detail}; queued in the outbox for retry", transient=False)

    def flush_outbox(self) -> int:
        """Deliver what secondary sinks could not take earlier; the number delivered. What fails
        again stays for the next run (retention drops it in the end)."""
        delivered = 0
        for queued in self.store.list_outbox():
            sink = self.sinks.get(str(queued.item["handler"]))
            if sink is None:
                self.store.drop_outbox(queued.key)  # the sink is no longer configured
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
            self.store.drop_outbox(queued.key)
            delivered += 1
        return delivered

    def prune(self) -> int:
        """Forget records older than the retention period (run by the reconcile timer), the ledger
        of own writes included (a dead letter redriven within the period still finds its entry)."""
        cutoff = self.clock.now() - self.retention
        return self.store.prune(cutoff) + self.store.prune_own_writes(cutoff)

    def _resolve(
        self,
        event: VaultEvent,
        vault_id: str,
        final: VaultConfig | None,
        findings: Sequence[Finding],
        actions: Sequence[ActionResult],
        decision: Decision,
        open_now: Mapping[str, Mapping[str, Any]],
        now: datetime,
    ) -> tuple[list[str], list[ActionResult]]:
        """The open findings that no longer hold, and the alert sinks told they are resolved
        (Defender: Healthy); closing them in the store is the caller's, with the event's other
        records. Remediated findings close; a posture finding closes when its condition
        is gone from the final state; a diff finding when the vault is back to the baseline it was
        found against; an event finding when the latest change to a vault that still exists no
        longer fires it (event rules judge the latest change)."""
        remediated_rules = {
            r for a in actions if a.status == "applied" and HANDLERS[a.handler].kind == "remediation" for r in a.rules
        }
        firing = {
            f.rule for f in findings
            if f.rule not in remediated_rules
            # a remediation may also have ended a posture condition that fired with the change
            and not (remediated_rules and RULES[f.rule].kind.closing is Closing.CONDITION_GONE and final is not None
                     and not RULES[f.rule].fires(event=event, before=None, after=final, policy=self.policy, now=now))
        }
        resolved = [
            rule_id for rule_id, record in open_now.items()
            if rule_id in RULES and rule_id not in firing
            and (rule_id in remediated_rules or self._no_longer_holds(RULES[rule_id], record, event, final, now))
        ]
        if not resolved or decision.mode == "observe":
            return resolved, []
        results = []
        for handler_id in alert_handlers():
            if handler_id in self.sinks:
                operations = [
                    Operation(handler_id, "resolve", vault_id, f"resolved {rule_id}",
                              Alert(vault_id, rule_id, "", "low", 0, 0, {}, (), event.id, None, now),
                              rules=(rule_id,))
                    for rule_id in resolved
                ]
                results.append(self._deliver(handler_id, operations, final))
        return resolved, results

    def _no_longer_holds(
        self, rule: Rule, record: Mapping[str, Any], event: VaultEvent, final: VaultConfig | None, now: datetime
    ) -> bool:
        """`final` is None when the vault is gone or its compared state did not move."""
        found_against = None
        stored = record.get("baseline")
        if rule.kind.closing is Closing.BACK_TO_BASELINE and final is not None and isinstance(stored, Mapping) \
                and "config" in stored:
            found_against = self._baseline_config(
                Baseline(vault_id=final.id, config=stored["config"], etag=str(stored.get("etag")))
            )
        return rule.closes(event=event, final=final, found_against=found_against, policy=self.policy, now=now)

    def _record(
        self,
        event: VaultEvent,
        now: datetime,
        vault_id: str,
        baseline: Baseline | None,
        before: VaultConfig | None,
        final: VaultConfig | None,
        change: VaultDiff | None,
        remediated: bool,
        failed: bool,
        recall: _Recall,
    ) -> None:
        """Marks for history rules, and the new baseline: the state after acting, except that a
        failed remediation, a failed operation or a change nobody can be held to leaves the
        baseline as it was (the change is seen again), and the steering tags move only with a
        change that may move them (decision.may_retag)."""
        caller = event.caller.id
        vault = self._history_key(event)
        if caller is not None:
            if event.succeeded:
                # One mark per vault and caller is all "first write" needs, and one per caller and
                # vault within the burst window all the count needs.
                if not recall.history.caller_seen_before:
                    self.store.add_mark("caller_writes", f"{vault}|{caller}", event.id, now)
                if not recall.vault_marked:
                    self.store.add_mark("caller_vaults", caller, vault, now)
            else:
                self.store.add_mark("caller_failures", caller, event.id, now)
        if change is not None:
            for mark in change.grant_marks():
                self.store.add_mark("grants", vault, mark, now)
        if remediated:
            self.store.add_mark("remediations", vault_key(vault_id), event.id, now)
        if failed or unattributed(self.policy, event):
            return  # the change is seen again: by the next event, or by the one that names its caller
        if final is None:
            if event.kind == "delete" and before is not None and not (baseline and baseline.deleted):
                self._store_baseline(vault_id, dict(before.raw), baseline, now, deleted=True)
            return
        document = dict(final.raw)
        if before is not None and not may_retag(self.policy, event, remediated):
            document["tags"] = _steering_tags_kept(final, before)
        if (not remediated and before is not None and change is not None and change.empty
                and _steering(document) == _steering(before.raw) and not (baseline and baseline.deleted)):
            return  # nothing the baseline is compared or steered by has changed
        accepted = final if document.get("tags") == final.raw.get("tags") else VaultConfig.from_arm(document)
        self._remember(self._store_baseline(vault_id, document, baseline, now), accepted)

    def _store_baseline(
        self, vault_id: str, document: dict[str, Any], baseline: Baseline | None, now: datetime, deleted: bool = False
    ) -> str:
        try:
            return self.store.put_baseline(vault_id, document, baseline.etag if baseline else None, deleted=deleted,
                                           now=now)
        except ConcurrencyError as error:
            raise TransientError(f"baseline of {vault_id} changed concurrently; retry") from error


    # --- any other ARM resource: role assignments, diagnostic settings, locks, … -----------------
    # The same steps as a vault's change, judged against the resource's own baseline (kept in the
    # baseline table under the resource's id: one assignment at subscription scope is stored once),
    # for the vaults its scope covers.

    def _handle_resource(self, event: VaultEvent, change: ResourceChange) -> Outcome:
        vault_id = self._known_id(event) if event.vault is not None else None
        known = self.store.get_baseline(change.id)
        if known is not None:  # spelled as ARM spells it (events write `resourcegroups`)
            change = replace(change, id=known.vault_id)
        if self.resources is None:
            return Outcome(event.id, "ignored", f"no reader of {change.type} is configured", vault_id,
                           resource=change.id)
        covered = self._covered_vaults(event, change)
        if not covered:
            return Outcome(event.id, "ignored", f"scope {change.scope} covers no vault kvguard knows", vault_id,
                           resource=change.id)
        own = event.caller.ids() & set(self.policy.own_principal_ids)
        if own and self._planned(event):
            return Outcome(event.id, "self", f"own write by {sorted(own)[0]}: never acted on", vault_id,
                           resource=change.id)
        # an own-identity change kvguard did not plan is processed like anyone's (KV-SELF-01)
        now = self.clock.now()
        owner = uuid.uuid4().hex  # fences this attempt's claim, as for a vault's event
        claim = self.store.claim(event.id, now, self.lease, owner)
        if claim == "duplicate":
            return Outcome(event.id, "duplicate", "event already processed", vault_id, resource=change.id)
        if claim == "in_progress":
            raise TransientError(f"event {event.id} is being processed by another instance")
        try:
            try:
                outcome = self._process_resource(event, change, covered, vault_id, now)
            except PermanentError as error:
                reason = f"permanent failure: {error}"
                self.store.record_rejected(RejectedPayload(reason, json.dumps(event.raw, default=str),
                                                           self.clock.now(), event.id))
                outcome = Outcome(event.id, "rejected", reason, vault_id, resource=change.id)
            if not self.store.complete(event.id, self.clock.now(), owner):
                raise TransientError(f"event {event.id}: the claim was taken over by another instance")
        except BaseException:
            self.store.release(event.id, owner)
            raise
        return outcome

    def _known_vaults(self) -> list[Baseline]:
        """The baselines of the vaults kvguard knows (not deleted), in the store's order."""
        return [b for b in self.store.list_baselines() if not b.deleted and is_vault_id(b.vault_id)]

    def _covered_vaults(self, event: VaultEvent, change: ResourceChange) -> list[Baseline]:
        """The known vaults the change's scope covers; a resource inside one vault needs no listing."""
        if event.vault is not None and event.vault.resource_group is not None:
            baseline = self.store.get_baseline(event.vault.id)
            return [baseline] if baseline is not None and not baseline.deleted else []
        if change.type.lower() == ROLE_DEFINITIONS:
            return self._vaults_assigned(change.id)
        return [b for b in self._known_vaults() if covers(change.scope, b.vault_id)]

    def _vaults_assigned(self, role_definition_id: str) -> list[Baseline]:
        """The known vaults covered by a known assignment of the role: what a change of the role's
        definition reaches."""
        guid = role_guid(role_definition_id)
        scopes = [scope_of(b.vault_id) for b in self.store.list_baselines()
                  if not b.deleted and not is_vault_id(b.vault_id)
                  and resource_type_of(b.config).lower() == ROLE_ASSIGNMENTS
                  and role_guid(str((b.config.get("properties") or {}).get("roleDefinitionId") or "")) == guid]
        return [b for b in self._known_vaults() if any(covers(scope, b.vault_id) for scope in scopes)]

    def _role(self, change: ResourceChange, document: Mapping[str, Any] | None) -> Role | None:
        """The role of an assignment: a built-in one from the table, a custom one read (GET of its
        definition); None when it cannot be read (the rules then cannot weigh it)."""
        if change.type.lower() != ROLE_ASSIGNMENTS or document is None or self.resources is None:
            return None
        definition_id = str((document.get("properties") or {}).get("roleDefinitionId") or "")
        if not definition_id:
            return None
        known = builtin_role(definition_id)
        if known is not None:
            return known
        definition = self.resources.get(definition_id)
        if definition is None:
            return None
        try:
            return role_from_arm(definition)
        except ValueError as error:
            raise PermanentError(f"role definition {definition_id}: {error}") from None

    def _process_resource(
        self, event: VaultEvent, change: ResourceChange, covered: list[Baseline], vault_id: str | None,
        now: datetime,
    ) -> Outcome:
        assert self.resources is not None
        after = self.resources.get(change.id)
        if after is not None and isinstance(after.get("id"), str):
            change = replace(change, id=after["id"])
        baseline = self.store.get_baseline(change.id)
        before = baseline.config if baseline is not None and not baseline.deleted else None
        vaults = tuple(self._baseline_config(b) for b in covered)
        state = ResourceState(change, before, after, vaults, self._role(change, after or before))
        history_key = vault_key(vault_id) if vault_id else change.key
        recall = self._history(event, now, history_key)
        context = Context(event=event, before=None, after=None, diff=None, policy=self.policy,
                          history=recall.history, now=now, resource=state)
        findings = detect_all(context, RULES)
        if vault_id is None:  # a broader scope: the findings name the vaults it covers
            findings = [replace(f, evidence={**f.evidence, "vaults": state.vault_ids}) for f in findings]
        steering = vaults[0] if len(vaults) == 1 else None  # several vaults: the policy steers, not one's tags
        judged_id = vault_id or change.id
        risk = assess(findings, event, steering, self.policy)
        decision = decide(
            policy=self.policy, event=event, vault=steering, vault_id=judged_id,
            vault_name=steering.name if steering is not None else change.id.rsplit("/", 1)[-1],
            findings=findings, risk=risk.value,
            recent_remediations=self._recent_remediations(judged_id, steering, findings, now),
        )
        alerts = [alert for vault in vaults for alert in self._alerts(event, vault.id, findings, risk)]
        actions = self._act_beside(event, findings, decision, alerts, state)
        remediated = any(a.status == "applied" and HANDLERS[a.handler].kind == "remediation" for a in actions)
        failed = any(a.status == "failed" and HANDLERS[a.handler].kind == "remediation" for a in actions)
        final = self.resources.get(change.id) if remediated else after
        resolutions = self._settle_resource_findings(event, change, state, findings, actions, decision, final, now)
        self._record_resource(event, change, baseline, before, final, history_key, recall, remediated, failed, now)
        outcome = Outcome(event.id, "processed", _resource_reason(change, before, after, findings, risk, decision),
                          vault_id, risk.value, risk.severity, findings, actions, risk.explanation, resolutions,
                          resource=change.id)
        self.store.append_audit(AuditRecord(event.id, judged_id, now, outcome.to_audit()))
        return outcome

    def _act_beside(
        self, event: VaultEvent, findings: Sequence[Finding], decision: Decision, alerts: Sequence[Alert],
        resource: ResourceState | None,
    ) -> list[ActionResult]:
        """`_act` for a resource beside the vaults and for a sweep: `alerts` go to every vault the
        change covers, first; then each remediation handler re-reads the resource and PUTs it back
        (noted in the ledger of own writes by the runner). No write-ahead intent is kept: a
        redelivery re-plans from the resource as it then is, which the PUT's idempotency makes safe."""
        if not findings:
            return []
        results: list[ActionResult] = []
        for handler_id in alert_handlers():
            if handler_id not in self.sinks:
                continue
            if not decision.alert:
                results.append(skipped(handler_id, decision.alert_reason))
                continue
            results.append(self._deliver(handler_id, HANDLERS[handler_id].plan(PlanInput(findings, None, None, alerts)),
                                         None))
        allowed = remediable(findings, self.policy)
        for handler_id, handler_findings in _by_remediation(findings).items():
            rules = sorted({f.rule for f in handler_findings})
            mine = [f for f in handler_findings if f in allowed]
            if not decision.remediate:
                results.append(skipped(handler_id, decision.remediate_reason, rules))
                continue
            if not mine:
                results.append(skipped(handler_id, "opt-in only: enable with rules.<id>.remediate: true", rules))
                continue
            operations = HANDLERS[handler_id].plan(PlanInput(mine, None, None, resource=resource))
            if not operations:
                results.append(skipped(handler_id, "nothing to undo: the baseline has what the change left", rules))
                continue
            result = self.runner.run(handler_id, operations, dry_run=decision.dry_run, current=None)
            if result.transient:
                # Alerts are idempotent: a redelivery raises them again harmlessly and retries this.
                raise TransientError(f"{handler_id}: {result.detail}")
            results.append(result)
        return results

    def _settle_resource_findings(
        self, event: VaultEvent, change: ResourceChange, state: ResourceState, findings: Sequence[Finding],
        actions: Sequence[ActionResult], decision: Decision, final: Mapping[str, Any] | None, now: datetime,
    ) -> list[ActionResult]:
        """Open a finding per rule that fired, under the resource's id (with the vaults it covers and,
        for a diff rule, the resource as the baseline had it), and close the ones that no longer
        hold: remediated, an event rule's finding once a later change no longer fires it, a diff
        rule's once the resource is back as the baseline had it. The alert sinks hear of each
        closed finding once per covered vault."""
        remediated = {r for a in actions if a.status == "applied" and HANDLERS[a.handler].kind == "remediation"
                      for r in a.rules}
        open_now = {f.rule: f.finding for f in self.store.open_findings(change.id)}
        firing = {f.rule for f in findings} - remediated
        for finding in findings:
            if finding.rule in remediated:
                continue
            record: dict[str, Any] = {**finding.to_json(), "vaults": state.vault_ids}
            if RULES[finding.rule].kind.closing is Closing.BACK_TO_BASELINE:
                record["baseline"] = open_now.get(finding.rule, {}).get("baseline", {"config": state.before})
            self.store.open_finding(change.id, finding.rule, record, now)
            open_now[finding.rule] = record
        closed = []
        for rule_id, kept in open_now.items():
            if rule_id not in RULES or rule_id in firing:
                continue
            closing = RULES[rule_id].kind.closing
            gone = (rule_id in remediated
                    or closing is Closing.LATEST_CHANGE
                    or (closing is Closing.BACK_TO_BASELINE
                        and _same_resource(final, (kept.get("baseline") or {}).get("config"))))
            if gone and self.store.close_finding(change.id, rule_id):
                closed.append((rule_id, kept.get("vaults") or state.vault_ids))
        # A finding remediated by this event was never opened, but its alerts went out: resolve them.
        closed += [(rule_id, state.vault_ids) for rule_id in sorted(remediated - set(open_now))]
        if not closed or decision.mode == "observe":
            return []
        results = []
        for handler_id in alert_handlers():
            if handler_id in self.sinks:
                operations = [
                    Operation(handler_id, "resolve", str(vault), f"resolved {rule_id}",
                              Alert(str(vault), rule_id, "", "low", 0, 0, {}, (), "", None, now), rules=(rule_id,))
                    for rule_id, vaults in closed for vault in vaults
                ]
                results.append(self.runner.run(handler_id, operations, dry_run=False, current=None))
        return results

    def _record_resource(
        self, event: VaultEvent, change: ResourceChange, baseline: Baseline | None,
        before: Mapping[str, Any] | None, final: Mapping[str, Any] | None, history_key: str, recall: _Recall,
        remediated: bool, failed: bool, now: datetime,
    ) -> None:
        """History marks as for a vault, and the resource's new baseline: the state after acting,
        unless a remediation failed or the change cannot be pinned on this event's caller."""
        caller = event.caller.id
        if caller is not None:
            if not event.succeeded:
                self.store.add_mark("caller_failures", caller, event.id, now)
            else:
                if not recall.history.caller_seen_before:
                    self.store.add_mark("caller_writes", f"{history_key}|{caller}", event.id, now)
                if not recall.vault_marked:
                    self.store.add_mark("caller_vaults", caller, history_key, now)
        if remediated:
            self.store.add_mark("remediations", history_key, event.id, now)
        if before is None and final is not None and change.type.lower() == ROLE_ASSIGNMENTS:
            self.store.add_mark("grants", history_key, change.key, now)  # for the cover-up rule
        if failed or unattributed(self.policy, event):
            return
        if final is None:
            if before is not None:
                self._store_baseline(change.id, dict(before), baseline, now, deleted=True)
            return
        if before is None or not _same_resource(final, before):
            self._store_baseline(change.id, dict(final), baseline, now)

    def _reconcile_resources(self, established: set[str]) -> list[Outcome]:
        """Catch the resource changes Event Grid dropped (and the management-group ones it never
        delivers to a subscription topic): every resource listed at each known vault's scope, and
        every resource with a baseline, compared with its baseline. A resource that covers only
        vaults first seen by this reconciliation is seeded, not judged: that is first sight."""
        if self.resources is None:
            return []
        outcomes = []
        current: dict[str, Mapping[str, Any] | None] = {}
        for vault in self._known_vaults():
            for resource_type in RESOURCE_TYPES:
                try:
                    listed = self.resources.list_at_scope(vault.vault_id, resource_type)
                except Exception:  # logged with its traceback; the next run lists again
                    log.exception("listing %s at %s failed", resource_type, vault.vault_id)
                    continue
                for doc in listed:
                    current.setdefault(vault_key(str(doc["id"])), doc)
        stored = {vault_key(b.vault_id): b for b in self.store.list_baselines() if not is_vault_id(b.vault_id)}
        for key, kept in stored.items():
            if key not in current and not kept.deleted:
                current[key] = self.resources.get(kept.vault_id)
        for key, found in current.items():
            baseline = stored.get(key)
            resource_id = str(found["id"]) if found is not None else (baseline.vault_id if baseline else key)
            change = _reconciled_change(resource_id, found, baseline)
            if change is None:
                continue
            if baseline is None and found is not None and not any(
                    covers(change.scope, v) for v in established):
                self.store.put_baseline(resource_id, dict(found), None, now=self.clock.now())
                continue
            try:
                outcomes.append(self.handle_event(_resource_reconciliation_event(change, baseline)))
            except Exception:  # logged with its traceback; the next run tries this resource again
                log.exception("reconciliation of %s failed", resource_id)
        return outcomes

    # --- sweeps: rules that read beyond the changed resource (KV-LOG-02, KV-DEF-01) -------------
    # Judged per known vault by the reconcile timer, `kvguard baseline` and replay's `reconcile: {}`,
    # never per event. A finding is kept open under the vault's sweep key (apart from the vault's
    # own findings, which a vault event settles), reported when it opens and resolved when a later
    # sweep no longer finds it.

    def seed_resources(self) -> int:
        """Record a baseline for every resource beside a known vault that has none yet (what
        `kvguard baseline` does after seeding the vaults), so a later delete is a diff against what
        was there. A type the gateway cannot list is skipped with a log line; returns how many."""
        if self.resources is None:
            return 0
        seeded = 0
        for vault in self._known_vaults():
            for resource_type in RESOURCE_TYPES:
                try:
                    listed = self.resources.list_at_scope(vault.vault_id, resource_type)
                except PermanentError as error:
                    log.warning("not seeding %s at %s: %s", resource_type, vault.vault_id, error)
                    continue
                for doc in listed:
                    if self.store.get_baseline(str(doc["id"])) is None:
                        try:
                            self.store.put_baseline(str(doc["id"]), dict(doc), None, now=self.clock.now())
                            seeded += 1
                        except ConcurrencyError:  # seeded meanwhile (a vault's lock is listed twice): it stands
                            continue
        return seeded

    def sweep(self) -> list[Outcome]:
        """One record for each known vault whose sweep findings opened or closed; one vault's
        failure does not stop the others."""
        if self.resources is None:
            return []
        rules = {rule_id: r for rule_id, r in RULES.items() if r.kind.basis is Basis.SWEEP}
        outcomes = []
        for baseline in self._known_vaults():
            try:
                outcome = self._sweep_vault(self._baseline_config(baseline), rules)
            except Exception:  # logged with its traceback; the next sweep judges this vault again
                log.exception("sweep of %s failed", baseline.vault_id)
                continue
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def _sweep_vault(self, vault: VaultConfig, rules: Mapping[str, Rule]) -> Outcome | None:
        assert self.resources is not None
        now = self.clock.now()
        read = tuple(doc for t in SWEEP_TYPES for doc in self.resources.list_at_scope(vault.id, t))
        event = _sweep_event(vault, now)
        context = Context(event=event, before=None, after=None, diff=None, policy=self.policy, history=History(),
                          now=now, sweep=Sweep(vault, read))
        findings = detect_all(context, rules)
        key = sweep_key(vault.id)
        was_open = {f.rule for f in self.store.open_findings(key)}
        for finding in findings:
            self.store.open_finding(key, finding.rule, finding.to_json(), now)
        opened = [f for f in findings if f.rule not in was_open]
        closed = sorted(r for r in was_open - {f.rule for f in findings} if self.store.close_finding(key, r))
        if not opened and not closed:
            return None
        risk = assess(opened, event, vault, self.policy)
        decision = decide(policy=self.policy, event=event, vault=vault, vault_id=vault.id, vault_name=vault.name,
                          findings=opened, risk=risk.value, recent_remediations=0)
        actions = self._act_beside(event, opened, decision, self._alerts(event, vault.id, opened, risk), None)
        resolutions = self._resolve_sweep(vault, closed, now)
        reason = _sweep_reason(opened, closed, risk, decision)
        outcome = Outcome(event.id, "processed", reason, vault.id, risk.value, risk.severity, opened, actions,
                          risk.explanation, resolutions, resource=vault.id)
        self.store.append_audit(AuditRecord(event.id, vault.id, now, outcome.to_audit()))
        return outcome

    def _resolve_sweep(self, vault: VaultConfig, closed: Sequence[str], now: datetime) -> list[ActionResult]:
        """The alert sinks hear of each sweep finding that closed (Defender: Healthy)."""
        if not closed or effective_mode(self.policy, vault) == "observe":
            return []
        return [
            self.runner.run(handler_id, [
                Operation(handler_id, "resolve", vault.id, f"resolved {rule_id}",
                          Alert(vault.id, rule_id, "", "low", 0, 0, {}, (), "", None, now), rules=(rule_id,))
                for rule_id in closed
            ], dry_run=False, current=vault)
            for handler_id in alert_handlers() if handler_id in self.sinks
        ]


def sweep_key(vault_id: str) -> str:
    """Where a vault's sweep findings are kept open: beside the vault's own, never mixed with them."""
    return f"{vault_id}|sweep"


def _by_remediation(findings: Sequence[Finding]) -> dict[str, list[Finding]]:
    """The findings each remediation handler answers, in the order they fired."""
    by_handler: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        if finding.remediation:
            by_handler[finding.remediation].append(finding)
    return by_handler


def _sweep_event(vault: VaultConfig, now: datetime) -> VaultEvent:
    """The stand-in event a sweep judges under: no caller, one id per vault and sweep time."""
    return VaultEvent(
        id=f"sweep:{vault.key}:{now.isoformat()}", event_type="kvguard.Sweep", schema="eventgrid",
        subject=vault.id, time=now, vault=parse_vault_ref(vault.id), operation="kvguard/sweep", kind="other",
        access_policy_action=None, status="Succeeded", succeeded=True, caller=Caller(), correlation_id=None,
        tenant_id=vault.tenant_id, raw={},
    )


def _sweep_reason(opened: Sequence[Finding], closed: Sequence[str], risk: Risk, decision: Decision) -> str:
    parts = []
    if opened:
        parts.append(f"sweep: {len(opened)} finding(s); risk {risk.value}: " + ", ".join(risk.explanation))
        parts.append(f"mode {decision.mode}" + (" (dry run)" if decision.dry_run else ""))
        parts.append(f"alert: {decision.alert_reason}")
    if closed:
        parts.append("sweep: resolved " + ", ".join(closed))
    return "; ".join(parts)

def _granted_meanwhile(after: VaultConfig | None, final: VaultConfig | None) -> bool:
    if after is None or final is None:
        return False
    change = diff(after, final)
    return bool(change.added_policies or change.widened)


def _vault_lock(event: VaultEvent) -> str:
    return f"vault-lease:{_scope(event)}"


def _scope(event: VaultEvent) -> str:
    """Where the event's remediations write: its vault. Intents are kept per vault, so whichever
    attempt next holds the vault's lease, of this event or another, accounts for them."""
    assert event.vault is not None
    return event.vault.key


def _jsonable(evidence: Mapping[str, Any]) -> Any:
    """Evidence as the state store gives it back (JSON: tuples become lists)."""
    return json.loads(json.dumps(dict(evidence), default=str))


def _steering(document: Mapping[str, Any]) -> dict[str, Any]:
    return {k.lower(): v for k, v in (document.get("tags") or {}).items() if k.lower() in STEERING_TAGS}


def _steering_tags_kept(final: VaultConfig, before: VaultConfig) -> dict[str, Any]:
    """The vault's tags as they are now, but with the steering tags as the baseline had them."""
    tags = {k: v for k, v in (final.raw.get("tags") or {}).items() if k.lower() not in STEERING_TAGS}
    tags.update({k: v for k, v in (before.raw.get("tags") or {}).items() if k.lower() in STEERING_TAGS})
    return tags


def _reconciliation_event(vault: VaultConfig, baseline_etag: str) -> VaultEvent:
    """A stand-in for the event that never arrived: one id per vault and baseline version, so a
    reconciliation that is itself retried does not act twice."""
    return VaultEvent(
        id=f"reconcile:{vault.key}:{baseline_etag}", event_type="kvguard.Reconciliation", schema="eventgrid",
        subject=vault.id, time=None, vault=parse_vault_ref(vault.id), operation="Microsoft.KeyVault/vaults/write",
        kind="write", access_policy_action=None, status="Succeeded", succeeded=True, caller=Caller(),
        correlation_id=None, tenant_id=vault.tenant_id, raw={},
    )


def _same_resource(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two ARM documents of a resource say the same, ignoring what ARM changes on every
    write (`etag`, `systemData`)."""
    if a is None or b is None:
        return a is None and b is None
    volatile = {"etag", "systemdata"}
    return {k: v for k, v in a.items() if k.lower() not in volatile} == \
        {k: v for k, v in b.items() if k.lower() not in volatile}


def _reconciled_change(
    resource_id: str, current: Mapping[str, Any] | None, baseline: Baseline | None
) -> ResourceChange | None:
    """The change a reconciliation found for a resource, or None when it is as its baseline says."""
    known = None if baseline is None or baseline.deleted else baseline.config
    if _same_resource(current, known):
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


def _resource_reason(
    change: ResourceChange, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
    findings: Sequence[Finding], risk: Risk, decision: Decision,
) -> str:
    if not findings:
        if before is None and after is not None:
            return f"first sight of the {change.type}: baseline recorded, no finding"
        if after is None and before is None:
            return f"{change.type} not found and never seen: nothing to compare"
        return "no finding: the change is within policy"
    parts = [f"{len(findings)} finding(s); risk {risk.value}: " + ", ".join(risk.explanation)]
    parts.append(f"mode {decision.mode}" + (" (dry run)" if decision.dry_run else ""))
    parts.append(f"alert: {decision.alert_reason}")
    parts.append(f"remediate: {decision.remediate_reason}")
    return "; ".join(parts)

def _ledger_window(made: datetime) -> tuple[datetime, datetime]:
    """The times a ledger entry for a write made at `made` may have; an event time at the edge of
    what a datetime can hold (year 1, year 9999) is clamped there, never an overflow."""
    earliest, latest = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    since = made - OWN_WRITE_WINDOW if made - earliest > OWN_WRITE_WINDOW else earliest
    until = made + CLOCK_SKEW if latest - made > CLOCK_SKEW else latest
    return since, until


def _deployment_check_event(resource_id: str, problems: list[str], now: datetime) -> VaultEvent:
    """A stand-in for the change the reconcile check found: a deletion when the subscription is
    gone, a write otherwise; what was found rides along for the finding's evidence."""
    missing = problems == event_subscription_problems(None)
    return VaultEvent(
        id=f"reconcile:{vault_key(resource_id)}:{now.isoformat()}", event_type="kvguard.Reconciliation",
        schema="eventgrid", subject=resource_id, time=now, vault=None,
        operation=EVENT_SUBSCRIPTION_DELETE if missing else EVENT_SUBSCRIPTION_WRITE, kind="other",
        access_policy_action=None, status="Succeeded", succeeded=True, caller=Caller(), correlation_id=None,
        tenant_id=None, raw={"reconciliation": problems},
    )


def _reason(
    event: VaultEvent,
    before: VaultConfig | None,
    after: VaultConfig | None,
    findings: Sequence[Finding],
    risk: Risk,
    decision: Decision,
    joined: Sequence[Finding] = (),
) -> str:
    if joined:
        rules = ", ".join(sorted({f.rule for f in joined}))
        note = f"joins the open finding(s) {rules}, alert not repeated"
        findings = [f for f in findings if f not in joined]
        if not findings:
            return f"another report of an alerted change: {note}; remediate: {decision.remediate_reason}"
        return f"{_reason(event, before, after, findings, risk, decision)}; {note}"
    gone = ""
    if after is None and event.kind not in ("delete", "purge"):
        if before is None and not findings:
            return "vault not found and never seen: nothing to compare"
        gone = "vault not found (deleted since the event was sent): nothing to compare; "
        if not findings:
            return gone.removesuffix("; ")
    if not findings:
        if before is None and after is not None:
            return "first sight: baseline recorded, no finding"
        return "no finding: the change is within policy"
    parts = [f"{gone}{len(findings)} finding(s); risk {risk.value}: " + ", ".join(risk.explanation)]
    parts.append(f"mode {decision.mode}" + (" (dry run)" if decision.dry_run else ""))
    parts.append(f"alert: {decision.alert_reason}")
    parts.append(f"remediate: {decision.remediate_reason}")
    return "; ".join(parts)
