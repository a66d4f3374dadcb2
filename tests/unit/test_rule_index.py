"""The rule index of `detect_all`: a rule that declares the VaultDiff fields it fires through is
passed over when none of them holds a change. Each declaration is held to what its rule really
reads, over every one of its cases, so that passing a rule over can never hide a finding."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import fields, replace
from typing import Any

import pytest

from detectors.cases import INTRUDER, OPERATOR, grant, vault, with_grants
from kvguard.catalog import RULES
from kvguard.detection import Case, Context, Hit, Rule, detect_all, rule
from kvguard.vault import DIFF_FIELDS, VaultConfig, VaultDiff, diff
from tests.cases import make_context
from tests.unit.test_pipeline import VAULT_ID, VAULT_WRITE, Env

DECLARING = [r for r in RULES.values() if r.diff_fields is not None]
DECLARED_CASES = [(r, c) for r in DECLARING for c in r.cases]
CASE_IDS = [f"{r.id}: {c.name}" for r, c in DECLARED_CASES]


def _watched(change: VaultDiff, seen: set[str]) -> VaultDiff:
    """The same diff, noting in `seen` every field a rule reads of it (properties and methods
    such as `widened` and `changed` read the fields too, and are noted through them)."""

    class Watched(VaultDiff):
        def __getattribute__(self, name: str) -> Any:
            if name in DIFF_FIELDS:
                seen.add(name)
            return super().__getattribute__(name)

    return Watched(**{f.name: getattr(change, f.name) for f in fields(change)})


def _evidence(hits: Iterable[Hit]) -> list[Any]:
    return [(dict(h.evidence), h.severity, h.detail) for h in hits]


def test_some_rules_declare_their_diff_fields() -> None:
    assert {"KV-AP-01", "KV-NET-03", "KV-PROT-03"} <= {r.id for r in DECLARING}


@pytest.mark.parametrize(("declaring", "case"), DECLARED_CASES, ids=CASE_IDS)
def test_a_rule_reads_of_the_diff_only_the_fields_it_declares(declaring: Rule, case: Case) -> None:
    ctx = make_context(case)
    if ctx.diff is None:
        assert not list(declaring.detect(ctx)), f"{declaring.id} fired without a diff on {case.name!r}"
        return
    seen: set[str] = set()
    watched = replace(ctx, diff=_watched(ctx.diff, seen))
    assert _evidence(declaring.detect(watched)) == _evidence(declaring.detect(ctx))
    assert declaring.diff_fields is not None
    assert seen <= declaring.diff_fields, f"{declaring.id} read {sorted(seen - declaring.diff_fields)} undeclared"


@pytest.mark.parametrize(("declaring", "case"), DECLARED_CASES, ids=CASE_IDS)
def test_a_rule_is_silent_when_its_declared_fields_hold_no_change(declaring: Rule, case: Case) -> None:
    ctx = make_context(case)
    if ctx.diff is None:
        return
    assert declaring.diff_fields is not None
    emptied = replace(ctx.diff, **{name: type(getattr(ctx.diff, name))() for name in declaring.diff_fields})
    assert not list(declaring.detect(replace(ctx, diff=emptied)))


VAULT_CASES = [(r, c) for r in RULES.values() for c in r.cases if c.resource is None and c.sweep is None]


@pytest.mark.parametrize(("owner", "case"), VAULT_CASES, ids=[f"{r.id}: {c.name}" for r, c in VAULT_CASES])
def test_detect_all_finds_what_every_rule_run_alone_finds(owner: Rule, case: Case) -> None:
    ctx = make_context(case)
    alone = [(r.id, *e) for r in RULES.values() if ctx.policy.rule(r.id).enabled
             for e in _evidence(r.detect(ctx))]
    indexed = [(f.rule, dict(f.evidence)) for f in detect_all(ctx, RULES)]
    assert indexed == [(rule_id, evidence) for rule_id, evidence, _severity, _detail in alone]


def _probe(calls: list[str], fields_read: tuple[str, ...]) -> Rule:
    def judge(ctx: Context) -> Iterator[Hit]:
        calls.append("judged")
        yield Hit(evidence={"probe": True})

    return rule("KV-TEST-01", title="probe", severity="low", mitre=(), kind="diff", diff_fields=fields_read)(judge)


def test_a_declaring_rule_runs_only_when_one_of_its_fields_changed() -> None:
    calls: list[str] = []
    probe = _probe(calls, ("ip_rules_added",))
    base = make_context(Case("tags only", fires=False, before=vault(), after=vault(tags={"touched": "1"})))
    assert base.diff is not None and base.diff.empty
    assert detect_all(base, {probe.id: probe}) == [] and calls == []

    granted = make_context(Case("grant", fires=True, before=vault(),
                                after=with_grants(grant(OPERATOR, secrets=["get"]))))
    assert detect_all(granted, {probe.id: probe}) == [] and calls == []

    first_sight = replace(base, before=None, diff=None)
    assert detect_all(first_sight, {probe.id: probe}) == [] and calls == []

    opened = make_context(Case("ip rule", fires=True, before=vault(),
                               after=vault(networkAcls={"defaultAction": "Deny", "bypass": "None",
                                                        "ipRules": [{"value": "203.0.113.7"}]})))
    assert [f.rule for f in detect_all(opened, {probe.id: probe})] == ["KV-TEST-01"] and calls == ["judged"]


def test_a_rule_without_a_declaration_runs_on_every_event() -> None:
    calls: list[str] = []

    def judge(ctx: Context) -> Iterator[Hit]:
        calls.append("judged")
        return iter(())

    probe = rule("KV-TEST-02", title="probe", severity="low", mitre=(), kind="diff")(judge)
    unchanged = make_context(Case("nothing", fires=False, before=vault(), after=vault()))
    detect_all(unchanged, {probe.id: probe})
    assert calls == ["judged"]


def test_an_unknown_diff_field_is_refused_where_the_rule_is_declared() -> None:
    with pytest.raises(ValueError, match="unknown diff field"):
        rule("KV-TEST-03", title="probe", severity="low", mitre=(), kind="diff", diff_fields=("ip_rules",))


def test_changed_fields_name_exactly_the_fields_that_hold_a_change() -> None:
    before = VaultConfig.from_arm(vault())
    after = VaultConfig.from_arm(with_grants(grant(OPERATOR, secrets=["get"]), enabledForDeployment=True))
    assert diff(before, after).changed_fields() == {"added_policies", "settings"}
    assert diff(before, before).changed_fields() == frozenset()
    assert set(DIFF_FIELDS) == {f.name for f in fields(VaultDiff)}


def test_findings_stay_open_unreported_through_changes_the_diff_rules_are_passed_over_for_and_then_close() -> None:
    # The pipeline passes the declaring diff rules over on a tag-only change and on an unchanged
    # document: the open diff finding (KV-AP-01) and posture finding (KV-AP-03) are neither
    # reported again nor closed by them, and close when the grant goes.
    env = Env(mode="alert")
    granted = with_grants(grant(INTRUDER, secrets=["get", "list"]))
    assert {"KV-AP-01", "KV-AP-03"} <= {f.rule for f in env.change(granted).findings}
    tagged = with_grants(grant(INTRUDER, secrets=["get", "list"]), tags={"team": "payments"})
    for doc in (tagged, tagged):  # a tag-only change, then the same document again
        outcome = env.change(doc, operation=VAULT_WRITE, suffix="")
        assert outcome.outcome == "processed" and outcome.findings == []
        assert {"KV-AP-01", "KV-AP-03"} <= {f.rule for f in env.store.open_findings(VAULT_ID)}
        assert env.assessment("KV-AP-01") == env.assessment("KV-AP-03") == "Unhealthy"
    env.change(vault(tags={"team": "payments"}), operation=VAULT_WRITE, suffix="")
    assert not {"KV-AP-01", "KV-AP-03"} & {f.rule for f in env.store.open_findings(VAULT_ID)}
    assert env.assessment("KV-AP-01") == env.assessment("KV-AP-03") == "Healthy"
