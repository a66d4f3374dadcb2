"""What the state store remembers between events: the accepted baselines and the history marks
the history rules read (first-time caller, burst counts, recent grants, the circuit breaker's
count of remediations)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from kvguard.decision import STEERING_TAGS, effective_mode, is_approved, may_retag, unattributed, wrote
from kvguard.detection import History
from kvguard.events import VaultEvent
from kvguard.flow.claims import scope
from kvguard.flow.context import EventContext, FlowContext, Recall
from kvguard.flow.pools import LazyPool
from kvguard.flow.services import Services
from kvguard.ids import parse_vault_ref, vault_key
from kvguard.ports import Baseline, ConcurrencyError, MarkQuery, TransientError, VaultState, answers_in_process
from kvguard.resources import is_vault_id
from kvguard.vault import VaultConfig

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MEMBER_DIGITS = 16  # a vault named in a caller's marks: 64 bits of its key's SHA-256 (`vault_member`)
# ARM reads of vaults beside the state store's reads: one per event a worker handles at once.
READ_THREADS = 8
_readers = LazyPool(READ_THREADS, "kvguard-read")


def baseline_config(services: Services, baseline: Baseline) -> VaultConfig:
    """The parsed baseline; an ETag names one content, so a parse is reused while it matches."""
    return services.parsed.config_of(baseline)


def known_vaults(services: Services) -> list[Baseline]:
    """The baselines of the vaults kvguard knows (not deleted) and protects, in the store's order."""
    return [b for b in services.store.list_baselines()
            if not b.deleted and is_vault_id(b.vault_id) and services.policy.protects(b.vault_id)]


def known_id(services: Services, event: VaultEvent) -> str:
    """The vault id to report, spelled as ARM spells it when kvguard has seen the vault (events
    write `resourcegroups`, GET returns `resourceGroups`). A purge names
    `…/locations/{l}/deletedVaults/{name}`, which has no resource group: the deleted vault's
    baseline, found by subscription and name, gives the id."""
    assert event.vault is not None
    if event.kind == "purge":
        for baseline in services.store.list_baselines():
            ref = parse_vault_ref(baseline.vault_id)
            if (baseline.deleted and ref is not None and ref.name.lower() == event.vault.name.lower()
                    and ref.kind == event.vault.kind
                    and ref.subscription_id.lower() == event.vault.subscription_id.lower()):
                return baseline.vault_id
        return event.vault.id
    spelled = services.known_ids.get(event.vault.key)
    if spelled is not None:
        return spelled
    known = services.store.get_baseline(event.vault.id)
    if known is None:
        return event.vault.id
    services.known_ids.learn(known.vault_id)
    return known.vault_id


def history_key(services: Services, event: VaultEvent) -> str:
    """The vault that history marks are kept under. A purge names the deleted vault's
    `locations/…/deletedVaults/{name}` id: its marks belong to the vault it was, so that the
    caller who deleted it is no first-time caller when they purge it."""
    assert event.vault is not None
    return vault_key(known_id(services, event)) if event.kind == "purge" else event.vault.key


def recall(services: Services, event: VaultEvent, now: datetime, key: str | None = None) -> Recall:
    """`key` names what the change is counted under when it is not the event's vault."""
    vault = key or history_key(services, event)
    queries = recall_queries(services, event, now, vault)
    return recalled(event, vault, services.store.marks_since_each(queries))


def recall_queries(services: Services, event: VaultEvent, now: datetime, vault: str) -> list[MarkQuery]:
    """The marks the history rules look at for `event`, counted under `vault` (`recalled` reads
    the answers)."""
    window = services.policy.history
    caller = event.caller.id
    queries = [MarkQuery("grants", vault, now - window.grant_window)]
    if caller is not None:
        queries += [MarkQuery("caller_vaults", caller, now - window.burst_window),
                    MarkQuery("caller_failures", caller, now - window.burst_window),
                    MarkQuery("caller_writes", f"{vault}|{caller}", EPOCH)]
    return queries


