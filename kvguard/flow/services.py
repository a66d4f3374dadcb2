"""What every step of an event's flow reads through: the ports, the policy, the clock, the action
runner and the parsed baselines.

`kvguard.pipeline.Pipeline` is one, and hands itself to the steps: a policy, clock or sink set on
the pipeline after it was built (onboarding's dry run, a test's clock) is the one every step sees.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from kvguard.actions import ActionRunner
from kvguard.azure_policy import PolicyDefinitions
from kvguard.blast_radius import ActivityLog
from kvguard.flow.parsed_baselines import KnownIds, ParsedBaselines
from kvguard.policy import Policy
from kvguard.ports import AlertSink, Clock, DeploymentReader, ResourceGateway, StateStore, VaultGateway

RETENTION = timedelta(days=90)
# How long an event waits for its vault while another attempt holds it (KVGUARD_VAULT_WAIT_SECONDS):
# Event Grid waits 30 s for an answer before it queues the delivery for a retry, and the waiting
# event still has its own flow to run once it has the vault.
VAULT_WAIT = timedelta(seconds=20)


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class Services:
    """One per process; every piece of state the flow depends on lives in the StateStore, except
    the parsed baselines and the vaults' ids as spelled, caches of what the store holds, and the
    policy definitions' verdicts, a cache of what ARM holds (definitions change rarely)."""

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
        vault_wait: timedelta = VAULT_WAIT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`resources` reads and writes the resources beside the vaults (none: their changes are
        ignored, with that reason); `deployment` reads kvguard's own event subscriptions for the
        reconcile check (none: no check). `vault_wait` bounds how long an event waits for a vault
        another attempt holds (zero: it is sent back for redelivery at once); `sleep` is how the
        wait passes its time (seconds), apart from the clock that stamps the leases, so that a
        test's clock can stand still or jump while nothing really sleeps."""
        self.gateway = gateway
        self.resources = resources
        self.store = store
        self.policy = policy
        self.sinks = dict(sinks or {})
        self.clock = clock or SystemClock()
        self.lease = lease
        self.vault_wait = vault_wait
        self.sleep = sleep
        self.retention = retention
        self.activity_log = activity_log
        self.deployment = deployment
        self.runner = ActionRunner(gateway, self.sinks, ledger=store, now=lambda: self.clock.now(),
                                   resources=resources)
        self.parsed = ParsedBaselines()
        self.known_ids = KnownIds()
        self.definitions = PolicyDefinitions(
            lambda definition_id: self.resources.get(definition_id) if self.resources is not None else None)
