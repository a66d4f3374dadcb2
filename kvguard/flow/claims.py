"""The leases that fence one attempt at an event: the event's claim and its vault's, renewed
before anything is written, so an attempt another instance took over stops instead of acting."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from kvguard.events import VaultEvent
from kvguard.flow.services import Services
from kvguard.ports import TransientError, vault_lease


def vault_lock(event: VaultEvent) -> str:
    return vault_lease(scope(event))


def scope(event: VaultEvent) -> str:
    """Where the event's remediations write: its vault. Intents are kept per vault, so whichever
    attempt next holds the vault's lease, of this event or another, accounts for them."""
    assert event.vault is not None
    return event.vault.key


# Polling a held vault's lease: the first look again soon (most events of a vault take well under
# a second), then less often, so that many waiters do not crowd one lease's row in the store.
FIRST_POLL_SECONDS = 0.02
LAST_POLL_SECONDS = 0.25


@contextmanager
def vault_held(
    services: Services, event: VaultEvent, now: datetime, owner: str, *, taken_with_claim: bool = False
) -> Iterator[datetime]:
    """One event per vault at a time across every instance: two events of one vault processed
    side by side would both read the change and both revert it. The vault is leased like an
    event (same store, same fence) and let go of with the event's completion (every way out of
    the vault's flow that returns completes the event `releasing` its lease), or at once when the
    attempt fails. Yields the time the vault was taken: `now`, or later when it had to wait
    (`wait_for_vault`); `taken_with_claim`: the event's claim took the vault with it
    (`StateStore.claim_beside`)."""
    lock = vault_lock(event)
    taken = now if taken_with_claim else wait_for_vault(services, event, now, owner)
    try:
        yield taken
    except BaseException:
        services.store.release(lock, owner)
        raise


def wait_for_vault(services: Services, event: VaultEvent, now: datetime, owner: str) -> datetime:
    """Take the event's vault, waiting up to `services.vault_wait` while another attempt holds it;
    the time it was taken, or TransientError (Event Grid redelivers) once the wait is over.

    Why wait rather than raise at once: a burst of events on one vault (a deployment, an attacker's
    script) arrives side by side, and a raise sends each one to Event Grid's retry schedule (10 s,
    30 s, 1 min, …) although the vault is free again within a second or two. Why not let the holder
    judge the waiting events instead: the current state would be judged rightly, but each event is
    also judged on its own envelope (its caller, its address, its time, the caller's history), and
    each has its own audit record; waiting keeps every event's own flow, one after another.

    Fencing is unchanged: the vault is taken with the store's fenced `claim` only, never assumed.
    While it waits the attempt holds its event's claim: it renews that claim once half a lease has
    passed since it was stamped, and stops (TransientError) if another instance took it over
    meanwhile. Lease stamps come from the pipeline's clock; the pauses pass through
    `services.sleep`, growing from FIRST_POLL_SECONDS to LAST_POLL_SECONDS, each drawn at random
    from its upper half so that waiters do not poll in step, and never past the wait's end."""
    lock = vault_lock(event)
    started = stamped = now
    deadline = now + services.vault_wait
    pause = FIRST_POLL_SECONDS
    while services.store.claim(lock, now, services.lease, owner) != "claimed":
        if now >= deadline:
            waited = f" (waited {(now - started).total_seconds():g} s)" if now > started else ""
            raise TransientError(f"vault of event {event.id} is being processed by another instance{waited}")
        if now - stamped >= services.lease / 2:
            if not services.store.renew(event.id, owner, now, services.lease):
                raise TransientError(f"event {event.id}: the claim was taken over by another instance")
            stamped = now
        services.sleep(min(random.uniform(pause / 2, pause), (deadline - now).total_seconds()))
        pause = min(pause * 2, LAST_POLL_SECONDS)
        now = services.clock.now()
    return now


def hold(services: Services, event: VaultEvent, owner: str) -> None:
    """Renew this attempt's claim, or stop: an attempt whose lease another instance took over
    must not act or record (that instance does, and a raise makes Event Grid check again). In a
    batch the stop may come when the batch is written, with nothing of it written
    (`StateStore.renew_each`): every batch that holds a renewal ends before the attempt acts."""
    if not services.store.renew_each((event.id, vault_lock(event)), owner, services.clock.now(), services.lease):
        raise TransientError(f"event {event.id}: the claim was taken over by another instance")


def complete(services: Services, event: VaultEvent, owner: str, *, releasing: Sequence[str] = ()) -> None:
    """Mark the event done, letting go of the leases `releasing` names with it, or stop when its
    claim was taken over meanwhile."""
    if not services.store.complete(event.id, services.clock.now(), owner, releasing=releasing):
        raise TransientError(f"event {event.id}: the claim was taken over by another instance")


def complete_vault_event(services: Services, event: VaultEvent, owner: str) -> None:
    """`complete` of a vault's event, its vault's lease let go of with it."""
    complete(services, event, owner, releasing=(vault_lock(event),))
