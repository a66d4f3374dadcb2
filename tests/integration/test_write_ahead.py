"""Write-ahead actions on real adapters (the HTTPS ARM fake, SQLite and Azurite): a revert that
landed but whose answer was lost, or whose record failed, is confirmed by the retry and accounted
for — one revert in the audit with before/after, and Defender Healthy for every answered rule."""

from __future__ import annotations

import copy
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from kvguard.adapters.arm import ArmVaultGateway
from kvguard.adapters.defender import DefenderAlertSink
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.adapters.tables import TablesStateStore
from kvguard.adapters.webhook import WebhookAlertSink
from kvguard.detection import assessment_name
from kvguard.ids import vault_key
from kvguard.pipeline import Pipeline, SystemClock
from kvguard.policy import Policy
from kvguard.ports import AlertSink, StateStore, TransientError
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake
from tests.integration.test_faults import ARM_ERROR, OWNER, ROGUE, ROGUE_GRANT, VAULT_ID, event, vault_doc

REMOVE = r"/accessPolicies/remove$"
ASSESSMENTS = r"/providers/Microsoft\.Security/assessments/"
ANSWERED = ("KV-AP-01", "KV-AP-03")
EVENT_ID = "b0000000-0000-4000-8000-000000000001"


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        running.add_vault(vault_doc(copy.deepcopy(ROGUE_GRANT)))  # the world after the rogue write
        yield running


@pytest.fixture
def ca_bundle(fake: ArmFake, tmp_path: Path) -> str:
    return str(fake.write_ca_bundle(tmp_path / "ca.pem"))


QUICK_RETRIES: dict[str, Any] = {"retry_total": 2, "retry_backoff_factor": 0.01, "retry_backoff_max": 0.05}


@pytest.fixture
def gateway(fake: ArmFake, ca_bundle: str) -> Iterator[ArmVaultGateway]:
    gw = ArmVaultGateway(FakeCredential(), endpoint=fake.base_url, connection_verify=ca_bundle, **QUICK_RETRIES)
    yield gw
    gw.close()


@pytest.fixture
def defender(fake: ArmFake, ca_bundle: str) -> DefenderAlertSink:
    return DefenderAlertSink(FakeCredential(), endpoint=fake.base_url, connection_verify=ca_bundle, **QUICK_RETRIES)


@pytest.fixture(params=["sqlite", "tables"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], StateStore]]:
    """Opens the test's one shared state (as another worker process would) on each call."""
    opened: list[SQLiteStateStore | TablesStateStore] = []

    def opener() -> StateStore:
        if request.param == "sqlite":
            opened.append(SQLiteStateStore(tmp_path / "state.db"))
        else:
            connection = request.getfixturevalue("azurite_connection_string")
            opened.append(TablesStateStore.from_connection_string(connection, request.getfixturevalue("table_prefix")))
        return opened[-1]

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[[], StateStore]) -> StateStore:
    return open_store()


def _land_held_back(store: StateStore) -> None:
    """What a Table Storage batch held back so far, written now: a record lands in part on Table
    Storage only when its transaction was refused and its writes were made one by one, and a
    failure part way through that is what these faults stand for."""
    flush = getattr(store, "_flush", None)
    if flush is not None:
        flush()


class FailsOnce:
    """The store as it is, except that the first call of `method` once `armed()` is true fails as
    storage does when it is briefly unavailable (the adapters raise TransientError for a 503)."""

    def __init__(self, store: StateStore, method: str, armed: Callable[[], bool], *,
                 landing_held_back: bool = False) -> None:
        """`landing_held_back`: the writes a batch held back before the call land first."""
        self._store = store
        self._method = method
        self._armed = armed
        self._landing = landing_held_back
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name != self._method:
            return attribute

        def failing_once(*args: Any, **kwargs: Any) -> Any:
            if not self.failed and self._armed():
                self.failed = True
                if self._landing:
                    _land_held_back(self._store)
                raise TransientError(f"table storage ({name}): HTTP 503 Service Unavailable")
            return attribute(*args, **kwargs)

        return failing_once


