"""handle(event) -> Outcome: the one place where the steps of an event's flow are put in order
(README, "How one event flows").

parse → filter → claim → read → compare → detect → score → decide → act → record.

Each step lives in a module of its own under `kvguard/flow/` (docs/architecture.md says which);
this module only orders them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from kvguard.actions import ActionResult
from kvguard.catalog import HANDLERS
from kvguard.decision import decide
from kvguard.detection import Context
from kvguard.events import Rejected, VaultEvent, parse
from kvguard.flow import acting, findings, memory, own, sweeps
from kvguard.flow.beside import handle_resource
from kvguard.flow.claims import complete_vault_event, hold, scope, vault_held, vault_lock
from kvguard.flow.context import EventContext
from kvguard.flow.reasons import reason
from kvguard.flow.services import Services, SystemClock
from kvguard.ids import vault_key
from kvguard.outcome import Outcome
from kvguard.policy import Policy
from kvguard.ports import AuditRecord, PermanentError, RejectedPayload, TransientError
from kvguard.risk import assess
from kvguard.suppression import with_notes
from kvguard.vault import VaultConfig, diff

__all__ = ["Pipeline", "SystemClock"]


class Pipeline(Services):
    """One pipeline per process; every piece of state it depends on lives in the StateStore."""

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
        own_resource = own.own_resource(self, event)
        if own_resource is not None:
            return own.handle_own_deployment(self, event, own_resource)
        if event.resource is not None:
            return handle_resource(self, event, event.resource)
        passed = self._filter(event)
        if passed is not None:
            return passed
        now = self.clock.now()
        owner = uuid.uuid4().hex  # fences this attempt's claim: a takeover makes its writes fail
        claim, vault_taken = self.store.claim_beside(event.id, vault_lock(event), now, self.lease, owner)
        if claim == "duplicate":
            return Outcome(event.id, "duplicate", "event already processed", memory.known_id(self, event))
        if claim == "in_progress":
            raise TransientError(f"event {event.id} is being processed by another instance")
        try:
            # `taken`: later than `now` when it waited for the vault
            with vault_held(self, event, now, owner, taken_with_claim=vault_taken) as taken:
                return self._process_or_reject(event, taken, owner)
        except BaseException:
            self.store.release(event.id, owner)
            raise

    def _filter(self, event: VaultEvent) -> Outcome | None:
        if event.vault is None:
            if event.event_type.lower().startswith("microsoft.keyvault."):
                why = f"event type {event.event_type} is not a vault configuration change"
                return Outcome(event.id, "ignored", why)
            what = f"operation {event.operation}" if event.operation else f"event type {event.event_type}"
            return Outcome(event.id, "ignored", f"{what} does not concern a Key Vault")
        if event.kind == "other":
            return Outcome(event.id, "ignored", f"operation {event.operation} is not a vault change kvguard handles",
                           memory.known_id(self, event))
        if not self.policy.protects(event.vault.id):
            return Outcome(event.id, "ignored", "Managed HSMs are not protected (protect_managed_hsms: false)",
                           event.vault.id)
        by = own.own_write(self, event)
        if by is not None:
            return Outcome(event.id, "self", f"own write by {by}: never acted on", memory.known_id(self, event))
        return None

    def _process_or_reject(self, event: VaultEvent, now: datetime, owner: str) -> Outcome:
        """`_process`, with a failure no redelivery can cure (see `kvguard.adapters.azure_clients`)
        recorded like a rejected payload (the reason and the raw event) and reported `rejected`, so
        the claim completes and Event Grid does not retry it for 24 hours only to dead-letter it
        with nothing recorded."""
        try:
            return self._process(event, now, owner)
        except PermanentError as error:
            why = f"permanent failure: {error}"
            with self.store.batch():
                hold(self, event, owner)
                self.store.record_rejected(RejectedPayload(why, json.dumps(event.raw, default=str),
                                                           self.clock.now(), event.id))
                complete_vault_event(self, event, owner)
            return Outcome(event.id, "rejected", why, memory.known_id(self, event))

    # --- read, compare, detect, score, decide, act, record ---------------------------------------

    def _process(self, event: VaultEvent, now: datetime, owner: str) -> Outcome:
        """One claimed vault event, step by step: each step reads the context the steps before it
        filled in and adds its own part."""
        assert event.vault is not None
        context = self._read(event, now, owner)  # read, compare
        context.earlier = acting.earlier_attempt(self, context)
        context.findings, context.suppressed = findings.detected(self, context, _judged(context, self.policy))
        context.risk = assess(context.findings, event, context.steering, self.policy)  # score
        current = context.current
        context.decision = decide(
            policy=self.policy, event=event, vault=context.steering, vault_id=context.vault_id,
            vault_name=current.name if current is not None else event.vault.name, findings=context.findings,
            risk=context.risk.value,
            recent_remediations=memory.recent_remediations(self, context, context.vault_id, context.steering),
        )
        context.joined = findings.joined(self, context)
        context.actions = acting.act(self, context)  # act: intents, then alerts beside the remediation
        context.remediated = acting.remediated(context.actions)
        context.final = acting.final_state(context.actions, context.after) if context.remediated else context.after
        # A grant made while kvguard was reverting shows in `final` but was never judged: the
        # baseline stays, so the grant's own event (or the next one) sees it as the change it is.
        context.failed = acting.remediation_failed(context.actions) or (
            context.remediated and _granted_meanwhile(context.after, context.final))
        context.opened = findings.opened(self, context)
        resolved, resolutions = findings.resolve(self, context)
        outcome = self._outcome(context, resolutions)
        self._record(context, resolved, outcome)  # record
        return outcome

    def _read(self, event: VaultEvent, now: datetime, owner: str) -> EventContext:
        """The vault as it is now and as its baseline has it. A deleted vault's baseline is what a
        recovery brings back: compared against, so that an unchanged recovered vault raises no
        posture finding again."""
        assert event.vault is not None
        after, read = memory.read_vault(self, event, now)
        baseline = read.state.baseline
        if baseline is not None:
            self.known_ids.learn(baseline.vault_id)
        before = memory.baseline_config(self, baseline) if baseline else None
        change = diff(before, after) if before is not None and after is not None else None
        context = EventContext(event=event, now=now, owner=owner, baseline=baseline, before=before, after=after,
                               change=change, recall=read.recall, pending=read.state.pending)
        current = context.current
        context.vault_id = current.id if current is not None else memory.known_id(self, event)
        if vault_key(context.vault_id) == event.vault.key:  # a purge's vault may be known by another id
            context.open_before = {f.rule: f.finding for f in read.state.findings}
            context.remediation_marks = read.remediations
        return context

    def _outcome(self, context: EventContext, resolutions: list[ActionResult]) -> Outcome:
        """The record shows the findings it lists, and their risk: a joined report (already alerted)
        still drives the decision, but is not scored again in the record."""
        listed = context.listed
        shown = assess(listed, context.event, context.steering, self.policy) if context.joined else context.risk
        return Outcome(context.event.id, "processed", with_notes(reason(context), context.suppressed),
                       context.vault_id, shown.value, shown.severity, listed, context.actions, shown.explanation,
                       resolutions)

    def _record(self, context: EventContext, resolved: list[str], outcome: Outcome) -> None:
        """Every record of the event in one short batch guarded by the claim: the open findings,
        the ones `resolved`, marks and baseline, the audit record, the intents finished."""
        event, now, vault_id = context.event, context.now, context.vault_id
        with self.store.batch():
            hold(self, event, context.owner)
            for finding in context.findings:
                if finding.rule not in resolved:
                    self.store.open_finding(vault_id, finding.rule, context.opened[finding.rule], now)
            for rule_id in resolved:
                # Only this vault's events write its findings, under its lease: one that was not open
                # when the event read them (a finding remediated as it was found) has none to close.
                if context.open_before is None or rule_id in context.open_before:
                    self.store.close_finding(vault_id, rule_id)
            memory.record(self, context)
            self.store.append_audit(AuditRecord(event.id, vault_id, now, outcome.to_audit(), attempt=context.owner))
            ran = {a.handler for a in context.actions
                   if a.status in ("applied", "failed") and HANDLERS[a.handler].kind == "remediation"}
            for handler_id in sorted(ran | set(context.earlier.intended)):
                self.store.finish_action(scope(event), handler_id)
            complete_vault_event(self, event, context.owner)

    # --- beside the events: the reconcile timer, `kvguard baseline`, the outbox, retention --------

    def reconcile(self, subscription_ids: Sequence[str]) -> list[Outcome]:
        """Catch what Event Grid dropped (vaults, then the resources beside them), then judge the
        sweep rules and check kvguard's own deployment."""
        return [*sweeps.reconcile(self, subscription_ids, self.handle_event), *self.sweep(),
                *self.check_own_deployment()]

    def sweep(self) -> list[Outcome]:
        """The sweep rules over every known vault (`flow.sweeps.sweep`)."""
        return sweeps.sweep(self)

    def seed_resources(self) -> int:
        """Baselines for the resources beside the known vaults (`flow.sweeps.seed_resources`)."""
        return sweeps.seed_resources(self)

    def check_own_deployment(self) -> list[Outcome]:
        """kvguard's event subscriptions as deployed (`flow.own.check_own_deployment`)."""
        return own.check_own_deployment(self, self.handle_event)

    def flush_outbox(self) -> int:
        """What secondary sinks could not take earlier (`flow.acting.flush_outbox`)."""
        return acting.flush_outbox(self)

    def prune(self) -> int:
        """Forget records older than the retention period (run by the reconcile timer), the ledger
        of own writes included (a dead letter redriven within the period still finds its entry)."""
        cutoff = self.clock.now() - self.retention
        return self.store.prune(cutoff) + self.store.prune_own_writes(cutoff)


def _judged(context: EventContext, policy: Policy) -> Context:
    """What the rules see of the change."""
    baseline = context.baseline
    return Context(event=context.event, before=context.before, after=context.after, diff=context.change,
                   policy=policy, history=context.recall.history, now=context.now,
                   baseline_deleted=bool(baseline and baseline.deleted))


def _granted_meanwhile(after: VaultConfig | None, final: VaultConfig | None) -> bool:
    if after is None or final is None:
        return False
    change = diff(after, final)
    return bool(change.added_policies or change.widened)
