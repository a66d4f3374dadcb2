"""Rule kinds and their closing rules: each kind closes its findings by one stated rule, and a
cover-up (KV-AP-05, diff + history) stays open once the vault is back."""

from __future__ import annotations

from detectors.cases import INTRUDER, NOW, grant, vault, with_grants
from kvguard.catalog import RULES
from kvguard.detection import KINDS, Basis, Closing
from kvguard.policy import Policy
from kvguard.vault import VaultConfig
from tests.cases import make_event
from tests.unit.test_pipeline import VAULT_ID, VAULT_WRITE, Env

CLOSING_BY_LABEL = {
    "diff": Closing.BACK_TO_BASELINE,
    "posture": Closing.CONDITION_GONE,
    "diff/posture": Closing.CONDITION_GONE,
    "event": Closing.LATEST_CHANGE,
    "event/diff": Closing.LATEST_CHANGE,
    "event + history": Closing.LATEST_CHANGE,
    "diff + history": Closing.STAYS_OPEN,
    "sweep": Closing.CONDITION_GONE,
}


def test_every_kind_has_one_closing_rule() -> None:
    assert {label: kind.closing for label, kind in KINDS.items()} == CLOSING_BY_LABEL
    assert {label for label, kind in KINDS.items() if kind.history} == {"event + history", "diff + history"}
    assert {kind.basis for kind in KINDS.values()} == set(Basis)


def test_every_rule_has_a_known_kind() -> None:
    assert [r.id for r in RULES.values() if KINDS.get(r.kind.label) is not r.kind] == []


def test_a_cover_up_never_closes_by_itself() -> None:
    cover_up = RULES["KV-AP-05"]
    back = VaultConfig.from_arm(vault())
    assert cover_up.kind.closing is Closing.STAYS_OPEN
    assert not cover_up.closes(event=make_event({}), final=back, found_against=back, policy=Policy(), now=NOW)
    # the diff rule it pairs with closes on the same state
    assert RULES["KV-AP-01"].closes(event=make_event({}), final=back, found_against=back, policy=Policy(), now=NOW)


def test_a_cover_up_finding_stays_open_after_the_vault_is_back_and_changes_again() -> None:
    env = Env(mode="alert")
    added = env.change(with_grants(grant(INTRUDER, secrets=["get"])))
    assert "KV-AP-01" in {f.rule for f in added.findings}
    removed = env.change(vault())
    assert "KV-AP-05" in {f.rule for f in removed.findings}
    env.change(vault(tags={"team": "payments"}), operation=VAULT_WRITE, suffix="")
    open_rules = {f.rule for f in env.store.open_findings(VAULT_ID)}
    assert "KV-AP-05" in open_rules  # an act that is over: only a person closes it
    assert "KV-AP-01" not in open_rules  # the grant itself is gone: that finding closed
    assert env.assessment("KV-AP-05") == "Unhealthy"
    assert env.assessment("KV-AP-01") == "Healthy"
