"""The rule catalog. Each family module registers its rules on import; adding a rule is adding
one decorated function in its family module. The catalog is ordered as DESIGN.md lists it."""

from detectors import access_policy, identity, lifecycle, network, protection  # noqa: F401  (registration)
from detectors import self as self_rules  # noqa: F401  (registration: KV-SELF-*)
from kvguard.detection import RULES, Rule

FAMILY_ORDER = ("KV-AP", "KV-NET", "KV-PROT", "KV-ID", "KV-LIFE", "KV-SELF")


def _catalog_order(rule: Rule) -> tuple[int, str]:
    return FAMILY_ORDER.index(rule.id.rsplit("-", 1)[0]), rule.id


_ordered = sorted(RULES.values(), key=_catalog_order)
RULES.clear()
RULES.update((rule.id, rule) for rule in _ordered)

__all__ = ["RULES", "Rule"]
