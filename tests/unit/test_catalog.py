"""Invariants over the whole catalog at once. Each test lists every offender in one failure.

The expected table is DESIGN.md's contract (rule ids, default severity, kind, MITRE techniques),
written out here because docs, infra and dashboards refer to these ids and values.
"""

from __future__ import annotations

import re
import uuid

from detectors import RULES
from kvguard.detection import SEVERITY_SCORE, assessment_name, severity_for_risk
from remediation import HANDLERS

# rule id: (default severity, kind, MITRE technique ids)
CONTRACT: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "KV-AP-01": ("high", "diff", ("T1098", "T1555.006")),
    "KV-AP-02": ("high", "diff", ("T1098",)),
    "KV-AP-03": ("medium", "posture", ("T1555.006",)),
    "KV-AP-04": ("high", "posture", ("T1098.001",)),
    "KV-AP-05": ("high", "diff + history", ("T1098", "T1555")),
    "KV-NET-01": ("high", "diff/posture", ("T1562.007",)),
    "KV-NET-02": ("high", "diff/posture", ("T1562.007",)),
    "KV-NET-03": ("high", "diff", ("T1562.007",)),
    "KV-NET-04": ("medium", "diff", ("T1562.007",)),
    "KV-NET-05": ("medium", "diff", ("T1562.007",)),
    "KV-PROT-01": ("medium", "posture", ("T1490",)),
    "KV-PROT-02": ("medium", "diff/posture", ("T1490",)),
    "KV-PROT-03": ("critical", "diff", ("T1098", "T1548")),
    "KV-PROT-04": ("medium", "diff", ("T1555.006",)),
    "KV-PROT-05": ("high", "diff", ("T1537",)),
    "KV-ID-01": ("medium", "event", ("T1078.004",)),
    "KV-ID-02": ("high", "event", ("T1078.004",)),
    "KV-ID-03": ("medium", "event", ("T1078.004",)),
    "KV-ID-04": ("low", "event", ("T1078.004",)),
    "KV-ID-05": ("low", "event + history", ("T1078.004",)),
    "KV-ID-06": ("high", "event + history", ("T1098", "T1526")),
    "KV-LIFE-01": ("high", "event", ("T1485",)),
    "KV-LIFE-02": ("critical", "event", ("T1485", "T1490")),
    "KV-LIFE-03": ("medium", "event/diff", ("T1098",)),
    "KV-SELF-01": ("critical", "event", ("T1078.004",)),
    "KV-SELF-02": ("critical", "diff", ("T1562.001",)),
}

# DESIGN.md's remediation handlers, and which rules each one puts right.
HANDLER_IDS = {"revert_access_policy", "restore_network", "restore_settings", "enable_purge_protection",
               "raise_defender_alert", "publish_detection", "notify_webhook"}
REMEDIATED_BY = {
    "KV-AP-01": "revert_access_policy",
    "KV-AP-02": "revert_access_policy",
    "KV-NET-01": "restore_network",
    "KV-NET-02": "restore_network",
    "KV-NET-03": "restore_network",
    "KV-NET-04": "restore_network",
    "KV-NET-05": "restore_network",
    "KV-PROT-01": "enable_purge_protection",
    "KV-PROT-03": "restore_settings",
    "KV-PROT-04": "restore_settings",
}

MITRE = re.compile(r"^T\d{4}(\.\d{3})?$")
AZURE_ACTION = re.compile(r"^Microsoft\.[A-Za-z]+(/[A-Za-z]+)+$")


def test_the_rule_ids_are_exactly_design_mds() -> None:
    expected = {f"KV-AP-0{i}" for i in range(1, 6)} | {f"KV-NET-0{i}" for i in range(1, 6)} \
        | {f"KV-PROT-0{i}" for i in range(1, 6)} | {f"KV-ID-0{i}" for i in range(1, 7)} \
        | {f"KV-LIFE-0{i}" for i in range(1, 4)} | {"KV-SELF-01", "KV-SELF-02"}
    assert len(expected) == 26
    assert set(CONTRACT) == expected
    assert {"missing": sorted(expected - set(RULES)), "unexpected": sorted(set(RULES) - expected)} == \
        {"missing": [], "unexpected": []}
    assert all(rule_id == rule.id for rule_id, rule in RULES.items())


def test_mitre_ids_are_well_formed() -> None:
    offenders = {r.id: [m for m in r.mitre if not MITRE.match(m)] for r in RULES.values()}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert [r.id for r in RULES.values() if not r.mitre] == []


def test_mitre_ids_severities_and_kinds_match_the_contract() -> None:
    offenders = {
        rule.id: {"actual": (rule.severity, rule.kind, rule.mitre), "expected": CONTRACT[rule.id]}
        for rule in RULES.values()
        if rule.id in CONTRACT and (rule.severity, rule.kind, rule.mitre) != CONTRACT[rule.id]
    }
    assert offenders == {}


def test_scores_sit_in_their_severitys_risk_band() -> None:
    assert {s: severity_for_risk(score) for s, score in SEVERITY_SCORE.items()} == \
        {s: s for s in ("low", "medium", "high", "critical")}
    scores = [SEVERITY_SCORE[s] for s in ("low", "medium", "high", "critical")]
    assert scores == sorted(scores)
    offenders = {r.id: r.catalog_entry()["score"] for r in RULES.values()
                 if severity_for_risk(r.catalog_entry()["score"]) != r.severity}
    assert offenders == {}


def test_escalated_severities_of_the_cases_are_valid() -> None:
    from detectors.cases import make_context

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


def test_rules_are_remediated_by_the_handlers_design_md_names() -> None:
    actual = {r.id: r.remediation for r in RULES.values() if r.remediation is not None}
    assert actual == REMEDIATED_BY


def test_irreversible_handlers_are_opt_in_only() -> None:
    offenders = [r.id for r in RULES.values()
                 if r.remediation in HANDLERS and HANDLERS[r.remediation].irreversible and r.remediate_by_default]
    assert offenders == []
    assert [h.id for h in HANDLERS.values() if h.irreversible] == ["enable_purge_protection"]


def test_the_handlers_are_design_mds() -> None:
    assert set(HANDLERS) == HANDLER_IDS
    assert all(handler_id == h.id for handler_id, h in HANDLERS.items())


def test_every_handler_declares_the_permission_it_needs() -> None:
    offenders = {
        h.id: h.permission for h in HANDLERS.values()
        if not (AZURE_ACTION.match(h.permission) or (h.kind == "alert" and re.match(r"^none \(.+\)$", h.permission)))
    }
    assert offenders == {}
    remediation_permissions = {h.id: h.permission for h in HANDLERS.values() if h.kind == "remediation"}
    assert all(p.startswith("Microsoft.KeyVault/") for p in remediation_permissions.values()), remediation_permissions


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