def remediating(gateway: ArmVaultGateway, store: StateStore, sinks: dict[str, AlertSink]) -> Pipeline:
    pipeline = Pipeline(gateway=gateway, store=store, policy=Policy.model_validate({"mode": "remediate"}),
                        sinks=sinks)
    store.put_baseline(VAULT_ID, vault_doc(), None, now=pipeline.clock.now())
    return pipeline


def principals(fake: ArmFake) -> list[str]:
    return [p["objectId"] for p in fake.vault(VAULT_ID)["properties"]["accessPolicies"]]


def assert_accounted_for(store: StateStore, fake: ArmFake) -> None:
    """One applied revert in the whole audit, with before/after; every answered rule Healthy in
    Defender and closed in the store; the vault and the baseline clean."""
    reverts = [
        action for record in store.list_audit(VAULT_ID) for action in record.outcome["actions"]
        if action["handler"] == "revert_access_policy" and action["status"] == "applied"
    ]
    assert len(reverts) == 1
    assert reverts[0]["before"] and reverts[0]["before"][0]["objectId"] == ROGUE
    assert reverts[0]["after"] == [None]  # the rogue principal has no entry left
    for rule in ANSWERED:
        assessment = fake.assessment(VAULT_ID, assessment_name(rule))
        assert assessment is not None and assessment["properties"]["status"]["code"] == "Healthy", rule
    assert {f.rule for f in store.open_findings(VAULT_ID)}.isdisjoint(ANSWERED)
    assert principals(fake) == [OWNER]
    baseline = store.get_baseline(VAULT_ID)
    assert baseline is not None
    assert [p["objectId"] for p in baseline.config["properties"]["accessPolicies"]] == [OWNER]


def test_a_revert_applied_behind_a_5xx_is_confirmed_on_retry(
    store: StateStore, fake: ArmFake, gateway: ArmVaultGateway, defender: DefenderAlertSink
) -> None:
    pipeline = remediating(gateway, store, {"raise_defender_alert": defender})
    fake.apply_then_fail("PUT", REMOVE, status=500, body=ARM_ERROR, times=3)  # the try and both retries

    with pytest.raises(TransientError, match="revert_access_policy"):
        pipeline.handle(event(EVENT_ID))
    assert principals(fake) == [OWNER]  # the revert landed; nobody was told
    assert store.list_audit(VAULT_ID) == []
    alerts_sent = len(fake.requests_to("PUT", ASSESSMENTS))

    (outcome,) = pipeline.handle(event(EVENT_ID))  # Event Grid redelivers

    (revert,) = [a for a in outcome.actions if a.handler == "revert_access_policy"]
    assert revert.status == "applied"
    assert "confirmed on retry" in revert.detail
    assert set(ANSWERED) <= {f.rule for f in outcome.findings}
    assert len(fake.requests_to("PUT", REMOVE)) == 3  # not written again
    # Defender was not re-PUT Unhealthy: the retry only turned the answered rules Healthy.
    retried = fake.requests_to("PUT", ASSESSMENTS)[alerts_sent:]
    assert {r.json["properties"]["status"]["code"] for r in retried} == {"Healthy"}
    assert_accounted_for(store, fake)
    assert pipeline.handle(event(EVENT_ID))[0].outcome == "duplicate"


@pytest.mark.parametrize("method", ["put_baseline", "append_audit", "open_finding", "complete"])
def test_a_store_failure_right_after_the_revert_is_accounted_for_on_retry(
    method: str, store: StateStore, fake: ArmFake, gateway: ArmVaultGateway, defender: DefenderAlertSink
) -> None:
    flaky = FailsOnce(store, method, armed=lambda: bool(fake.requests_to("PUT", REMOVE)))
    pipeline = remediating(gateway, cast(StateStore, flaky), {"raise_defender_alert": defender})

    with pytest.raises(TransientError, match="503"):
        pipeline.handle(event(EVENT_ID))
    assert flaky.failed
    assert principals(fake) == [OWNER]

    (outcome,) = pipeline.handle(event(EVENT_ID))

    assert outcome.outcome == "processed"
    assert len(fake.requests_to("PUT", REMOVE)) == 1
    assert_accounted_for(store, fake)
    assert pipeline.handle(event(EVENT_ID))[0].outcome == "duplicate"


