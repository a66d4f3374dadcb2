"""The rule catalog's contract with the world outside this repository, in one place.

Docs, dashboards, infra and other tools refer to these rule ids and to their default severity,
kind, MITRE techniques and remediation handler: the design's rule and handler tables, written out
as data because the design document is not part of the repository. The code's catalog
(`kvguard.catalog`) is the source of everything else; this table is only what it must keep.
Changing a line here is changing the contract.
"""

from __future__ import annotations

from typing import NamedTuple


class Promised(NamedTuple):
    severity: str
    kind: str
    mitre: tuple[str, ...]
    remediation: str | None


RULES: dict[str, Promised] = {
    "KV-AP-01": Promised("high", "diff", ("T1098", "T1555.006"), "revert_access_policy"),
    "KV-AP-02": Promised("high", "diff", ("T1098",), "revert_access_policy"),
    "KV-AP-03": Promised("medium", "posture", ("T1555.006",), None),
    "KV-AP-04": Promised("high", "posture", ("T1098.001",), None),
    "KV-AP-05": Promised("high", "diff + history", ("T1098", "T1555"), None),
    "KV-NET-01": Promised("high", "diff/posture", ("T1562.007",), "restore_network"),
    "KV-NET-02": Promised("high", "diff/posture", ("T1562.007",), "restore_network"),
    "KV-NET-03": Promised("high", "diff", ("T1562.007",), "restore_network"),
    "KV-NET-04": Promised("medium", "diff", ("T1562.007",), "restore_network"),
    "KV-NET-05": Promised("medium", "diff", ("T1562.007",), "restore_network"),
    "KV-PROT-01": Promised("medium", "posture", ("T1490",), "enable_purge_protection"),
    "KV-PROT-02": Promised("medium", "diff/posture", ("T1490",), None),
    "KV-PROT-03": Promised("critical", "diff", ("T1098", "T1548"), "restore_settings"),
    "KV-PROT-04": Promised("medium", "diff", ("T1555.006",), "restore_settings"),
    "KV-PROT-05": Promised("high", "diff", ("T1537",), None),
    "KV-ID-01": Promised("medium", "event", ("T1078.004",), None),
    "KV-ID-02": Promised("high", "event", ("T1078.004",), None),
    "KV-ID-03": Promised("medium", "event", ("T1078.004",), None),
    "KV-ID-04": Promised("low", "event", ("T1078.004",), None),
    "KV-ID-05": Promised("low", "event + history", ("T1078.004",), None),
    "KV-ID-06": Promised("high", "event + history", ("T1098", "T1526"), None),
    "KV-LIFE-01": Promised("high", "event", ("T1485",), None),
    "KV-LIFE-02": Promised("critical", "event", ("T1485", "T1490"), None),
    "KV-LIFE-03": Promised("medium", "event/diff", ("T1098",), None),
    "KV-SELF-01": Promised("critical", "event", ("T1078.004",), None),
    "KV-SELF-02": Promised("critical", "diff", ("T1562.001",), None),
    "KV-RBAC-01": Promised("high", "diff", ("T1098", "T1555.006"), "remove_role_assignment"),
    "KV-RBAC-02": Promised("high", "diff", ("T1098.003",), "remove_role_assignment"),
    "KV-RBAC-03": Promised("high", "diff + history", ("T1098",), None),
    "KV-RBAC-04": Promised("critical", "diff", ("T1562.001",), None),
    "KV-RBAC-05": Promised("high", "diff", ("T1098",), None),
    "KV-LOG-01": Promised("high", "diff", ("T1562.008",), "restore_diagnostic_setting"),
    "KV-LOG-02": Promised("medium", "sweep", ("T1562.008",), None),
    "KV-LOCK-01": Promised("medium", "diff", ("T1485",), "restore_lock"),
    "KV-PE-01": Promised("high", "diff", ("T1599",), "reject_private_endpoint"),
    "KV-DEF-01": Promised("medium", "sweep", ("T1562.001",), None),
    "KV-DEF-02": Promised("critical", "diff", ("T1562.001",), "restore_defender_plan"),
    "KV-TAG-01": Promised("medium", "diff", ("T1562.001",), None),
    "KV-DENY-01": Promised("critical", "diff", ("T1562.001",), None),
    "KV-PIM-01": Promised("high", "diff", ("T1098.003",), None),
    "KV-KEY-01": Promised("medium", "diff", ("T1552.004",), None),
    "KV-DRIFT-01": Promised("low", "diff", ("T1562",), None),
    "KV-POL-01": Promised("high", "diff", ("T1562.001",), "remove_policy_exemption"),
    "KV-POL-02": Promised("high", "diff", ("T1562.001",), "restore_policy_assignment"),
    "KV-NSP-01": Promised("high", "diff", ("T1562.007",), "remove_perimeter_rule_source"),
    "KV-EG-01": Promised("medium", "diff", ("T1020",), "remove_event_subscription"),
}

# The design's handlers by kind. `write_alerts_file` is kvguard's own (the JSON Lines file of
# `kvguard replay --alerts`); the design does not list it.
HANDLERS: dict[str, str] = {
    "revert_access_policy": "remediation",
    "restore_network": "remediation",
    "restore_settings": "remediation",
    "enable_purge_protection": "remediation",
    "remove_role_assignment": "remediation",
    "restore_diagnostic_setting": "remediation",
    "reject_private_endpoint": "remediation",
    "restore_lock": "remediation",
    "restore_defender_plan": "remediation",
    "remove_policy_exemption": "remediation",
    "restore_policy_assignment": "remediation",
    "remove_perimeter_rule_source": "remediation",
    "remove_event_subscription": "remediation",
    "raise_defender_alert": "alert",
    "publish_detection": "alert",
    "notify_webhook": "alert",
    "write_alerts_file": "alert",
}

# The rule families in the order the catalog lists them.
FAMILY_ORDER = ("KV-AP", "KV-NET", "KV-PROT", "KV-ID", "KV-LIFE", "KV-SELF", "KV-RBAC", "KV-LOG", "KV-LOCK", "KV-PE",
                "KV-DEF", "KV-TAG", "KV-DENY", "KV-PIM", "KV-KEY", "KV-DRIFT", "KV-POL", "KV-NSP", "KV-EG")
