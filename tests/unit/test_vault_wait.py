"""An event whose vault another attempt holds waits for it (`kvguard.flow.claims.wait_for_vault`)
instead of raising at once into Event Grid's retry schedule; in the simulated world, with the
simulated clock: the wait's pauses are handed to an injected `sleep`, which moves the clock on (or
lets go of the vault) and never really sleeps."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from detectors.cases import INTRUDER, vault
from kvguard import runtime
from kvguard.events import VaultEvent, parse
from kvguard.flow.claims import vault_lock
from kvguard.ports import TransientError
from kvguard.settings import Settings, SettingsError, load_settings
from tests.integration.armfake import FakeCredential
from tests.unit.test_pipeline import ROGUE_CALLER, ROGUE_GRANT, START, TEAM, Env, event, principals, statuses

HOLDER = "holder-of-the-vault"
HOLDERS_LEASE = timedelta(minutes=5)
RAW = event(ROGUE_CALLER, suffix="/accessPolicies/add", event_id="evt-waits")


def _lock() -> str:
    [parsed] = parse(RAW)
    assert isinstance(parsed, VaultEvent)
    return vault_lock(parsed)


LOCK = _lock()  # the vault's lease


class Sleeps:
    """The injected sleep: each pause moves the simulated clock on by its length, then runs
    `meanwhile` (what other instances do while this one waits) with the number of pauses so far."""

    def __init__(self, env: Env, meanwhile: Callable[[int], None] = lambda count: None) -> None:
        self.env = env
        self.meanwhile = meanwhile
        self.pauses: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.env.world.clock.advance(timedelta(seconds=seconds))
        self.meanwhile(len(self.pauses))


def burst_env(sleeps: Callable[[Env], Sleeps], **services: Any) -> tuple[Env, Sleeps]:
    """A rogue grant whose vault another attempt (HOLDER) holds, its event RAW about to arrive."""
    env = Env()
    sleep = sleeps(env)
    env.pipeline.sleep = sleep
    for name, value in services.items():
        setattr(env.pipeline, name, value)
    env.world.put(vault(accessPolicies=[TEAM, ROGUE_GRANT]))
    assert env.store.claim(LOCK, START, HOLDERS_LEASE, HOLDER) == "claimed"
    return env, sleep


def test_an_event_waits_for_its_vault_and_is_processed_once_the_holder_lets_go() -> None:
    def let_go_after_three(env: Env) -> Sleeps:
        def meanwhile(count: int) -> None:
            if count == 3:
                assert env.store.release(LOCK, HOLDER)
        return Sleeps(env, meanwhile)

    env, sleep = burst_env(let_go_after_three)

    outcome = env.deliver(RAW)

    assert outcome.outcome == "processed"
    assert statuses(outcome)["revert_access_policy"] == "applied"
    assert INTRUDER not in principals(env.current())
    assert len(sleep.pauses) == 3
    [record] = env.store.list_audit()
    assert record.at == env.world.clock.now() > START  # judged and recorded as of when it had the vault
    assert env.store.claim(LOCK, env.world.clock.now(), env.pipeline.lease, "next") == "claimed"  # let go of


def test_the_pauses_grow_from_short_to_a_bound_and_end_with_the_wait() -> None:
    env, sleep = burst_env(Sleeps)

    with pytest.raises(TransientError, match="being processed by another instance"):
        env.deliver(RAW)

    assert 0.01 <= sleep.pauses[0] <= 0.02
    assert min(sleep.pauses[4:-1]) >= 0.125 and max(sleep.pauses) <= 0.25  # from the fifth on: 0.125-0.25 s
    assert env.world.clock.now() == START + env.pipeline.vault_wait


def test_the_wait_ends_in_a_transient_error_and_lets_go_of_the_event_for_its_redelivery() -> None:
    env, _ = burst_env(Sleeps)

    with pytest.raises(TransientError, match=r"being processed by another instance \(waited 20 s\)"):
        env.deliver(RAW)

    assert env.store.list_audit() == []
    assert INTRUDER in principals(env.current())  # nothing acted
    now = env.world.clock.now()
    assert env.store.claim(LOCK, now, env.pipeline.lease, "someone") == "in_progress"  # still the holder's
    assert env.store.release(LOCK, HOLDER)
    redelivered = env.deliver(RAW)  # the event's own claim was released: processed at once
    assert redelivered.outcome == "processed"
    assert INTRUDER not in principals(env.current())


def test_no_wait_sends_the_event_back_at_once() -> None:
    env, sleep = burst_env(Sleeps, vault_wait=timedelta(0))

    with pytest.raises(TransientError, match=r"being processed by another instance$"):
        env.deliver(RAW)

    assert sleep.pauses == []
    assert env.world.clock.now() == START


def test_a_wait_longer_than_half_the_lease_keeps_the_event_claimed() -> None:
    """With a 10 s lease, the event's claim stamped when the wait began would have run out after
    10 s: another instance could then take the event over while this one still waits for it."""
    lease = timedelta(seconds=10)
    seen: list[str] = []

    def meanwhile_of(env: Env) -> Sleeps:
        def meanwhile(count: int) -> None:
            now = env.world.clock.now()
            if now >= START + timedelta(seconds=12) and not seen:
                seen.append(env.store.claim("evt-waits", now, lease, "another-instance"))
            if now >= START + timedelta(seconds=15):
                env.store.release(LOCK, HOLDER)
        return Sleeps(env, meanwhile)

    env, _ = burst_env(meanwhile_of, lease=lease)

    outcome = env.deliver(RAW)

    assert seen == ["in_progress"]
    assert outcome.outcome == "processed"


def test_an_event_taken_over_while_it_waits_stops_without_acting() -> None:
    """The fence holds while waiting: another instance took the event over (its lease ran out in a
    stall), so this attempt must neither take the vault nor act."""
    lease = timedelta(seconds=1)

    def stolen_of(env: Env) -> Sleeps:
        def meanwhile(count: int) -> None:
            if count == 1:
                env.store.release("evt-waits")
                assert env.store.claim("evt-waits", env.world.clock.now(), lease, "another-instance") == "claimed"
        return Sleeps(env, meanwhile)

    env, _ = burst_env(stolen_of, lease=lease)

    with pytest.raises(TransientError, match="taken over"):
        env.deliver(RAW)

    assert env.store.list_audit() == []
    assert INTRUDER in principals(env.current())
    assert env.store.renew("evt-waits", "another-instance", env.world.clock.now(), lease)  # still the other's
    assert env.store.release(LOCK, HOLDER)  # and the vault still its holder's


def test_the_wait_is_a_setting_of_the_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`KVGUARD_VAULT_WAIT_SECONDS`: 20 by default (under Event Grid's 30 s wait for an answer), 0 to
    send a waiting event back at once, at most 120 (far under the 5 min lease and function timeout)."""
    monkeypatch.delenv("KVGUARD_VAULT_WAIT_SECONDS", raising=False)
    assert Settings().vault_wait_seconds == 20
    monkeypatch.setenv("KVGUARD_VAULT_WAIT_SECONDS", "2.5")
    built = runtime.build(Settings(state_backend="sqlite", sqlite_path=str(tmp_path / "state.db")),
                          credential=FakeCredential())
    built.store.close()
    assert built.vault_wait == timedelta(seconds=2.5)
    for refused in ("-1", "121"):
        monkeypatch.setenv("KVGUARD_VAULT_WAIT_SECONDS", refused)
        with pytest.raises(SettingsError, match="KVGUARD_VAULT_WAIT_SECONDS"):
            load_settings()