def recalled(event: VaultEvent, vault: str, answers: list[list[tuple[str, datetime]]]) -> Recall:
    """The rules' History from the answers to `recall_queries`, in its order."""
    caller = event.caller.id
    grants, *by_caller = answers
    if caller is None:
        return Recall(History(recent_grants=dict(grants)), vault_marked=False)
    caller_vaults, caller_failures, caller_writes = by_caller
    vaults = {vault_member(m) for m, _ in caller_vaults}
    marked = vault_member(vault) in vaults
    failures = len(caller_failures)
    if event.succeeded:
        vaults.add(vault_member(vault))
    else:
        failures += 1
    history = History(
        caller_seen_before=bool(caller_writes),
        caller_vaults=len(vaults),
        caller_failures=failures,
        recent_grants=dict(grants),
    )
    return Recall(history, marked)


def vault_member(key: str) -> str:
    """How a caller's mark names a vault (or resource) it changed: a digest of its key, as the
    burst rule only counts them and tells them apart, and the mark is kept for every change (a
    key is a whole resource id; the digest is a seventh of it). A mark written before names the
    key itself, and is read as its digest."""
    if len(key) == MEMBER_DIGITS and all(c in "0123456789abcdef" for c in key):
        return key
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:MEMBER_DIGITS]


def recent_remediations(services: Services, context: FlowContext, vault_id: str, vault: VaultConfig | None) -> int:
    """The circuit breaker's count of remediations of `vault_id` (steered by `vault`'s tags); only
    a change that could be remediated needs it."""
    if not context.findings or effective_mode(services.policy, vault) != "remediate":
        return 0
    if context.remediation_marks is not None:
        return len(context.remediation_marks)
    return len(services.store.marks_since("remediations", vault_key(vault_id), breaker_since(services, context.now)))


def breaker_since(services: Services, now: datetime) -> datetime:
    """Where the circuit breaker starts counting a vault's remediations."""
    return now - services.policy.circuit_breaker.window


def read_vault(services: Services, event: VaultEvent, now: datetime) -> tuple[VaultConfig | None, VaultRead]:
    """The vault as ARM has it now, and what the state store holds of it, read side by side: the
    ARM GET on a thread of its own while the store's reads (`StateStore.load`) go out, so the
    event waits for the longer of the two, not for their sum. A gateway that answers in the process
    (the simulated world's, `answers_in_process`) is called on this thread: a handover would only
    cost. A purge reads no vault (it is gone)."""
    assert event.vault is not None
    key = history_key(services, event)
    marks = [*recall_queries(services, event, now, key),
             MarkQuery("remediations", event.vault.key, breaker_since(services, now))]
    if event.kind == "purge":
        return None, _vault_read(services, event, key, marks)
    if answers_in_process(services.gateway):  # nothing to wait for: no thread to hand over to
        after = services.gateway.get(event.vault.id)
        return after, _vault_read(services, event, key, marks)
    reading = _readers().submit(services.gateway.get, event.vault.id)
    read = _vault_read(services, event, key, marks)
    return reading.result(), read  # its error, if any, raised as it was


def _vault_read(services: Services, event: VaultEvent, key: str, marks: list[MarkQuery]) -> VaultRead:
    assert event.vault is not None
    state = services.store.load(event.vault.id, scope(event), marks)
    *recall_marks, remediations = state.marks
    return VaultRead(state, recalled(event, key, recall_marks), remediations)


class VaultRead(NamedTuple):
    """What `read_vault` found in the state store: the state, the history recalled from it, and
    the circuit breaker's marks of the vault."""

    state: VaultState
    recall: Recall
    remediations: list[tuple[str, datetime]]




def mark_caller(services: Services, context: FlowContext, key: str) -> None:
    """The caller's marks, kept under `key`: one per vault and caller is all "first write" needs,
    and one per caller and vault within the burst window all the count needs; a failure counts
    every time."""
    event, now, remembered = context.event, context.now, context.recall
    caller = event.caller.id
    if caller is None:
        return
    if not event.succeeded:
        services.store.add_mark("caller_failures", caller, event.id, now)
        return
    if not remembered.history.caller_seen_before:
        services.store.add_mark("caller_writes", f"{key}|{caller}", event.id, now)
    if not remembered.vault_marked:
        services.store.add_mark("caller_vaults", caller, vault_member(key), now)