class Crash(BaseException):
    """The worker dies here (the host stopped it, it ran out of memory): nothing after it runs, and
    no handler of kvguard's sees it (it is no Exception)."""


class CrashesAfterTheRemove:
    """The vault gateway, except that the worker dies once a targeted remove has landed, before
    its answer is seen."""

    def __init__(self, gateway: ArmVaultGateway) -> None:
        self._gateway = gateway

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gateway, name)

    def remove_access_policy(self, vault_id: str, entry: Any) -> Any:
        self._gateway.remove_access_policy(vault_id, entry)
        raise Crash("the worker died after the revert landed")


class CrashesAtTheRecord:
    """The store, except that the worker dies at the first audit record it writes."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name != "append_audit" or self.crashed:
            return attribute

        def crashing(*args: Any, **kwargs: Any) -> Any:
            self.crashed = True
            raise Crash("the worker died while recording")

        return crashing


def unhealthy_puts(fake: ArmFake, rule: str) -> list[Any]:
    return [r for r in fake.requests_to("PUT", ASSESSMENTS + assessment_name(rule))
            if r.json["properties"]["status"]["code"] == "Unhealthy"]


@pytest.mark.parametrize("crash", ["after the revert landed, its alert not sent", "at the record"])
def test_a_crash_between_the_revert_and_its_record_ends_with_the_alert_sent_and_the_revert_recorded_once(
    crash: str, store: StateStore, fake: ArmFake, gateway: ArmVaultGateway, defender: DefenderAlertSink
) -> None:
    """The alerts go out beside the revert: the worker may die with the revert landed and the
    alert lost on its way, or with everything answered and nothing recorded. The intent written
    ahead and the redelivery still end with the alert raised and one revert in the audit."""
    sinks: dict[str, AlertSink] = {"raise_defender_alert": defender}
    if crash == "at the record":
        pipeline = remediating(gateway, cast(StateStore, CrashesAtTheRecord(store)), sinks)
    else:
        pipeline = remediating(cast(ArmVaultGateway, CrashesAfterTheRemove(gateway)), store, sinks)
        fake.inject("PUT", ASSESSMENTS, status=503, body=ARM_ERROR, times=100)  # Defender down meanwhile

    with pytest.raises(Crash):
        pipeline.handle(event(EVENT_ID))
    assert principals(fake) == [OWNER]  # the revert landed
    assert store.list_audit(VAULT_ID) == []
    if crash != "at the record":
        # The crashed worker's alert calls (side by side, one per finding) give up on their own
        # (one try and two retries each), never landing.
        tries = 1 + QUICK_RETRIES["retry_total"]
        deadline = time.monotonic() + 10
        while len(fake.requests_to("PUT", ASSESSMENTS)) < tries * len(ANSWERED) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        puts = Counter(r.path for r in fake.requests_to("PUT", ASSESSMENTS))
        assert len(puts) >= len(ANSWERED) and set(puts.values()) == {tries}, puts
        assert fake.assessment(VAULT_ID, assessment_name("KV-AP-01")) is None
        fake.clear_faults()
    # Event Grid redelivers, to a worker that lives.
    pipeline = Pipeline(gateway=gateway, store=store, policy=pipeline.policy, sinks=sinks)

    (outcome,) = pipeline.handle(event(EVENT_ID))

    assert outcome.outcome == "processed"
    (revert,) = [a for a in outcome.actions if a.handler == "revert_access_policy"]
    assert revert.status == "applied" and "confirmed on retry" in revert.detail
    assert unhealthy_puts(fake, "KV-AP-01")  # the alert was raised, then resolved with the revert
    assert fake.requests_to("PUT", ASSESSMENTS)[-1].json["properties"]["status"]["code"] == "Healthy"
    assert len(fake.requests_to("PUT", REMOVE)) == 1
    assert_accounted_for(store, fake)
    assert store.pending_actions(vault_key(VAULT_ID)) == []
    assert pipeline.handle(event(EVENT_ID))[0].outcome == "duplicate"


def test_the_revert_starts_while_the_alerts_are_on_their_way_and_after_its_intent(
    open_store: Callable[[], StateStore], fake: ArmFake, gateway: ArmVaultGateway, defender: DefenderAlertSink
) -> None:
    """Defender holds the first assessment until the revert's remove reaches ARM: the revert
    must not wait for the alert (it would wait out the hold), and when it arrives its intent is
    already written and the alert already on its way; the record waits for both."""
    pipeline = remediating(gateway, open_store(), {"raise_defender_alert": defender})
    elsewhere = open_store()  # another worker's view of the shared state
    removing, seen = threading.Event(), []

    def hold_the_alert() -> None:
        seen.append(("the alert was held until the remove arrived", removing.wait(timeout=5)))

    def at_the_remove() -> None:
        written = bool(elsewhere.pending_actions(vault_key(VAULT_ID)))
        seen.append(("the intent was written before the remove", written))
        removing.set()

    fake.before("PUT", ASSESSMENTS, hold_the_alert)
    fake.before("PUT", REMOVE, at_the_remove)

    (outcome,) = pipeline.handle(event(EVENT_ID))

    assert dict(seen) == {"the alert was held until the remove arrived": True,
                          "the intent was written before the remove": True}
    assert [a.status for a in outcome.actions if a.handler in ("raise_defender_alert", "revert_access_policy")] \
        == ["applied", "applied"]
    assert_accounted_for(pipeline.store, fake)


def test_a_revert_that_did_not_land_is_made_on_retry(
    store: StateStore, fake: ArmFake, gateway: ArmVaultGateway, defender: DefenderAlertSink
) -> None:
    pipeline = remediating(gateway, store, {"raise_defender_alert": defender})
    fake.inject("PUT", REMOVE, status=503, body=ARM_ERROR, times=3)

    with pytest.raises(TransientError):
        pipeline.handle(event(EVENT_ID))
    assert ROGUE in principals(fake)

    (outcome,) = pipeline.handle(event(EVENT_ID))

    (revert,) = [a for a in outcome.actions if a.handler == "revert_access_policy"]
    assert revert.status == "applied" and "confirmed on retry" not in revert.detail
    assert_accounted_for(store, fake)
    assert store.pending_actions(vault_key(VAULT_ID)) == []


def test_a_failing_webhook_does_not_hold_back_the_revert_and_is_retried_from_the_outbox(
    store: StateStore, fake: ArmFake, gateway: ArmVaultGateway, defender: DefenderAlertSink, ca_bundle: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_bundle)
    webhook = WebhookAlertSink(f"{fake.base_url}/webhook")
    pipeline = remediating(gateway, store, {"raise_defender_alert": defender, "notify_webhook": webhook})
    fake.inject("POST", r"^/webhook$", status=503, body=ARM_ERROR, times=100)

    (outcome,) = pipeline.handle(event(EVENT_ID))

    (revert,) = [a for a in outcome.actions if a.handler == "revert_access_policy"]
    assert revert.status == "applied"
    (notified,) = [a for a in outcome.actions if a.handler == "notify_webhook"]
    assert notified.status == "failed" and "outbox" in notified.detail
    assert_accounted_for(store, fake)
    queued = store.list_outbox()
    assert queued and fake.webhooks == []
    assert pipeline.flush_outbox() == 0  # still down: kept
    assert len(store.list_outbox()) == len(queued)

    fake.clear_faults()  # the webhook is back
    assert pipeline.flush_outbox() == len(queued)
    assert store.list_outbox() == []
    texts = [message["text"] for message in fake.webhooks]
    assert len(texts) == len(queued)
    assert any("KV-AP-01" in text and "resolved" not in text for text in texts)
    assert any(text.startswith("kvguard resolved: KV-AP-01") for text in texts)


class LaterClock:
    """The system clock, `ahead` in the future: a worker that sees another's lease as expired."""

    def __init__(self, ahead: timedelta) -> None:
        self.ahead = ahead

    def now(self) -> datetime:
        return SystemClock().now() + self.ahead


