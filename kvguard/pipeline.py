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

from kvguard.catalog import HANDLERS
from kvguard.decision import decide
from kvguard.detection import Context
from kvguard.events import Rejected, VaultEvent, parse
from kvguard.flow import acting, findings, memory, own, sweeps
from kvguard.flow.beside import handle_resource
from kvguard.flow.claims import complete, hold, scope, vault_held
from kvguard.flow.reasons import reason
from kvguard.flow.services import Services, SystemClock
from kvguard.outcome import Outcome
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
        claim = self.store.claim(event.id, now, self.lease, owner)
        if claim == "duplicate":
            return Outcome(event.id, "duplicate", "event already processed", memory.known_id(self, event))
        if claim == "in_progress":
            raise TransientError(f"event {event.id} is being processed by another instance")
        try:
            with vault_held(self, event, now, owner):
                return self._process_or_reject(event, now, owner)
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
                complete(self, event, owner)
            return Outcome(event.id, "rejected", why, memory.known_id(self, event))

    # --- read, compare, detect, score, decide, act, record ---------------------------------------

    def _process(self, event: VaultEvent, now: datetime, owner: str) -> Outcome:
        assert event.vault is not None
        vault_id = event.vault.id
        after = self.gateway.get(vault_id) if event.kind != "purge" else None
        baseline = self.store.get_baseline(vault_id)
        # A deleted vault's baseline is what a recovery brings back: compared against, so that an
        # unchanged recovered vault raises no posture finding again.
        before = memory.baseline_config(self, baseline) if baseline else None
        change = diff(before, after) if before is not None and after is not None else None
        recall = memory.recall(self, event, now)
        context = Context(event=event, before=before, after=after, diff=change, policy=self.policy,
                          history=recall.history, now=now, baseline_deleted=bool(baseline and baseline.deleted))
        earlier = acting.earlier_attempt(self, event, after)
        found, suppressed = findings.detected(self, context, vault_id, earlier.findings)
        current = after or before
        steering = before or after  # the accepted baseline's tags steer, not the change's
        display_id = current.id if current is not None else memory.known_id(self, event)
        risk = assess(found, event, steering, self.policy)
        decision = decide(
            policy=self.policy, event=event, vault=steering, vault_id=display_id,
            vault_name=current.name if current is not None else event.vault.name, findings=found, risk=risk.value,
            recent_remediations=memory.recent_remediations(self, display_id, steering, found, now),
        )
        # Read before the findings are refreshed: which findings repeat an open one (see findings.joined).
        joined = findings.joined(self, event, display_id, found)
        actions = acting.act(self, event, owner, display_id, found, risk, decision, before, after, earlier, joined)
        remediated = acting.remediated(actions)
        final = self.gateway.get(vault_id) if remediated else after
        # A grant made while kvguard was reverting shows in `final` but was never judged: the
        # baseline stays, so the grant's own event (or the next one) sees it as the change it is.
        failed = acting.remediation_failed(actions) or (remediated and _granted_meanwhile(after, final))
        opened = findings.opened(self, display_id, found, baseline, before, event)
        # Posture and diff findings can only stop being true when the compared state moved.
        moved = remediated or before is None or (change is not None and not change.empty)
        resolved, resolutions = findings.resolve(self, event, display_id, final if moved else None, found, actions,
                                                 decision, opened, now)
        # The record shows the findings it lists, and their risk: a joined report (already alerted)
        # still drives the decision above, but is not scored again in the record.
        listed = [f for f in found if f not in joined]
        shown = assess(listed, event, steering, self.policy) if joined else risk
        outcome = Outcome(event.id, "processed",
                          with_notes(reason(event, before, after, found, risk, decision, joined), suppressed),
                          display_id, shown.value, shown.severity, listed, actions, shown.explanation, resolutions)
        with self.store.batch():
            hold(self, event, owner)
            for finding in found:
                if finding.rule not in resolved:
                    self.store.open_finding(display_id, finding.rule, opened[finding.rule], now)
            for rule_id in resolved:
                self.store.close_finding(display_id, rule_id)
            memory.record(self, event, now, display_id, baseline, before, final, change, remediated, failed, recall)
            self.store.append_audit(AuditRecord(event.id, display_id, now, outcome.to_audit()))
            ran = {a.handler for a in actions
                   if a.status in ("applied", "failed") and HANDLERS[a.handler].kind == "remediation"}
            for handler_id in sorted(ran | set(earlier.intended)):
                self.store.finish_action(scope(event), handler_id)
            complete(self, event, owner)
        return outcome

    # --- beside the events: the reconcile timer, `kvguard baseline`, the outbox, retention --------

    def reconcile(self, subscription_ids: Sequence[str]) -> list[Outcome]:
        """Catch what Event Grid dropped (vaults, then the resources beside them), then judge the
        sweep rules and check kvguard's own deployment."""
        return [*sweeps.reconcile(self, subscription_ids, self.handle_event), *self.sweep(),
                *self.check_own_deployment()]

    def sweep(self) -> list[Outcome]:
        return sweeps.sweep(self)

    def seed_resources(self) -> int:
        return sweeps.seed_resources(self)

    def check_own_deployment(self) -> list[Outcome]:
        return own.check_own_deployment(self, self.handle_event)

    def flush_outbox(self) -> int:
        return acting.flush_outbox(self)

    def prune(self) -> int:
        """Forget records older than the retention period (run by the reconcile timer), the ledger
        of own writes included (a dead letter redriven within the period still finds its entry)."""
        cutoff = self.clock.now() - self.retention
        return self.store.prune(cutoff) + self.store.prune_own_writes(cutoff)


def _granted_meanwhile(after: VaultConfig | None, final: VaultConfig | None) -> bool:
    if after is None or final is None:
        return False
    change = diff(after, final)
    return bool(change.added_policies or change.widened)
