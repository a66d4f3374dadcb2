"""The leases that fence one attempt at an event: the event's claim and its vault's, renewed
before anything is written, so an attempt another instance took over stops instead of acting."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from kvguard.events import VaultEvent
from kvguard.flow.services import Services
from kvguard.ports import TransientError


def vault_lock(event: VaultEvent) -> str:
    return f"vault-lease:{scope(event)}"


def scope(event: VaultEvent) -> str:
    """Where the event's remediations write: its vault. Intents are kept per vault, so whichever
    attempt next holds the vault's lease, of this event or another, accounts for them."""
    assert event.vault is not None
    return event.vault.key


@contextmanager
def vault_held(services: Services, event: VaultEvent, now: datetime, owner: str) -> Iterator[None]:
    """One event per vault at a time across every instance: two events of one vault processed
    side by side would both read the change and both revert it. The vault is leased like an
    event (same store, same fence) and let go of with the event's completion (every way out of
    the vault's flow that returns completes the event `releasing` its lease), or at once when the
    attempt fails."""
    lock = vault_lock(event)
    if services.store.claim(lock, now, services.lease, owner) != "claimed":
        raise TransientError(f"vault of event {event.id} is being processed by another instance")
    try:
        yield
    except BaseException:
        services.store.release(lock, owner)
        raise


def hold(services: Services, event: VaultEvent, owner: str) -> None:
    """Renew this attempt's claim, or stop: an attempt whose lease another instance took over
    must not act or record (that instance does, and a raise makes Event Grid check again)."""
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