def worker_and_later_worker(
    open_store: Callable[[], StateStore], gateway: ArmVaultGateway, defender: DefenderAlertSink
) -> tuple[Pipeline, Pipeline]:
    """Two workers on the same state: A remediates; B's clock is two of A's leases later, so B
    sees A's lease as run out and takes its event over."""
    lease = timedelta(seconds=30)
    worker_a = remediating(gateway, open_store(), {"raise_defender_alert": defender})
    worker_a.lease = lease
    worker_b = Pipeline(gateway=gateway, store=open_store(), policy=worker_a.policy,
                        sinks={"raise_defender_alert": defender}, clock=LaterClock(2 * lease), lease=lease)
    return worker_a, worker_b


def test_a_worker_whose_lease_was_taken_over_mid_revert_records_nothing(
    open_store: Callable[[], StateStore], fake: ArmFake, gateway: ArmVaultGateway, defender: DefenderAlertSink
) -> None:
    """Worker A's revert is slower than its lease: worker B takes the event over meanwhile,
    reverts and records it. A's late answer must not add a second record or undo B's claim. (On
    SQLite this also shows that A holds no write lock while it waits for ARM: B could not write
    at all otherwise.)"""
    worker_a, worker_b = worker_and_later_worker(open_store, gateway, defender)
    taken_over: list[str] = []
    fake.before("PUT", REMOVE, lambda: taken_over.extend(o.outcome for o in worker_b.handle(event(EVENT_ID))))

    with pytest.raises(TransientError, match="taken over"):
        worker_a.handle(event(EVENT_ID))

    assert taken_over == ["processed"]
    store = worker_b.store
    [record] = store.list_audit(VAULT_ID)  # B's; A's never landed
    assert record.outcome["outcome"] == "processed"
    assert_accounted_for(store, fake)
    assert store.pending_actions(vault_key(VAULT_ID)) == []
    assert worker_a.handle(event(EVENT_ID))[0].outcome == "duplicate"


