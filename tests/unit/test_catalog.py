"""Invariants over the whole catalog at once. Each test lists every offender in one failure.

What the catalog promises to the outside (ids, default severity, kind, MITRE, handler) is checked
against `tests/contract/catalog.py`, the one copy of that contract; everything else here holds for
every rule, however many there are.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from kvguard.catalog import HANDLERS, RULES, alert_handlers
from kvguard.detection import SEVERITY_SCORE, assessment_name, severity_for_risk
from kvguard.intents import INTENT_TYPES
from kvguard.sinks import SINKS
from tests.contract import catalog as contract

RULE_ID = re.compile(r"^KV-[A-Z]+-\d{2}$")
# An Azure action, also one of a resource type nested under another provider's resource
# (`Microsoft.KeyVault/vaults/providers/Microsoft.Insights/diagnosticSettings/write`).
AZURE_ACTION = re.compile(r"^Microsoft\.[A-Za-z]+(/[A-Za-z]+)*?(/providers/Microsoft\.[A-Za-z]+)?(/[A-Za-z]+)+$")
# ATT&CK Enterprise 18.1, pinned: see "source" in the file for where it came from.
ATTACK = json.loads((Path(__file__).parents[1] / "data" / "attack-enterprise-18.1-techniques.json").read_text())


def test_rule_ids_are_well_formed_and_unique() -> None:
    assert [rule_id for rule_id in RULES if not RULE_ID.match(rule_id)] == []
    assert [rule_id for rule_id, rule in RULES.items() if rule.id != rule_id] == []
    assert len(set(RULES)) == len(list(RULES))


def test_the_catalog_keeps_its_contract() -> None:
    actual = {rule.id: contract.Promised(rule.severity, rule.kind.label, rule.mitre, rule.remediation)
              for rule in RULES.values()}
    assert {"missing": sorted(contract.RULES.keys() - actual.keys()),
            "not in the contract": sorted(actual.keys() - contract.RULES.keys())} == \
        {"missing": [], "not in the contract": []}
    changed = {rule_id: {"actual": actual[rule_id], "promised": promised}
               for rule_id, promised in contract.RULES.items() if actual.get(rule_id, promised) != promised}
    assert changed == {}


def test_the_catalog_is_in_family_order() -> None:
    def position(rule_id: str) -> tuple[int, str]:
        family = rule_id.rsplit("-", 1)[0]
        return (contract.FAMILY_ORDER.index(family) if family in contract.FAMILY_ORDER else 99, rule_id)

    assert list(RULES) == sorted(RULES, key=position)


def test_mitre_ids_are_live_attack_techniques() -> None:
    techniques = ATTACK["techniques"]
    offenders = {r.id: [m for m in r.mitre if m not in techniques] for r in RULES.values()}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert [r.id for r in RULES.values() if not r.mitre] == []
    # a sub-technique never stands without its technique being live too
    assert [m for m in techniques if "." in m and m.split(".")[0] not in techniques] == []


def test_the_pinned_attack_list_is_the_whole_enterprise_matrix() -> None:
    assert ATTACK["attack_version"] == "18.1" and ATTACK["domain"] == "enterprise-attack"
    assert len(ATTACK["techniques"]) > 600  # the whole matrix, not a list restating the catalog's ids
    assert ATTACK["techniques"]["T1555.006"] == "Cloud Secrets Management Stores"


def test_scores_sit_in_their_severitys_risk_band() -> None:
    assert {s: severity_for_risk(score) for s, score in SEVERITY_SCORE.items()} == \
        {s: s for s in ("low", "medium", "high", "critical")}
    scores = [SEVERITY_SCORE[s] for s in ("low", "medium", "high", "critical")]
    assert scores == sorted(scores)
    offenders = {r.id: r.catalog_entry()["score"] for r in RULES.values()
                 if severity_for_risk(r.catalog_entry()["score"]) != r.severity}
    assert offenders == {}


def test_escalated_severities_of_the_cases_are_valid() -> None:
    from tests.cases import make_context

    offenders = []
    for rule in RULES.values():
        for case in rule.cases:
            if not case.fires:
                continue
            for hit in rule.detect(make_context(case)):
                if hit.severity is not None and hit.severity not in SEVERITY_SCORE:
                    offenders.append((rule.id, case.name, hit.severity))
    assert offenders == []


def test_every_rule_has_a_firing_and_a_near_miss_case() -> None:
    offenders = {
        r.id: {"firing": sum(c.fires for c in r.cases), "near-miss": sum(not c.fires for c in r.cases)}
        for r in RULES.values()
        if not any(c.fires for c in r.cases) or all(c.fires for c in r.cases)
    }
    assert offenders == {}


def test_case_names_are_unique_per_rule() -> None:
    offenders = {r.id: sorted({c.name for c in r.cases if [x.name for x in r.cases].count(c.name) > 1})
                 for r in RULES.values()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_remediation_names_a_registered_remediation_handler() -> None:
    offenders = {
        r.id: r.remediation for r in RULES.values()
        if r.remediation is not None
        and (r.remediation not in HANDLERS or HANDLERS[r.remediation].kind != "remediation")
    }
    assert offenders == {}


def test_every_handler_declares_the_restore_intents_it_accepts() -> None:
    offenders = {h.id: [t.__name__ for t in h.accepts] for h in HANDLERS.values()
                 if (h.kind == "remediation") != bool(h.accepts) or not set(h.accepts) <= set(INTENT_TYPES)}
    assert offenders == {}


def test_every_remediated_rule_builds_intents_its_handler_accepts() -> None:
    """On each firing case every hit carries restore intents of types its rule's handler accepts;
    only a hit on first sight of a vault (no baseline to go back to) may carry none. A rule with
    no handler builds none (nobody would act on them), and every type a handler accepts is built
    by some rule routed to it."""
    from tests.cases import make_context

    offenders = []
    built: dict[str, set[type]] = {h.id: set() for h in HANDLERS.values()}
    for rule in RULES.values():
        accepts = HANDLERS[rule.remediation].accepts if rule.remediation is not None else ()
        for case in (c for c in rule.cases if c.fires):
            context = make_context(case)
            first_sight = context.before is None and context.resource is None
            for hit in rule.detect(context):
                foreign = [type(i).__name__ for i in hit.restore if not isinstance(i, accepts)]
                if foreign or (rule.remediation is not None and not hit.restore and not first_sight):
                    offenders.append((rule.id, case.name, foreign or "no restore intent"))
                if rule.remediation is not None:
                    built[rule.remediation].update(type(i) for i in hit.restore)
    assert offenders == []
    unused = {h.id: [t.__name__ for t in h.accepts if t not in built[h.id]] for h in HANDLERS.values()}
    assert {k: v for k, v in unused.items() if v} == {}


def test_irreversible_handlers_are_opt_in_only() -> None:
    offenders = [r.id for r in RULES.values()
                 if r.remediation in HANDLERS and HANDLERS[r.remediation].irreversible and r.remediate_by_default]
    assert offenders == []
    assert [h.id for h in HANDLERS.values() if h.irreversible] == ["enable_purge_protection"]


def test_the_handlers_keep_their_contract() -> None:
    assert {h.id: h.kind for h in HANDLERS.values()} == contract.HANDLERS
    assert all(handler_id == h.id for handler_id, h in HANDLERS.items())


def test_every_alert_handler_has_exactly_one_sink_in_the_table() -> None:
    assert list(SINKS) == list(alert_handlers())
    assert [entry.handler for entry in SINKS.values() if not entry.setting.strip()] == []


def test_every_handler_declares_the_permission_it_needs() -> None:
    offenders = {
        h.id: h.permission for h in HANDLERS.values()
        if not (AZURE_ACTION.match(h.permission) or (h.kind == "alert" and re.match(r"^none \(.+\)$", h.permission)))
    }
    assert offenders == {}
    remediation_permissions = {h.id: h.permission for h in HANDLERS.values() if h.kind == "remediation"}
    # a remediation writes the vault or a resource beside it, deletes an added role assignment or
    # policy exemption, or enforces a policy assignment again
    beside = ("Microsoft.KeyVault/", "Microsoft.Insights/diagnosticSettings/", "Microsoft.Authorization/locks/",
              "Microsoft.Security/pricings/", "Microsoft.Authorization/roleAssignments/delete",
              "Microsoft.Authorization/policyExemptions/delete", "Microsoft.Authorization/policyAssignments/write",
              # a perimeter access rule's added sources taken out, an added event subscription deleted
              "Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/write",
              "Microsoft.EventGrid/eventSubscriptions/delete")
    assert all(p.startswith(beside) for p in remediation_permissions.values()), remediation_permissions


def test_handlers_and_rules_are_described() -> None:
    offenders = [h.id for h in HANDLERS.values() if not h.description.strip()]
    offenders += [r.id for r in RULES.values() if not r.title.strip() or not r.rationale.strip()]
    offenders += [r.id for r in RULES.values() if r.rationale and len(r.rationale.split()) < 8]
    assert offenders == []


def test_titles_are_unique() -> None:
    titles = [r.title for r in RULES.values()]
    assert sorted({t for t in titles if titles.count(t) > 1}) == []


def test_assessment_names_are_unique_guids_stable_per_rule() -> None:
    names = {r.id: assessment_name(r.id) for r in RULES.values()}
    not_guids = {}
    for rule_id, name in names.items():
        try:
            if str(uuid.UUID(name)) != name:
                not_guids[rule_id] = name
        except ValueError:
            not_guids[rule_id] = name
    assert not_guids == {}
    assert len(set(names.values())) == len(names)
    assert all(r.catalog_entry()["assessment"] == names[r.id] for r in RULES.values())
    # The names the infra's assessment metadata is created under: they must never move.
    assert (names["KV-AP-01"], names["KV-LIFE-02"]) == ("9a66aa77-9d1d-5b56-b6e1-4b21a472b39c",
                                                        "807cc78a-c549-54df-a811-05e330e822ad")


def test_every_declared_rule_and_handler_is_in_the_catalog() -> None:
    """A family module the catalog does not load would declare rules that never run."""
    import importlib
    import pkgutil

    import detectors
    import remediation
    from kvguard.detection import Rule
    from kvguard.registry import declared
    from remediation.base import Handler

    def everything(package: object, kind: type) -> list[str]:
        modules = [importlib.import_module(f"{package.__name__}.{m.name}")  # type: ignore[attr-defined]
                   for m in pkgutil.iter_modules(package.__path__)]  # type: ignore[attr-defined]
        return sorted(item.id for module in modules for item in declared(module, kind))

    assert everything(detectors, Rule) == sorted(RULES)
    assert everything(remediation, Handler) == sorted(HANDLERS)


def test_a_registry_refuses_a_name_twice_and_loads_once() -> None:
    import pytest

    from kvguard.registry import Registry

    loads: list[int] = []

    def load(registry: Registry[int]) -> None:
        loads.append(1)
        registry.add("one", 1)

    numbers: Registry[int] = Registry("number", load=load)
    assert list(numbers) == ["one"] and numbers["one"] == 1 and len(numbers) == 1
    assert loads == [1]
    with pytest.raises(ValueError, match="number one registered twice"):
        numbers.add("one", 2)

    def broken(registry: Registry[int]) -> None:
        registry.add("two", 2)
        registry.add("two", 2)

    twice: Registry[int] = Registry("number", load=broken)
    for _ in range(2):  # a failed load leaves nothing half-registered and is tried again
        with pytest.raises(ValueError, match="number two registered twice"):
            len(twice)
