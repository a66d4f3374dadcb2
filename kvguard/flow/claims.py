"""The leases that fence one attempt at an event: the event's claim and its vault's, renewed
before anything is written, so an attempt another instance took over stops instead of acting."""

from __future__ import annotations

from collections.abc import Iterator
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
    event (same store, same fence) and let go at the end whatever happened."""
    lock = vault_lock(event)
    if services.store.claim(lock, now, services.lease, owner) != "claimed":
        raise TransientError(f"vault of event {event.id} is being processed by another instance")
    try:
        yield
    finally:
        services.store.release(lock, owner)


def hold(services: Services, event: VaultEvent, owner: str) -> None:
    """Renew this attempt's claim, or stop: an attempt whose lease another instance took over
    must not act or record (that instance does, and a raise makes Event Grid check again)."""
    now = services.clock.now()
    if not (services.store.renew(event.id, owner, now, services.lease)
            and services.store.renew(vault_lock(event), owner, now, services.lease)):
        raise TransientError(f"event {event.id}: the claim was taken over by another instance")


def complete(services: Services, event: VaultEvent, owner: str) -> None:
    """Mark the event done, or stop when its claim was taken over meanwhile."""
    if not services.store.complete(event.id, services.clock.now(), owner):
        raise TransientError(f"event {event.id}: the claim was taken over by another instance")