def test_a_takeover_after_the_revert_landed_records_it_from_the_intent(
    open_store: Callable[[], StateStore], fake: ArmFake, gateway: ArmVaultGateway, defender: DefenderAlertSink
) -> None:
    """Worker A's revert lands, and A's lease runs out before A records it: worker B takes the
    event over, reads a vault without the grant (nothing to detect any more) and finds A's intent.
    B must record the revert A made (confirmed on retry), with A's before, so that it is not lost
    from the audit; A's late record must not land."""
    worker_a, worker_b = worker_and_later_worker(open_store, gateway, defender)
    taken_over: list[str] = []

    def take_over() -> None:
        taken_over.extend(o.outcome for o in worker_b.handle(event(EVENT_ID)))

    # A's next request once its remove is under way is after the remove landed.
    fake.before("PUT", REMOVE, lambda: fake.before("GET", r"/vaults/[^/]+$", take_over))

    with pytest.raises(TransientError, match="taken over"):
        worker_a.handle(event(EVENT_ID))

    assert taken_over == ["processed"]
    store = worker_b.store
    [record] = store.list_audit(VAULT_ID)
    assert [a["detail"].endswith("confirmed on retry") for a in record.outcome["actions"]
            if a["handler"] == "revert_access_policy"] == [True]
    assert_accounted_for(store, fake)
    assert len(fake.requests_to("PUT", REMOVE)) == 1
    assert store.pending_actions(vault_key(VAULT_ID)) == []


