"""How a caller's marks name the vaults it changed: a short digest of the vault's key, the same
vault once whether a mark was written before (naming the key itself) or after."""

from __future__ import annotations

from datetime import timedelta

from detectors.cases import INTRUDER, VAULT_ID, vault
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.events import VaultEvent, parse
from kvguard.flow.memory import MEMBER_DIGITS, recalled, vault_member
from kvguard.ids import vault_key
from kvguard.pipeline import Pipeline
from kvguard.policy import Policy
from kvguard.sim import SIM_IDENTITY, SimClock, SimVaultGateway, World
from tests.unit.test_pipeline import START, VAULT_WRITE, event


def test_a_vault_in_a_callers_marks_is_a_short_digest_of_its_key() -> None:
    world = World(clock=SimClock(START))
    store = SQLiteStateStore(":memory:")
    pipeline = Pipeline(gateway=SimVaultGateway(world), store=store,
                        policy=Policy(mode="alert", own_principal_ids=[SIM_IDENTITY]), clock=world.clock)
    world.put(vault())
    store.put_baseline(VAULT_ID, vault(), None, now=START)
    pipeline.handle(event(INTRUDER, VAULT_WRITE, event_id="evt-1"))
    [(member, _)] = store.marks_since("caller_vaults", INTRUDER, START - timedelta(days=1))
    assert member == vault_member(vault_key(VAULT_ID))
    assert len(member) == MEMBER_DIGITS and member != vault_key(VAULT_ID)


def test_a_mark_naming_the_key_itself_and_one_naming_its_digest_are_one_vault() -> None:
    key = vault_key(VAULT_ID)
    other = vault_key(VAULT_ID.replace("kv-", "kv-other-"))
    answers = [[], [(key, START), (vault_member(key), START), (vault_member(other), START)], [], [("evt-0", START)]]
    recall = recalled(event_of(INTRUDER), key, answers)
    assert recall.vault_marked is True
    assert recall.history.caller_vaults == 2


def event_of(caller: str) -> VaultEvent:
    [parsed] = parse(event(caller, VAULT_WRITE))
    assert isinstance(parsed, VaultEvent)
    return parsed
