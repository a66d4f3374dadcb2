"""The rule catalog. Each family module registers its rules on import; the explicit imports below
fix the catalog's order. Adding a rule is adding one decorated function in its family module."""

from detectors import access_policy, identity, lifecycle, network, protection  # noqa: F401  (registration)
from kvguard.detection import RULES, Rule

__all__ = ["RULES", "Rule"]