def test_a_second_event_of_a_vault_waits_for_the_first_so_a_change_is_reverted_once(
    open_store: Callable[[], StateStore], fake: ArmFake, gateway: ArmVaultGateway, defender: DefenderAlertSink
) -> None:
    """ARM often sends two events for one write. Processed side by side by two workers, both
    would read the rogue grant and both revert it. The second, delivered on another thread while
    the first reverts, waits for the vault and then reads it as the first left it (the current
    state is the truth): processed without raising, nothing left to revert."""
    worker_a = remediating(gateway, open_store(), {"raise_defender_alert": defender})
    waiting = threading.Event()

    def sleep(seconds: float) -> None:
        waiting.set()
        time.sleep(seconds)

    worker_b = Pipeline(gateway=gateway, store=open_store(), policy=worker_a.policy,
                        sinks={"raise_defender_alert": defender}, sleep=sleep)
    second = "b0000000-0000-4000-8000-000000000002"
    decided: list[str] = []
    raised: list[BaseException] = []

    def deliver_the_twin() -> None:
        try:
            decided.extend(o.outcome for o in worker_b.handle(event(second)))
        except BaseException as error:
            raised.append(error)

    twin = threading.Thread(target=deliver_the_twin)

    def start_the_twin() -> None:  # A's revert goes on once B waits for the vault (or B is done)
        twin.start()
        while twin.is_alive() and not waiting.wait(0.01):
            pass

    fake.before("PUT", REMOVE, start_the_twin)

    (first,) = worker_a.handle(event(EVENT_ID))
    twin.join()

    assert first.outcome == "processed"
    assert raised == []
    assert decided == ["processed"] and waiting.is_set()
    [record] = [r for r in worker_b.store.list_audit(VAULT_ID) if r.event_id == second]
    assert not [a for a in record.outcome["actions"] if a["handler"] == "revert_access_policy"
                and a["status"] == "applied"]
    assert len(fake.requests_to("PUT", REMOVE)) == 1
    assert_accounted_for(worker_b.store, fake)


def test_without_a_wait_the_second_event_of_a_vault_is_sent_back_for_redelivery(
    open_store: Callable[[], StateStore], fake: ArmFake, gateway: ArmVaultGateway, defender: DefenderAlertSink
) -> None:
    """`vault_wait` zero: the twin raises at once (Event Grid redelivers it) and its redelivery,
    once the first is done, has nothing left to revert."""
    worker_a = remediating(gateway, open_store(), {"raise_defender_alert": defender})
    worker_b = Pipeline(gateway=gateway, store=open_store(), policy=worker_a.policy,
                        sinks={"raise_defender_alert": defender}, vault_wait=timedelta(0))
    second = "b0000000-0000-4000-8000-000000000002"
    meanwhile: list[BaseException] = []

    def deliver_the_twin() -> None:
        try:
            worker_b.handle(event(second))
        except TransientError as error:
            meanwhile.append(error)

    fake.before("PUT", REMOVE, deliver_the_twin)

    (first,) = worker_a.handle(event(EVENT_ID))

    assert first.outcome == "processed"
    assert len(meanwhile) == 1 and "being processed by another instance" in str(meanwhile[0])
    (redelivered,) = worker_b.handle(event(second))
    assert redelivered.outcome == "processed"
    assert not [a for a in redelivered.actions if a.handler == "revert_access_policy" and a.status == "applied"]
    assert len(fake.requests_to("PUT", REMOVE)) == 1
    assert_accounted_for(worker_b.store, fake)