def record(services: Services, context: EventContext) -> None:
    """Marks for history rules, and the new baseline: the state after acting, except that a
    failed remediation, a failed operation, a change nobody can be held to or one whose
    remediation the circuit breaker held back leaves the baseline as it was (the change is seen
    again, and reverted once the breaker's window has passed); an approved caller's change is
    accepted only in what its write can have changed (decision.wrote); and the steering tags move
    only with a change that may move them (decision.may_retag)."""
    event, now, vault_id, baseline, before, final, change = (
        context.event, context.now, context.vault_id, context.baseline, context.before, context.final, context.change)
    remediated = context.remediated
    vault = history_key(services, event)
    mark_caller(services, context, vault)
    if change is not None:
        for mark in change.grant_marks():
            services.store.add_mark("grants", vault, mark, now)
    if remediated:
        services.store.add_mark("remediations", vault_key(vault_id), event.id, now)
    held_back = context.decision is not None and context.decision.held_back
    if context.failed or held_back or unattributed(services.policy, event):
        return  # the change is seen again: by the next event, or by the one that names its caller
    if final is None:
        if event.kind == "delete" and before is not None and not (baseline and baseline.deleted):
            store_baseline(services, vault_id, dict(before.raw), baseline, now=now, deleted=True)
        return
    document = dict(final.raw)
    if before is not None and is_approved(services.policy, event):
        document = _only_written(document, before, event)
    if before is not None and not may_retag(services.policy, event):
        document["tags"] = _steering_tags_kept(final, before)
    if (not remediated and before is not None and change is not None and change.empty
            and _steering(document) == _steering(before.raw) and not (baseline and baseline.deleted)):
        return  # nothing the baseline is compared or steered by has changed
    accepted = final if document == final.raw else VaultConfig.from_arm(document)
    services.parsed.remember(store_baseline(services, vault_id, document, baseline, now=now), accepted)


def store_baseline(
    services: Services, resource_id: str, document: dict[str, Any], baseline: Baseline | None, *, now: datetime,
    deleted: bool = False,
) -> str:
    """The new baseline's ETag; a baseline another instance moved meanwhile is a retry."""
    try:
        etag = services.store.put_baseline(resource_id, document, baseline.etag if baseline else None,
                                           deleted=deleted, now=now)
    except ConcurrencyError as error:
        raise TransientError(f"baseline of {resource_id} changed concurrently; retry") from error
    if is_vault_id(resource_id):
        services.known_ids.learn(resource_id)
    return etag


def _only_written(document: dict[str, Any], before: VaultConfig, event: VaultEvent) -> dict[str, Any]:
    """The vault as read, with every part the approved event's write cannot have changed as the
    baseline had it: a change someone else made just before (or after) the approved write is
    not accepted in the approved caller's name, and is seen again by its own event."""
    kept, properties = dict(before.raw.get("properties") or {}), dict(document.get("properties") or {})
    for name in set(kept) | set(properties):
        if not wrote(event, name):
            if name in kept:
                properties[name] = kept[name]
            else:
                properties.pop(name, None)
    accepted = {**document, "properties": properties}
    if not wrote(event, "tags"):
        accepted.pop("tags", None)
        if "tags" in before.raw:
            accepted["tags"] = before.raw["tags"]
    return accepted


def _steering(document: Mapping[str, Any]) -> dict[str, Any]:
    return {k.lower(): v for k, v in (document.get("tags") or {}).items() if k.lower() in STEERING_TAGS}


def _steering_tags_kept(final: VaultConfig, before: VaultConfig) -> dict[str, Any]:
    """The vault's tags as they are now, but with the steering tags as the baseline had them."""
    tags = {k: v for k, v in (final.raw.get("tags") or {}).items() if k.lower() not in STEERING_TAGS}
    tags.update({k: v for k, v in (before.raw.get("tags") or {}).items() if k.lower() in STEERING_TAGS})
    return tags