def test_sqlite_holds_no_write_lock_while_kvguard_waits_for_arm(
    fake: ArmFake, gateway: ArmVaultGateway, defender: DefenderAlertSink, tmp_path: Path
) -> None:
    """Another process on the same SQLite file writes at once while this one reads the vault,
    alerts and reverts (on today's store it waited for the whole event, or failed after 30 s)."""
    pipeline = remediating(gateway, SQLiteStateStore(tmp_path / "state.db"), {"raise_defender_alert": defender})
    written: list[str] = []

    def write_from_elsewhere(what: str) -> Callable[[], None]:
        # A connection per write: the alert's and the revert's requests arrive side by side, and
        # one connection shared by two threads would start a transaction inside the other's.
        def write() -> None:
            other = sqlite3.connect(tmp_path / "state.db", timeout=0.2, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # raises "database is locked" after 0.2 s if held
                other.execute("INSERT INTO marks (key, member, at) VALUES (?, 'x', 0)", (what,))
                other.execute("COMMIT")
            finally:
                other.close()
            written.append(what)
        return write

    fake.before("GET", r"/vaults/kv-orders-01$", write_from_elsewhere("arm read"))
    fake.before("PUT", ASSESSMENTS, write_from_elsewhere("alert"))
    fake.before("PUT", REMOVE, write_from_elsewhere("revert"))

    (outcome,) = pipeline.handle(event(EVENT_ID))

    assert outcome.outcome == "processed"
    # The alert and the revert go out side by side: either may reach its service first.
    assert written[0] == "arm read" and sorted(written[1:]) == ["alert", "revert"]


SECOND_ROGUE = "5e4d3c2b-1a09-4f8e-9d7c-6b5a49382716"
SECOND_EVENT_ID = "b0000000-0000-4000-8000-000000000002"


def grant_second_rogue(fake: ArmFake) -> None:
    """Another intruder's grant lands in the vault while the first is being dealt with."""
    with fake._lock:
        fake.vaults[vault_key(VAULT_ID)]["properties"]["accessPolicies"].append(
            {**copy.deepcopy(ROGUE_GRANT), "objectId": SECOND_ROGUE})


def applied_reverts_of(store: StateStore, principal: str) -> list[dict[str, Any]]:
    return [action for record in store.list_audit(VAULT_ID) for action in record.outcome["actions"]
            if action["handler"] == "revert_access_policy" and action["status"] == "applied"
            and any(entry and entry["objectId"] == principal for entry in action["before"] or [])]


class FailsOnceAfterTheWrite(FailsOnce):
    """The store, except that the first call of `method` once armed lands, with the writes made
    before it, and then fails (a 503 whose write was applied)."""

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name != self._method:
            return attribute

        def landing_then_failing(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            if not self.failed and self._armed():
                self.failed = True
                _land_held_back(self._store)
                raise TransientError(f"table storage ({name}): HTTP 503 after the write")
            return result

        return landing_then_failing


def test_the_alert_an_earlier_attempt_lost_goes_out_beside_a_new_grant_of_the_same_rule(
    store: StateStore, fake: ArmFake, gateway: ArmVaultGateway, defender: DefenderAlertSink
) -> None:
    """The first attempt reverts the rogue grant while Defender is down; by the retry a second
    grant (the same rule, another principal) has landed. Both are alerted: the finding the
    intent brought back is not dropped for sharing a rule with the one the vault now shows."""
    pipeline = remediating(gateway, store, {"raise_defender_alert": defender})
    # KV-AP-01's assessment refused: the try and both retries (the others go beside it and land).
    fake.inject("PUT", ASSESSMENTS + assessment_name("KV-AP-01"), status=503, body=ARM_ERROR, times=3)

    with pytest.raises(TransientError):
        pipeline.handle(event(EVENT_ID))
    assert principals(fake) == [OWNER]
    grant_second_rogue(fake)
    refused = len(unhealthy_puts(fake, "KV-AP-01"))  # the PUTs Defender answered 503

    (outcome,) = pipeline.handle(event(EVENT_ID))

    assert outcome.outcome == "processed"
    alerted = " ".join(json.dumps(r.json["properties"].get("additionalData"))
                       for r in unhealthy_puts(fake, "KV-AP-01")[refused:])
    assert ROGUE in alerted and SECOND_ROGUE in alerted
    assert principals(fake) == [OWNER]
    assert len(applied_reverts_of(store, ROGUE)) == 1 and len(applied_reverts_of(store, SECOND_ROGUE)) == 1


def test_a_grant_made_after_an_earlier_attempt_sent_its_alerts_is_alerted_on_the_retry(
    store: StateStore, fake: ArmFake, gateway: ArmVaultGateway, defender: DefenderAlertSink
) -> None:
    """The first attempt's alerts all land and its revert fails transiently: its intent names the
    alerts it sent, which the retry does not send again. By the retry a second grant has landed:
    the retry alerts that one (the earlier attempt never saw it) and reverts both."""
    pipeline = remediating(gateway, store, {"raise_defender_alert": defender})
    fake.inject("PUT", REMOVE, status=503, body=ARM_ERROR, times=3)

    with pytest.raises(TransientError):
        pipeline.handle(event(EVENT_ID))
    assert ROGUE in principals(fake)
    sent = len(unhealthy_puts(fake, "KV-AP-01"))
    assert sent == 1
    grant_second_rogue(fake)

    (outcome,) = pipeline.handle(event(EVENT_ID))

    again = " ".join(json.dumps(r.json["properties"].get("additionalData"))
                     for r in unhealthy_puts(fake, "KV-AP-01")[sent:])
    assert SECOND_ROGUE in again and ROGUE not in again  # the new grant alerted; the first not again
    assert principals(fake) == [OWNER]
    assert len(applied_reverts_of(store, ROGUE)) == 1 and len(applied_reverts_of(store, SECOND_ROGUE)) == 1
    (alert,) = [a for a in outcome.actions if a.handler == "raise_defender_alert"]
    assert alert.status == "applied" and "KV-AP-01" in alert.rules


# Table Storage only: SQLite writes a record in one transaction, so it never lands in part; Table
# Storage does when the record's transaction is refused and its writes are made one by one.
@pytest.mark.parametrize("open_store", ["tables"], indirect=True)
def test_a_revert_by_a_later_attempt_of_an_already_recorded_event_is_recorded(
    open_store: Callable[[], StateStore], fake: ArmFake, gateway: ArmVaultGateway, defender: DefenderAlertSink
) -> None:
    """Attempt 1 records the event and fails right after its audit record (Table Storage has no
    transaction across tables); attempt 2 finds a new grant, reverts it and fails; attempt 3
    must account for attempt 2's revert, though the event already has a record (attempt 1's)."""
    store = open_store()
    flaky = FailsOnceAfterTheWrite(store, "append_audit", armed=lambda: True)
    pipeline = remediating(gateway, cast(StateStore, flaky), {"raise_defender_alert": defender})
    with pytest.raises(TransientError, match="after the write"):
        pipeline.handle(event(EVENT_ID))
    assert len(applied_reverts_of(store, ROGUE)) == 1
    grant_second_rogue(fake)
    fake.apply_then_fail("PUT", REMOVE, status=500, body=ARM_ERROR, times=3)
    with pytest.raises(TransientError, match="revert_access_policy"):
        pipeline.handle(event(EVENT_ID))
    assert principals(fake) == [OWNER]  # the second grant's revert landed, unrecorded

    (outcome,) = pipeline.handle(event(EVENT_ID))

    assert outcome.outcome == "processed"
    assert len(applied_reverts_of(store, SECOND_ROGUE)) == 1
    assert len(applied_reverts_of(store, ROGUE)) == 1
    assert store.pending_actions(vault_key(VAULT_ID)) == []


# Table Storage only: SQLite writes a record in one transaction, so it never lands in part; Table
# Storage does when the record's transaction is refused and its writes are made one by one.
@pytest.mark.parametrize("open_store", ["tables"], indirect=True)
def test_an_intent_taken_over_and_recorded_by_another_event_is_not_recorded_again(
    store: StateStore, fake: ArmFake, gateway: ArmVaultGateway, defender: DefenderAlertSink
) -> None:
    """Event A's revert lands behind a 5xx; event B of the same vault confirms it from A's intent
    and records it, then fails before finishing the intent. B's retry and A's retry find the
    intent recorded (B took it over): one applied revert in the whole audit."""
    pipeline = remediating(gateway, store, {"raise_defender_alert": defender})
    fake.apply_then_fail("PUT", REMOVE, status=500, body=ARM_ERROR, times=3)
    with pytest.raises(TransientError, match="revert_access_policy"):
        pipeline.handle(event(EVENT_ID))
    flaky = FailsOnce(store, "finish_action", armed=lambda: True, landing_held_back=True)
    second = Pipeline(gateway=gateway, store=cast(StateStore, flaky), policy=pipeline.policy,
                      sinks={"raise_defender_alert": defender})
    with pytest.raises(TransientError, match="finish_action"):
        second.handle(event(SECOND_EVENT_ID))
    assert len(applied_reverts_of(store, ROGUE)) == 1

    assert second.handle(event(SECOND_EVENT_ID))[0].outcome == "processed"
    assert pipeline.handle(event(EVENT_ID))[0].outcome == "processed"

    assert len(applied_reverts_of(store, ROGUE)) == 1
    assert store.pending_actions(vault_key(VAULT_ID)) == []
    assert len(fake.requests_to("PUT", REMOVE)) == 3
